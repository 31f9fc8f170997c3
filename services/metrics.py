"""Every Prometheus metric, defined once. Labels are bounded: stage, topic, office, bank, reason, outcome.

Never a person: no NIK, passport, account, VA or participant id in any label.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# --- partner APIs ---------------------------------------------------------------------------------
HTTP_REQUESTS = Counter(
    "sinergi_http_requests_total",
    "Partner API requests by endpoint, partner and outcome",
    ["api", "endpoint", "partner", "outcome"],
)
HTTP_LATENCY = Histogram(
    "sinergi_http_request_duration_seconds",
    "Partner API request latency",
    ["api", "endpoint"],
    buckets=LATENCY_BUCKETS,
)
HTTP_REJECTIONS = Counter(
    "sinergi_http_rejections_total", "Requests refused with a 4xx, by reason code", ["api", "endpoint", "reason"]
)
AUTH_FAILURES = Counter(
    "sinergi_auth_failures_total",
    "Requests refused by authentication (token, partner id, timestamp window, signature), by reason",
    ["api", "endpoint", "partner", "reason"],
)
IDEMPOTENT_REPLAYS = Counter(
    "sinergi_idempotent_replays_total",
    "Requests answered from the X-EXTERNAL-ID store (replayed) or refused as a reused id (conflict)",
    ["api", "endpoint", "outcome"],
)
SECRET_RELOADS = Counter(
    "sinergi_partner_secret_reloads_total", "Re-reads of the partner secrets file, by result", ["result"]
)
ENROLLMENT_SUBMISSIONS = Counter(
    "sinergi_enrollment_submissions_total",
    "Enrollment requests accepted or refused at the edge, by submitter kind (office|bank), submitter "
    "(a configured office or bank id, else unknown) and reason code (none when accepted)",
    ["kind", "submitter", "outcome", "reason"],
)
PRODUCE_LATENCY = Histogram(
    "sinergi_produce_ack_seconds",
    "Time from produce to Kafka acknowledgement at the edge",
    ["topic"],
    buckets=LATENCY_BUCKETS,
)
PRODUCE_FAILURES = Counter(
    "sinergi_produce_failures_total", "Edge produce attempts Kafka did not acknowledge", ["topic", "reason"]
)

# --- stream processors ----------------------------------------------------------------------------
EVENTS_IN = Counter("sinergi_events_in_total", "Events consumed by a stage", ["stage", "topic"])
EVENTS_OUT = Counter("sinergi_events_out_total", "Events produced by a stage", ["stage", "topic"])
DEAD_LETTERS = Counter(
    "sinergi_dead_letters_total", "Events a stage sent to its dead-letter topic", ["stage", "reason"]
)
PROCESSING_LATENCY = Histogram(
    "sinergi_processing_latency_seconds",
    "Event time (accepted at the edge) to output, per stage",
    ["stage"],
    buckets=LATENCY_BUCKETS,
)
# Stages that take batches (services/batches.py): how full the batches are and where a batch's time goes
# (deciding, waiting for Kafka's acknowledgement, sending outputs). A stage whose batches stay small while its
# lag grows is waiting, not computing.
STAGE_BATCH_EVENTS = Histogram(
    "sinergi_stage_batch_events",
    "Events per batch a stage took",
    ["stage"],
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
)
STAGE_BATCH_SECONDS = Histogram(
    "sinergi_stage_batch_seconds",
    "Time a batch spent in each phase",
    ["stage", "phase"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
# Records of fx-rates.v1 this worker's rate feed has taken in: a reader can tell when a rate it published is
# known to the reconciler (the feed is a thread reading the topic, not a stage with offsets).
FX_FEED_RECORDS = Counter("sinergi_fx_feed_records_total", "Reference-rate records the reconciler's rate feed applied")
RECONCILE_OUTCOMES = Counter("sinergi_reconcile_outcomes_total", "Reconciler decisions by outcome", ["outcome"])
# kind: HELD (paid before any enrollment) or FX_HELD (FX out of tolerance under the HOLD policy).
RECONCILE_UNMATCHED_PAYMENTS = Gauge(
    "sinergi_reconcile_unmatched_payments",
    "Payments the reconciler holds uncredited, by kind (HELD, FX_HELD), in the partitions this worker owns",
    ["kind"],
)
RECONCILE_UNMATCHED_VALUE_IDR = Gauge(
    "sinergi_reconcile_unmatched_value_idr",
    "Rupiah of the payments the reconciler holds uncredited, by kind (HELD, FX_HELD)",
    ["kind"],
)
# Event time: the payment's acceptance at the edge to the event that credited it (itself, or the enrollment
# that arrived later), so a held payment shows its whole wait.
TIME_TO_MATCH_BUCKETS = (1.0, 10.0, 60.0, 600.0, 3600.0, 21600.0, 86400.0, 3 * 86400.0, 7 * 86400.0, 30 * 86400.0)
RECONCILE_TIME_TO_MATCH = Histogram(
    "sinergi_reconcile_time_to_match_seconds",
    "Payment received_at to credited (event time)",
    buckets=TIME_TO_MATCH_BUCKETS,
)
RECONCILE_EXCEPTION_AGEING = Gauge(
    "sinergi_reconcile_exception_ageing_payments",
    "Open payment exceptions (held or FX-held, uncredited) by age bucket: LT_1D, 1D_7D, 7D_30D, GE_30D",
    ["age"],
)

# --- office updates (notify_kbri; office = a registered office code: unknown ones are dead-lettered) --------
OFFICE_UPDATES_OUT = Counter(
    "sinergi_office_updates_out_total",
    "OfficeUpdates written to an office topic (acknowledged by Kafka), by office and update type",
    ["office", "type"],
)
OFFICE_UPDATES_SKIPPED = Counter(
    "sinergi_office_updates_skipped_total",
    "Inputs notify_kbri forwarded nothing for: DUPLICATE (version or update already forwarded), "
    "NOT_FOR_AN_OFFICE, BANK_SUBMITTED, TOMBSTONE; by update type",
    ["type", "reason"],
)
CORE_SIM_CASES = Counter(
    "sinergi_core_sim_cases_total", "Cases the demo core system saw: answered, duplicate, undecodable", ["outcome"]
)

# --- bank statements ------------------------------------------------------------------------------
STATEMENT_ENTRIES_INGESTED = Counter(
    "sinergi_statement_entries_ingested_total",
    "Statement entries written to bank.statements.raw (acknowledged by Kafka), by bank and file format",
    ["bank", "format"],
)
STATEMENT_LINE_ERRORS = Counter(
    "sinergi_statement_line_errors_total",
    "Statement lines (or whole files, line 0) refused, by reason",
    ["bank", "reason"],
)
STATEMENT_DUPLICATES = Counter(
    "sinergi_statement_duplicates_skipped_total",
    "Statement entries the normalizer had already emitted (same file imported again, or a redelivery)",
    ["bank"],
)
STATEMENT_DECISIONS = Counter(
    "sinergi_statement_decisions_total",
    "Statement reconciliation decisions by bank and kind (DUPLICATE: an input already in the ledger)",
    ["bank", "kind"],
)
STATEMENT_LEDGER_ITEMS = Gauge(
    "sinergi_statement_ledger_items",
    "Items a statement reconciler worker holds in its banks' ledgers, by collection: what its memory grows with "
    "(settled payments and seen ids are kept 8 days, then pruned)",
    ["bank", "collection"],
)

# --- read models (connectors) -----------------------------------------------------------------------
READ_MODEL_RECORDS = Counter(
    "sinergi_read_model_records_total", "Records a connector read model consumed (tombstones included)", ["model"]
)
READ_MODEL_MEMBERS = Gauge("sinergi_read_model_members", "Members currently held by a connector read model", ["model"])
OFFICE_FEED_LAG = Gauge(
    "sinergi_office_feed_lag_updates",
    "KBRI pull feed: updates held for an office beyond the cursor it last presented (set once it has polled)",
    ["office"],
)
OFFICE_BOOK_SKIPPED = Counter(
    "sinergi_office_book_skipped_total",
    "Office-topic records the KBRI read model did not hold: INVALID_UPDATE, WRONG_OFFICE (never served)",
    ["reason"],
)

# --- KBRI webhooks (office = a registered office code, else "unknown") ---------------------------------------
# Queued to 2xx includes retries: from a tenth of a second up to the default one-day max age.
WEBHOOK_LATENCY_BUCKETS = (*LATENCY_BUCKETS[6:], 30.0, 60.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0)
WEBHOOK_DELIVERIES = Counter(
    "sinergi_webhook_deliveries_total",
    "Office webhook updates finished: delivered, dead_lettered, dead_letter_failed, superseded, abandoned",
    ["office", "outcome"],
)
WEBHOOK_ATTEMPTS = Counter(
    "sinergi_webhook_attempts_total",
    "Office webhook delivery attempts, by result reason (OK, HTTP_5XX, TIMEOUT..)",
    ["office", "reason"],
)
WEBHOOK_LATENCY = Histogram(
    "sinergi_webhook_delivery_seconds",
    "Office webhook update queued to acknowledged (2xx), retries included",
    ["office"],
    buckets=WEBHOOK_LATENCY_BUCKETS,
)
WEBHOOK_BACKLOG = Gauge("sinergi_webhook_backlog", "Office webhook updates queued or in flight", ["office"])
WEBHOOK_REFUSED = Counter(
    "sinergi_webhook_offers_refused_total",
    "Updates the webhook dispatcher did not take (QUEUE_FULL, STALE, NO_ENDPOINT, ENDPOINT_DISABLED, CLOSED)",
    ["office", "reason"],
)
WEBHOOK_DEAD_LETTERS = Counter(
    "sinergi_webhook_dead_letters_total",
    "Office webhook updates given up, by cause (MAX_ATTEMPTS, MAX_AGE, ENDPOINT_GONE, INTERNAL_ERROR)",
    ["office", "reason"],
)
WEBHOOK_ENDPOINT_DISABLES = Counter(
    "sinergi_webhook_endpoint_disables_total", "Office endpoints disabled (410 Gone)", ["office"]
)
WEBHOOK_ENDPOINT_DISABLED = Gauge(
    "sinergi_webhook_endpoint_disabled", "1 while an office endpoint is disabled (410 Gone), else 0", ["office"]
)
# `sinergi webhooks serve`: the office topics as its input.
WEBHOOK_INPUT_SKIPPED = Counter(
    "sinergi_webhook_input_skipped_total",
    "Office topic records committed past without a delivery (MALFORMED, OFFICE_MISMATCH, NO_SUBSCRIPTION, STALE)",
    ["office", "reason"],
)
WEBHOOK_INPUT_UNFINISHED = Gauge(
    "sinergi_webhook_input_unfinished",
    "Office topic records read but not yet finished (delivered, superseded or dead-lettered): uncommitted",
    ["office"],
)
WEBHOOK_INPUT_PAUSED = Gauge(
    "sinergi_webhook_input_paused",
    "1 while an office topic is paused (its dispatcher queue is full or its endpoint is not registered yet)",
    ["office"],
)

# --- worker health (services/worker_health.py; partition is the partition number, bounded by the topic) ---
CONSUMER_LAG = Gauge(
    "sinergi_consumer_lag_messages",
    "Messages waiting on an assigned input partition: highwater minus committed offset",
    ["stage", "topic", "partition"],
)
CONSUMER_COMMIT_AGE = Gauge(
    "sinergi_consumer_commit_age_seconds",
    "Seconds since the committed offset of an assigned input partition last advanced (0 while its lag is 0)",
    ["stage", "topic", "partition"],
)
CONSUMER_STALLED_PARTITIONS = Gauge(
    "sinergi_consumer_stalled_partitions",
    "Assigned input partitions with lag and no commit advance for SINERGI_WORKER_STALL_AFTER_S",
    ["stage"],
)
WORKER_READY = Gauge("sinergi_worker_ready", "1 while the worker's /readyz answers 200, else 0", ["stage"])
AGENT_CRASHES = Counter(
    "sinergi_agent_crashes_total", "Stream agents (or the core publisher loop) that ended with an exception", ["stage"]
)

# --- business (the bank API's inquiry read model of members.v1; status is the MemberStatus enum) ----------------
MEMBERS_BY_STATUS = Gauge("sinergi_members_by_status", "Members in the bank API's read model, by status", ["status"])
