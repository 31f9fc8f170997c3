"""PartnerRegistry (connectors.bank.partners): secrets per bank, rotation through the secrets file."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from connectors.bank.partners import PartnerRegistry
from connectors.bank.snap_signing import sign_hmac_sha512, verify_hmac_sha512
from services.config import DEV_BANK_SECRETS, Settings

STS = "POST:/v1.0/transfer-va/payment:token:digest:2025-09-01T10:15:01+07:00"


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def write(path: Path, doc: object | str) -> None:
    """Rewrite the file and make sure its mtime changes even within the filesystem's granularity."""
    previous = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc), encoding="utf-8")
    stamp = max(time.time_ns(), previous + 1_000_000)
    os.utime(path, ns=(stamp, stamp))


def secrets_doc(*mandiri: str) -> dict[str, object]:
    return {"client_secrets": {"MANDIRI": list(mandiri), "BNI": ["bni-secret"]}}


def verifies(registry: PartnerRegistry, secret: str, bank: str = "MANDIRI") -> bool:
    partner = registry.get(bank)
    assert partner is not None
    return verify_hmac_sha512(partner.client_secrets, STS, sign_hmac_sha512(secret.encode(), STS))


def reloads(result: str) -> float:
    return REGISTRY.get_sample_value("sinergi_partner_secret_reloads_total", {"result": result}) or 0.0


def test_settings_secrets_joined_with_profiles() -> None:
    registry = PartnerRegistry(Settings())
    mandiri = registry.get("MANDIRI")
    assert mandiri is not None
    assert mandiri.profile.partner_service_id == "   88001"
    assert mandiri.client_secrets == (DEV_BANK_SECRETS["MANDIRI"].encode(),)
    assert registry.get("NOBANK") is None
    assert "MANDIRI" in registry and "NOBANK" not in registry
    assert DEV_BANK_SECRETS["MANDIRI"] not in repr(mandiri)


def test_each_bank_verifies_only_with_its_own_secret() -> None:
    registry = PartnerRegistry(Settings())
    assert verifies(registry, DEV_BANK_SECRETS["MANDIRI"])
    assert not verifies(registry, DEV_BANK_SECRETS["BNI"])
    assert verifies(registry, DEV_BANK_SECRETS["BNI"], bank="BNI")


def test_a_bank_without_secrets_verifies_nothing() -> None:
    registry = PartnerRegistry(Settings(bank_client_secrets={}))
    assert not verifies(registry, DEV_BANK_SECRETS["MANDIRI"])


def test_empty_secret_refused_at_start() -> None:
    with pytest.raises(ValueError, match="empty client secret"):
        PartnerRegistry(Settings(bank_client_secrets={"MANDIRI": [""]}))


def test_rotation_old_and_new_then_only_new(tmp_path: Path) -> None:
    path = tmp_path / "secrets.json"
    write(path, secrets_doc("old", "new"))
    registry = PartnerRegistry(Settings(bank_secrets_file=path), reload_every_s=0)
    assert verifies(registry, "old") and verifies(registry, "new")
    before = reloads("reloaded")
    write(path, secrets_doc("new"))
    assert not verifies(registry, "old")
    assert verifies(registry, "new")
    assert verifies(registry, "bni-secret", bank="BNI")
    assert reloads("reloaded") == before + 1


@pytest.mark.parametrize(
    "broken",
    [
        "{ not json",
        "[]",
        json.dumps({"client_secrets": {"MANDIRI": [""]}}),
        json.dumps({"public_keys": {"BNI": ["x"]}}),
    ],
    ids=["bad JSON", "not an object", "empty secret", "broken PEM"],
)
def test_broken_file_keeps_previous_secrets(tmp_path: Path, broken: str) -> None:
    path = tmp_path / "secrets.json"
    write(path, secrets_doc("current"))
    registry = PartnerRegistry(Settings(bank_secrets_file=path), reload_every_s=0)
    before = reloads("failed")
    write(path, broken)
    assert verifies(registry, "current")
    assert reloads("failed") >= before + 1
    write(path, secrets_doc("fixed"))  # the next good edit is picked up
    assert verifies(registry, "fixed") and not verifies(registry, "current")


def test_broken_file_at_start_fails_loudly(tmp_path: Path) -> None:
    path = tmp_path / "secrets.json"
    write(path, "{ not json")
    with pytest.raises(ValueError):
        PartnerRegistry(Settings(bank_secrets_file=path))


def test_reload_is_rate_limited_by_the_clock(tmp_path: Path) -> None:
    path = tmp_path / "secrets.json"
    write(path, secrets_doc("old"))
    clock = FakeClock()
    registry = PartnerRegistry(Settings(bank_secrets_file=path), reload_every_s=1.0, clock=clock)
    write(path, secrets_doc("new"))
    clock.now += 0.5
    assert verifies(registry, "old")  # not re-read yet: at most one stat per reload_every_s
    clock.now += 0.5
    assert verifies(registry, "new") and not verifies(registry, "old")


def test_file_replaces_settings_secrets(tmp_path: Path) -> None:
    path = tmp_path / "secrets.json"
    write(path, secrets_doc("from-file"))
    registry = PartnerRegistry(Settings(bank_secrets_file=path))
    assert verifies(registry, "from-file")
    assert not verifies(registry, DEV_BANK_SECRETS["MANDIRI"])
    assert not verifies(registry, DEV_BANK_SECRETS["MAYBANK_MY"], bank="MAYBANK_MY")
