import pytest
from pydantic import SecretStr

from services.config import Settings


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
