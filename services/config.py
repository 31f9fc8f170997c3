"""The one Settings class. Every address, secret and tunable comes from here (env prefix SINERGI_)."""

from __future__ import annotations

from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent

# Development-only secrets: good enough for `make demo` and tests, refused when environment=production.
DEV_PARTICIPANT_KEY_SECRET = "dev-only-participant-key-secret-change-me"  # noqa: S105
DEV_PII_KEY = "ZGV2LW9ubHktcGlpLWtleS0zMi1ieXRlcy1sb25nISE="  # urlsafe b64 of 32 bytes
DEV_BANK_SECRETS = {  # HMAC client secrets of the demo banks (the simulator signs with them)
    "MANDIRI": "dev-client-secret-mandiri",
    "BNI": "dev-client-secret-bni",
    "MAYBANK_MY": "dev-client-secret-maybank",
}


class OfficeWebhook(BaseModel):
    """One office's webhook subscription: where to deliver and the secrets that sign (newest first)."""

    url: str = Field(min_length=1)
    secrets: list[SecretStr] = Field(
        min_length=1, max_length=2, description="whsec_ secrets, newest first; two during a rotation, both sign"
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SINERGI_", env_nested_delimiter="__", extra="ignore")

    environment: str = Field("development", description="development | test | production")

    # --- Kafka -------------------------------------------------------------------------------------
    kafka_bootstrap: str | None = Field(
        None, description="host:port list of a real Kafka cluster. Unset: `sinergi up` starts the embedded broker."
    )
    kafka_replication_factor: int = 1
    kafka_partitions: int = Field(4, description="partitions for topics whose catalogue entry does not fix them")
    # Tansu (and a real cluster under load) answers a group join after part of the rebalance timeout:
    # a few seconds keeps start-up fast; production can raise these.
    consumer_session_timeout_s: float = 6.0
    consumer_rebalance_timeout_s: float = 6.0
    consumer_heartbeat_interval_s: float = 1.0
    consumer_fetch_max_wait_ms: int = Field(
        100,
        description="how long the broker may hold a fetch that has no data: each hop's latency at a trickle, "
        "and the cost of idling. At 20 ms the idle embedded hub used 1.2 cores (0.6 of them the broker answering "
        "empty fetches) and a 20,000-event backlog ran at 146 events/s; at 100 ms, 245 events/s (BENCHMARKS.md)",
    )
    consumer_max_poll_records: int = Field(
        500,
        gt=0,
        description="records per poll for stream processors. Faust's default is unbounded: a restarted worker "
        "got its whole backlog in one poll, took longer than max.poll.interval to process it, and aiokafka "
        "left the group, which it then could not rejoin (tests/integration/test_reconciler_kills.py)",
    )
    producer_linger_ms: int = 5
    producer_max_batch_bytes: int = Field(
        262_144,
        gt=0,
        description="stream processors: the largest record batch per partition. aiokafka keeps one request in "
        "flight per broker, and with its 16 KiB default a reconciler batch's ~160 member records waited for "
        "several round trips (the emit phase took 1.6 ms per event under the 150 events/s soak)",
    )
    stage_batch_max: int = Field(
        500,
        gt=0,
        description="events a stream processor takes at once: the batch's outputs leave as record batches and are "
        "acknowledged together (the reconciler's state changes before anything derived from them is sent)",
    )
    stage_batch_within_ms: int = Field(
        20, ge=1, description="how long a stage waits to fill a batch: the latency a trickle of events pays"
    )
    producer_message_timeout_ms: int = Field(
        5000, description="edge producers: how long a request waits for Kafka before it answers 503"
    )
    commit_interval_s: float = 1.0
    worker_rebalance_stall_s: float = Field(
        60.0, description="a worker rebalancing longer than this exits, to be restarted by its process manager"
    )
    worker_stall_after_s: float = Field(
        60.0,
        gt=0,
        description="an input partition with messages waiting and no commit advance for this long makes the "
        "worker not ready (/readyz 503, sinergi_consumer_stalled_partitions)",
    )

    # --- Schema registry -----------------------------------------------------------------------------
    schema_registry_url: str | None = Field(
        None, description="Confluent-compatible registry. Unset: the hub serves its own schemas (embedded)."
    )
    schemas_dir: Path = REPO_ROOT / "schemas"

    # --- HTTP ----------------------------------------------------------------------------------------
    http_host: str = "127.0.0.1"
    bank_api_port: int = 8081
    kbri_api_port: int = 8082
    registry_port: int = 8083
    status_port: int = Field(8084, description="`sinergi status`: the status page (GET /status, /status.json)")
    metrics_port_base: int = Field(9300, description="workers expose /metrics on base + n")
    max_body_bytes: int = 64 * 1024
    statement_max_bytes: int = Field(
        8 * 1024 * 1024, ge=1, description="largest statement file accepted by POST /v1.0/bank-statements (413 beyond)"
    )
    kbri_batch_max_rows: int = Field(
        1000, ge=1, description="data rows per POST /v1/enrollments/batch (413 BATCH_TOO_LARGE beyond)"
    )
    kbri_batch_max_bytes: int = Field(
        1024 * 1024, ge=1, description="largest CSV accepted by POST /v1/enrollments/batch (413 BODY_TOO_LARGE)"
    )
    kbri_batch_concurrency: int = Field(
        16, ge=1, description="rows of one batch waiting for a Kafka acknowledgement at the same time"
    )

    # --- Secrets -------------------------------------------------------------------------------------
    participant_key_secret: SecretStr = SecretStr(DEV_PARTICIPANT_KEY_SECRET)
    pii_encryption_key: SecretStr = Field(
        SecretStr(DEV_PII_KEY), description="Fernet key; the core system holds the same key to read NIK/passport"
    )
    # Simple shared tokens per partner until the SNAP and KBRI issues harden authentication.
    bank_tokens: dict[str, SecretStr] = Field(
        default_factory=lambda: {
            "MANDIRI": SecretStr("dev-token-mandiri"),
            "BNI": SecretStr("dev-token-bni"),
            "MAYBANK_MY": SecretStr("dev-token-maybank"),
        }
    )
    # SNAP B2B access token (domain.md 4.3.1): bank id -> PEM RSA public keys (several = key rotation).
    # Loaded once when the bank app is created, so a broken PEM fails start-up, not a request.
    bank_public_keys: dict[str, list[str]] = Field(
        default_factory=dict, description="bank id -> PEM RSA public keys verifying X-SIGNATURE on the B2B token call"
    )
    # SNAP transactional calls: bank id -> HMAC-SHA512 client secrets (several = rotation overlap).
    bank_client_secrets: dict[str, list[SecretStr]] = Field(
        default_factory=lambda: {
            "MANDIRI": [SecretStr(DEV_BANK_SECRETS["MANDIRI"])],
            "BNI": [SecretStr(DEV_BANK_SECRETS["BNI"])],
            "MAYBANK_MY": [SecretStr(DEV_BANK_SECRETS["MAYBANK_MY"])],
        },
        description="bank id -> HMAC-SHA512 client secrets verifying X-SIGNATURE on transactional calls",
    )
    bank_secrets_file: Path | None = Field(
        None,
        description="JSON {client_secrets: {bank: [..]}, public_keys: {bank: [PEM..]}} that replaces the two "
        "settings above and is re-read when it changes (a mounted Kubernetes Secret): rotation without restart",
    )
    snap_token_ttl_s: int = Field(900, ge=1, description="lifetime of an issued B2B access token (SNAP expiresIn)")
    snap_timestamp_skew_s: int = Field(
        300,
        ge=0,
        description="allowed |X-TIMESTAMP - now| in seconds on every SNAP call. UNCONFIRMED value: no source "
        "gives the SNAP clock skew (domain.md 4.2); confirm with each bank",
    )
    bank_sim_key_dir: Path | None = Field(
        None,
        description="the bank simulator's RSA private keys (<bank>.pem) for the B2B token; unset: "
        "<data_dir>/run/bank-keys, written by `sinergi up` when no bank public key is configured",
    )
    snap_idempotency_max_entries: int = Field(
        200_000, ge=1, description="X-EXTERNAL-ID replay store per API process (oldest evicted beyond this)"
    )
    office_tokens: dict[str, SecretStr] = Field(
        default_factory=lambda: {
            "KBRI_KUALA_LUMPUR": SecretStr("dev-token-kbri-kl"),
            "KJRI_JOHOR_BAHRU": SecretStr("dev-token-kjri-jb"),
            "KJRI_HONG_KONG": SecretStr("dev-token-kjri-hk"),
            "KDEI_TAIPEI": SecretStr("dev-token-kdei-tpe"),
        },
        description="development/demo only: office -> plaintext API key (the simulator's side); the KBRI API "
        "uses only their hashes, and production refuses them",
    )
    office_key_hashes: dict[str, list[str]] | None = Field(
        None, description='office -> ["sha256:<hex>", ...] API key hashes (several during a rotation)'
    )
    office_credentials_file: Path | None = Field(
        None, description="JSON office -> key hashes, re-read when it changes (rotation without restart)"
    )

    # --- Domain configuration (UNCONFIRMED facts live here, not in code) -----------------------------
    tariff_file: Path = REPO_ROOT / "schemas" / "reference" / "tariffs.json"
    banks_file: Path = REPO_ROOT / "schemas" / "reference" / "banks.json"
    offices_file: Path = REPO_ROOT / "schemas" / "reference" / "offices.json"
    customer_no_digits: int = Field(18, ge=10, le=20, description="VA customer number length (<= 20 per SNAP)")
    bill_validity_days: int = 30
    reconcile_held_payment_max_age_days: int = Field(
        30, ge=1, description="a payment held for want of an enrollment ages out (HELD_PAYMENT_AGED_OUT) after this"
    )
    reconcile_fx_tolerance_pct: Decimal = Field(
        Decimal("2"), ge=0, description="largest deviation of a bank's FX rate from the reference rate, in percent"
    )
    reconcile_fx_out_of_tolerance: Literal["CREDIT_AND_FLAG", "HOLD"] = Field(
        "CREDIT_AND_FLAG",
        description="a payment beyond the FX tolerance: credited at the bank's rate and flagged, or held for review",
    )
    va_name_display: Literal["FULL", "INITIALS"] = Field(
        "FULL",
        description="virtualAccountName in a VA inquiry answer: FULL (uppercased full name) or INITIALS "
        '(first word + initials, "SITI A."), for banks that must not show whoever types a VA the full name',
    )
    read_model_retry_max_s: float = Field(
        30.0, gt=0, description="longest pause before a read-model reader (bank inquiry book) connects again"
    )
    office_feed_max_updates: int = Field(
        100_000,
        ge=1,
        description="updates the KBRI API holds per office for GET /v1/updates (oldest dropped first); an older "
        "cursor gets 410 CURSOR_EXPIRED and the office resyncs through member inquiry",
    )

    statement_reconciliation_enabled: bool = Field(
        True,
        description="run the reconcile_statements worker (statement entries matched against payment notifications) "
        "and serve the daily report from its decisions; false leaves statements unreconciled (the report answers 503)",
    )

    # --- Processing ------------------------------------------------------------------------------------
    data_dir: Path = REPO_ROOT / "var"
    log_json: bool | None = Field(None, description="JSON logs; default: JSON unless stderr is a terminal")
    log_level: str = "INFO"

    # --- KBRI webhooks (connectors/kbri/webhooks.py) ---------------------------------------------------
    webhooks_allow_private: bool = Field(
        False,
        description="test/demo mode: office endpoints may use http:// and loopback/private addresses; "
        "refused in production",
    )
    webhooks_backoff_base_s: float = Field(2.0, gt=0, description="first retry waits up to this (full jitter)")
    webhooks_backoff_cap_s: float = Field(
        600.0, gt=0, description="longest wait between two attempts, Retry-After included"
    )
    webhooks_max_attempts: int = Field(15, ge=1, description="attempts per update before it is dead-lettered")
    webhooks_max_age_s: float = Field(
        86_400.0, gt=0, description="an update not delivered this long after it was queued is dead-lettered"
    )
    webhooks_attempt_timeout_s: float = Field(
        10.0, gt=0, description="total time of one attempt: resolve, connect, send, response head and body"
    )
    webhooks_response_max_bytes: int = Field(
        4096, ge=0, description="response body bytes read (and discarded) per attempt"
    )
    webhooks_queue_size: int = Field(
        10_000, ge=1, description="updates queued per office; beyond it an offer is answered QUEUE_FULL"
    )
    webhooks_office_concurrency: int = Field(
        4, ge=1, description="deliveries in flight per office (different members; one member is sequential)"
    )
    webhooks_supersede: bool = Field(
        False,
        description="a newer version of a member skips its older undelivered ones; default: deliver every "
        "version, in order",
    )
    office_webhooks: dict[str, OfficeWebhook] = Field(
        default_factory=dict,
        description='office -> {"url": ..., "secrets": ["whsec_new", "whsec_old"]}; an office without an entry '
        "gets no webhooks (it reads the pull feed or its Kafka topic)",
    )
    webhooks_group_id: str = Field("sinergi-webhooks", description="consumer group of `sinergi webhooks serve`")
    office_sim_port: int | None = Field(
        None, description="the demo office receiver (`sinergi office-sim`); unset: `sinergi up` picks a free port"
    )

    def is_embedded(self) -> bool:
        return self.kafka_bootstrap is None

    def check_production_safety(self) -> None:
        if self.environment != "production":
            return
        if self.participant_key_secret.get_secret_value() == DEV_PARTICIPANT_KEY_SECRET:
            raise ValueError("SINERGI_PARTICIPANT_KEY_SECRET must be set in production")
        if self.pii_encryption_key.get_secret_value() == DEV_PII_KEY:
            raise ValueError("SINERGI_PII_ENCRYPTION_KEY must be set in production")
        if self.kafka_bootstrap is None:
            raise ValueError("SINERGI_KAFKA_BOOTSTRAP must point at the cluster in production")
        dev_secrets = set(DEV_BANK_SECRETS.values())
        # With a secrets file the registry reads the file only (and refuses nothing in it here: it is the
        # operator's Secret); the inline setting and its development defaults are then not used at all.
        inline = {} if self.bank_secrets_file is not None else self.bank_client_secrets
        for secrets in inline.values():
            if any(s.get_secret_value() in dev_secrets for s in secrets):
                raise ValueError("SINERGI_BANK_CLIENT_SECRETS still holds a development secret")
        if any(t.get_secret_value().startswith("dev-token-") for t in self.bank_tokens.values()):
            raise ValueError("SINERGI_BANK_TOKENS holds development tokens; banks use the B2B token endpoint")
        if self.office_key_hashes is None and self.office_credentials_file is None:
            raise ValueError("set SINERGI_OFFICE_KEY_HASHES or SINERGI_OFFICE_CREDENTIALS_FILE in production")
        if self.webhooks_allow_private:
            raise ValueError("SINERGI_WEBHOOKS_ALLOW_PRIVATE is for tests and the demo only")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
