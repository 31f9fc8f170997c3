"""Office API keys: hashed at rest, several per office (rotation), hot-reloaded file, constant-time lookup."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from pydantic import SecretStr

import connectors.kbri.auth as auth_module
from connectors.kbri.auth import OfficeAuth, hash_key, new_key
from services.config import Settings


def test_hash_format_and_fresh_keys() -> None:
    key, hashed = new_key("KBRI_KUALA_LUMPUR")
    assert key.startswith("sk_kbri_kuala_lumpur_") and len(key) > 40
    assert hashed == hash_key(key) and hashed.startswith("sha256:") and len(hashed) == 7 + 64
    assert new_key("KBRI_KUALA_LUMPUR")[0] != key


def test_configured_hashes_identify_offices_and_dev_tokens_are_not_used() -> None:
    kl, kl_hash = new_key("KBRI_KUALA_LUMPUR")
    old, old_hash = new_key("KDEI_TAIPEI")
    new, new_hash = new_key("KDEI_TAIPEI")
    auth = OfficeAuth(Settings(office_key_hashes={"KBRI_KUALA_LUMPUR": [kl_hash], "KDEI_TAIPEI": [old_hash, new_hash]}))
    assert auth.identify(kl) == "KBRI_KUALA_LUMPUR"
    assert auth.identify(old) == auth.identify(new) == "KDEI_TAIPEI"  # both keys during the overlap
    assert auth.identify("dev-token-kbri-kl") is None  # configured hashes replace the demo tokens
    assert auth.identify(kl_hash) is None  # the hash itself is not a key
    assert auth.identify("") is None and auth.identify(None) is None and auth.identify("x" * 10_000) is None


def test_development_falls_back_to_hashes_of_the_demo_tokens() -> None:
    auth = OfficeAuth(Settings(office_tokens={"KJRI_HONG_KONG": SecretStr("demo-key")}))
    assert auth.identify("demo-key") == "KJRI_HONG_KONG"
    assert auth.identify("demo-key ") is None


@pytest.mark.parametrize("bad", ["ab" * 32, "sha256:abc", "sha256:" + "zz" * 32, "md5:" + "ab" * 16])
def test_malformed_hashes_fail_at_start(bad: str) -> None:
    with pytest.raises(ValueError, match="sha256"):
        OfficeAuth(Settings(office_key_hashes={"KDEI_TAIPEI": [bad]}))


def test_every_hash_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    keys = [new_key("KBRI_KUALA_LUMPUR"), new_key("KDEI_TAIPEI"), new_key("KDEI_TAIPEI")]
    auth = OfficeAuth(
        Settings(office_key_hashes={"KBRI_KUALA_LUMPUR": [keys[0][1]], "KDEI_TAIPEI": [keys[1][1], keys[2][1]]})
    )
    calls: list[int] = []
    real = auth_module.hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append(1)
        return real(a, b)

    monkeypatch.setattr(auth_module.hmac, "compare_digest", counting)
    assert auth.identify(keys[0][0]) == "KBRI_KUALA_LUMPUR"  # a match on the first hash still tries all
    assert len(calls) == 3


def _write(path: Path, doc: object, mtime_ns: int) -> None:
    path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    os.utime(path, ns=(mtime_ns, mtime_ns))


def test_credentials_file_rotation_without_restart(tmp_path: Path) -> None:
    old, old_hash = new_key("KBRI_KUALA_LUMPUR")
    new, new_hash = new_key("KBRI_KUALA_LUMPUR")
    path = tmp_path / "offices.json"
    _write(path, {"KBRI_KUALA_LUMPUR": [old_hash]}, 1_000_000_000)
    now = [0.0]
    auth = OfficeAuth(Settings(office_credentials_file=path), reload_every_s=1.0, clock=lambda: now[0])
    assert auth.identify(old) == "KBRI_KUALA_LUMPUR" and auth.identify(new) is None

    _write(path, {"KBRI_KUALA_LUMPUR": [old_hash, new_hash]}, 2_000_000_000)
    assert auth.identify(new) is None  # not re-read before reload_every_s
    now[0] = 1.5
    assert auth.identify(new) == "KBRI_KUALA_LUMPUR" and auth.identify(old) == "KBRI_KUALA_LUMPUR"

    _write(path, "{not json", 3_000_000_000)
    now[0] = 3.0
    assert auth.identify(new) == "KBRI_KUALA_LUMPUR"  # a broken edit keeps the keys in force

    _write(path, {"KBRI_KUALA_LUMPUR": [new_hash]}, 4_000_000_000)
    now[0] = 4.5
    assert auth.identify(new) == "KBRI_KUALA_LUMPUR" and auth.identify(old) is None


def test_broken_credentials_file_fails_at_start(tmp_path: Path) -> None:
    path = tmp_path / "offices.json"
    path.write_text('{"KBRI_KUALA_LUMPUR": "sha256:nope"}')
    with pytest.raises(ValueError):
        OfficeAuth(Settings(office_credentials_file=path))
