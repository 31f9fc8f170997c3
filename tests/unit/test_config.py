from pathlib import Path

import pytest
from pydantic import SecretStr

from services.config import DEV_BANK_SECRETS, Settings


def test_secrets_never_show_in_the_settings_repr() -> None:
    s = Settings(participant_key_secret=SecretStr("super-secret-value"))
    assert "super-secret-value" not in repr(s)
    assert "dev-token-mandiri" not in repr(s)


def test_production_refuses_development_secrets_and_the_embedded_broker() -> None:
    with pytest.raises(ValueError, match="PARTICIPANT_KEY_SECRET"):
        Settings(environment="production").check_production_safety()
    with pytest.raises(ValueError, match="KAFKA_BOOTSTRAP"):
        Settings(
            environment="production",
            kafka_bootstrap=None,
            participant_key_secret=SecretStr("x" * 40),
            pii_encryption_key=SecretStr("c2VjcmV0LWtleS1mb3ItcHJvZHVjdGlvbi0zMmJ5dGU="),
        ).check_production_safety()


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SINERGI_KAFKA_BOOTSTRAP", "kafka-1:9092,kafka-2:9092")
    s = Settings()
    assert s.kafka_bootstrap == "kafka-1:9092,kafka-2:9092"
    assert not s.is_embedded()


# --- production refuses development bank credentials ----------------------------------------------------
PROD_PII_KEY = "c2VjcmV0LWtleS1mb3ItcHJvZHVjdGlvbi0zMmJ5dGU="


def production(**overrides: object) -> Settings:
    """Production settings that pass every check, with `overrides` applied."""
    values: dict[str, object] = {
        "environment": "production",
        "kafka_bootstrap": "kafka-1:9092",
        "participant_key_secret": SecretStr("p" * 40),
        "pii_encryption_key": SecretStr(PROD_PII_KEY),
        "bank_client_secrets": {"MANDIRI": [SecretStr("prod-mandiri-secret")], "BNI": [SecretStr("prod-bni")]},
        "bank_tokens": {},
        "office_tokens": {},
        "office_key_hashes": {"KBRI_KUALA_LUMPUR": ["sha256:" + "ab" * 32]},
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def test_production_with_real_bank_credentials_passes() -> None:
    production().check_production_safety()
    # A static token that is not a development one is tolerated (migration period before B2B tokens).
    production(bank_tokens={"MANDIRI": SecretStr("a-real-static-token")}).check_production_safety()


@pytest.mark.parametrize("bank", sorted(DEV_BANK_SECRETS))
def test_production_refuses_each_development_bank_secret(bank: str) -> None:
    dev = DEV_BANK_SECRETS[bank]
    settings = production(bank_client_secrets={bank: [SecretStr(dev)]})
    with pytest.raises(ValueError, match="SINERGI_BANK_CLIENT_SECRETS") as refused:
        settings.check_production_safety()
    assert dev not in str(refused.value)


def test_production_refuses_a_development_secret_kept_during_rotation() -> None:
    # Under another bank's id and as the second (overlap) secret: still a published secret.
    settings = production(bank_client_secrets={"BNI": [SecretStr("prod-bni"), SecretStr(DEV_BANK_SECRETS["MANDIRI"])]})
    with pytest.raises(ValueError, match="SINERGI_BANK_CLIENT_SECRETS"):
        settings.check_production_safety()


def test_production_refuses_the_default_bank_secrets() -> None:
    with pytest.raises(ValueError, match="SINERGI_BANK_CLIENT_SECRETS"):
        production(bank_client_secrets=Settings().bank_client_secrets).check_production_safety()


@pytest.mark.parametrize(
    "tokens",
    [
        Settings().bank_tokens,
        {"MANDIRI": SecretStr("a-real-static-token"), "BNI": SecretStr("dev-token-bni")},
        {"MAYBANK_MY": SecretStr("dev-token-anything")},
    ],
    ids=["defaults", "one dev token among real ones", "any dev-token- prefix"],
)
def test_production_refuses_development_bank_tokens(tokens: dict[str, SecretStr]) -> None:
    with pytest.raises(ValueError, match="SINERGI_BANK_TOKENS") as refused:
        production(bank_tokens=tokens).check_production_safety()
    assert "dev-token" not in str(refused.value)


def test_production_refuses_development_bank_secrets_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SINERGI_ENVIRONMENT", "production")
    monkeypatch.setenv("SINERGI_KAFKA_BOOTSTRAP", "kafka-1:9092")
    monkeypatch.setenv("SINERGI_PARTICIPANT_KEY_SECRET", "p" * 40)
    monkeypatch.setenv("SINERGI_PII_ENCRYPTION_KEY", PROD_PII_KEY)
    monkeypatch.setenv("SINERGI_BANK_TOKENS", "{}")
    monkeypatch.setenv("SINERGI_OFFICE_KEY_HASHES", '{"KDEI_TAIPEI": ["sha256:' + "cd" * 32 + '"]}')
    monkeypatch.setenv("SINERGI_BANK_CLIENT_SECRETS", '{"MANDIRI": ["dev-client-secret-mandiri"]}')
    with pytest.raises(ValueError, match="SINERGI_BANK_CLIENT_SECRETS"):
        Settings().check_production_safety()
    monkeypatch.setenv("SINERGI_BANK_CLIENT_SECRETS", '{"MANDIRI": ["rotated-in-prod"]}')
    Settings().check_production_safety()


def test_development_accepts_development_bank_credentials() -> None:
    Settings(environment="development").check_production_safety()


def test_production_requires_office_key_hashes_and_refuses_private_webhooks() -> None:
    with pytest.raises(ValueError, match="OFFICE_KEY_HASHES"):
        production(office_key_hashes=None).check_production_safety()
    with pytest.raises(ValueError, match="WEBHOOKS_ALLOW_PRIVATE"):
        production(webhooks_allow_private=True).check_production_safety()


def test_production_with_a_secrets_file_ignores_the_inline_development_defaults(tmp_path: Path) -> None:
    secrets = tmp_path / "bank-secrets.json"
    secrets.write_text('{"client_secrets": {"MANDIRI": ["prod-rotated"]}}')
    # The inline setting keeps its development defaults; the registry does not read it when a file is set.
    production(bank_client_secrets=Settings().bank_client_secrets, bank_secrets_file=secrets).check_production_safety()
    with pytest.raises(ValueError, match="SINERGI_BANK_CLIENT_SECRETS"):
        production(bank_client_secrets=Settings().bank_client_secrets).check_production_safety()
