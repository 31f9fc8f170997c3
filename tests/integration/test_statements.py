"""Statements through the real broker: bank API upload and CLI import -> normalize_statements -> statement-entries.v1.

The hub runs every worker of services/supervisor.py WORKERS, normalize_statements among them. Files are made
unique per run (fresh references), so ids never collide with another test's.

"Exactly once" needs no sleep: the input and output topics are both keyed by bank id, so one bank's records
stay in order on one partition end to end. A sentinel file uploaded after the duplicates is a barrier: once its
entries are on statement-entries.v1, anything the duplicates could have produced would be there already.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka import Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from hubclient import poll_topic

from connectors.bank.snap_signing import sign_transactional_hmac
from services.catalogue import STATEMENT_ENTRIES, STATEMENTS_RAW, dlq
from services.config import DEV_BANK_SECRETS, REPO_ROOT
from services.supervisor import Supervisor, write_bootstrap_file

pytestmark = pytest.mark.integration

PATH = "/v1.0/bank-statements"
DATA = Path(__file__).parent.parent / "unit" / "data" / "statements"
TOKENS = {"MANDIRI": "dev-token-mandiri", "BNI": "dev-token-bni"}
WIB = timezone(timedelta(hours=7))


def _tag() -> str:
    return uuid.uuid4().hex[:10].upper()


def unique_mt940() -> bytes:
    """The BNI sample with fresh bank references and statement reference (still 5 entries, one RC reversal)."""
    tag = _tag()
    return (
        (DATA / "bni_20250715.sta")
        .read_bytes()
        .replace(b"BNI25071500", f"S{tag}".encode())
        .replace(b":20:STMT250715001", f":20:T{tag}".encode())
    )


def unique_csv(rows: int) -> bytes:
    tag = _tag()
    lines = ["account_no,booking_date,direction,amount,currency,bank_ref,status"]
    lines += [f"800123456789,2025-07-16,CR,{1000 + i}.00,IDR,C{tag}{i:03d},SUCCESS" for i in range(rows)]
    return ("\n".join(lines) + "\n").encode()


def unique_snap() -> bytes:
    tag = _tag()
    return (DATA / "bni_snap_statement.json").read_bytes().replace(b"TRX25071500", f"X{tag}".encode())


def upload(hub: Supervisor, bank: str, raw: bytes, external_id: str, **query: str) -> httpx.Response:
    s = hub.settings
    token = TOKENS[bank]
    ts = datetime.now(WIB).isoformat(timespec="seconds")
    signature = sign_transactional_hmac(DEV_BANK_SECRETS[bank].encode(), "POST", PATH, token, raw, ts)
    return httpx.post(
        f"http://{s.http_host}:{s.bank_api_port}{PATH}",
        params=query,
        content=raw,
        headers={
            "Authorization": f"Bearer {token}",
            "X-PARTNER-ID": bank,
            "X-EXTERNAL-ID": external_id,
            "X-TIMESTAMP": ts,
            "X-SIGNATURE": signature,
            "Content-Type": "text/plain",
        },
        timeout=30,
    )


def produced_ids(resp: httpx.Response, hub: Supervisor, bank: str, raw: bytes, **kw: str) -> list[str]:
    """The entry ids of a file, as the hub computes them (parsed here with the hub's own parser)."""
    from services.domain.statements import parse_statement

    assert resp.status_code == 200, resp.text
    result = parse_statement(raw, bank_id=bank, imported_at=datetime.now(WIB), **kw)
    assert resp.json()["statement"]["entries"] == len(result.entries)
    return [e.entry_id for e in result.entries]


def deserializer(hub: Supervisor) -> AvroDeserializer:
    return AvroDeserializer(SchemaRegistryClient({"url": hub.env["SINERGI_SCHEMA_REGISTRY_URL"]}))


def test_uploading_a_file_twice_emits_each_entry_once_and_a_reversal_keeps_its_status(hub: Supervisor) -> None:
    mt940 = unique_mt940()
    first = upload(hub, "MANDIRI", mt940, "1001")
    ids = produced_ids(first, hub, "MANDIRI", mt940)
    second = upload(hub, "MANDIRI", mt940, "1002")
    assert produced_ids(second, hub, "MANDIRI", mt940) == ids
    assert first.json()["statement"]["file_id"] == second.json()["statement"]["file_id"]
    sentinel = unique_csv(3)
    sentinel_ids = set(produced_ids(upload(hub, "MANDIRI", sentinel, "1003"), hub, "MANDIRI", sentinel))

    def sentinel_seen(msgs: list[Any]) -> bool:
        return sentinel_ids <= {m.value()["entry_id"] for m in msgs}

    msgs = poll_topic(hub.bootstrap, STATEMENT_ENTRIES.name, sentinel_seen, deserializer=deserializer(hub))
    counts = Counter(m.value()["entry_id"] for m in msgs)
    assert {i: counts[i] for i in ids} == dict.fromkeys(ids, 1)
    mine = {m.value()["entry_id"]: m for m in msgs if m.value()["entry_id"] in set(ids)}
    for msg in mine.values():
        assert msg.key() == b"MANDIRI"
        assert dict(msg.headers() or [])["sinergi-entry-id"] == msg.value()["entry_id"].encode()
    values = [mine[i].value() for i in ids]
    assert [(v["line_no"], v["direction"], v["detail_status"]) for v in values if v["detail_status"] != "BOOK"] == [
        (13, "DEBIT", "REVERSAL")
    ]
    assert str(values[0]["amount"]) == "370000.00" and values[0]["account_ref"].endswith("6789")


def test_after_the_normalizer_is_killed_and_restarted_a_reupload_still_emits_nothing_new(hub: Supervisor) -> None:
    """The seen-table is rebuilt from its changelog: the restarted worker remembers what it emitted."""
    mt940 = unique_mt940()
    ids = produced_ids(upload(hub, "MANDIRI", mt940, "2001"), hub, "MANDIRI", mt940)
    des = deserializer(hub)
    poll_topic(hub.bootstrap, STATEMENT_ENTRIES.name, lambda ms: set(ids) <= {m.value()["entry_id"] for m in ms}, des)

    worker = hub.kill("worker-normalize_statements")
    hub.spawn(worker, hub.env)

    assert produced_ids(upload(hub, "MANDIRI", mt940, "2002"), hub, "MANDIRI", mt940) == ids
    sentinel = unique_csv(2)
    sentinel_ids = set(produced_ids(upload(hub, "MANDIRI", sentinel, "2003"), hub, "MANDIRI", sentinel))
    msgs = poll_topic(
        hub.bootstrap, STATEMENT_ENTRIES.name, lambda ms: sentinel_ids <= {m.value()["entry_id"] for m in ms}, des
    )
    counts = Counter(m.value()["entry_id"] for m in msgs)
    assert {i: counts[i] for i in ids} == dict.fromkeys(ids, 1)


def test_cli_import_beside_a_running_hub_finds_the_broker_in_the_bootstrap_file(
    hub: Supervisor, tmp_path: Path
) -> None:
    snap = unique_snap()
    path = tmp_path / "bni_statement.json"
    path.write_bytes(snap)
    write_bootstrap_file(tmp_path, hub.bootstrap)
    env = {k: v for k, v in os.environ.items() if k != "SINERGI_KAFKA_BOOTSTRAP"}
    env["SINERGI_DATA_DIR"] = str(tmp_path)
    argv = [sys.executable, "-m", "services", "statements", "import", str(path), "--bank", "BNI"]
    done = subprocess.run(
        [*argv, "--account-no", "0011223344"], env=env, cwd=REPO_ROOT, capture_output=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
    out = done.stdout.decode()
    assert "3 parsed, 3 produced" in out and "0011223344" not in out

    from services.domain.statements import parse_statement

    parsed = parse_statement(snap, bank_id="BNI", imported_at=datetime.now(WIB), account_no="0011223344")
    ids = {e.entry_id for e in parsed.entries}

    def all_seen(msgs: list[Any]) -> bool:
        return ids <= {m.value()["entry_id"] for m in msgs}

    msgs = poll_topic(hub.bootstrap, STATEMENT_ENTRIES.name, all_seen, deserializer=deserializer(hub))
    statuses = {m.value()["entry_id"]: m.value()["detail_status"] for m in msgs if m.value()["entry_id"] in ids}
    assert sorted(statuses.values()) == ["ERROR_CORRECTION", "SUCCESS", "SUCCESS"]


def test_an_invalid_raw_entry_goes_to_the_dead_letter_topic_with_its_reason(hub: Supervisor) -> None:
    from services.domain.statements import parse_statement

    entry = parse_statement(unique_csv(1), bank_id="MANDIRI", imported_at=datetime.now(WIB)).entries[0]
    body = json.loads(entry.model_dump_json())
    body["amount"] = 1000.0  # a float: never accepted as money
    producer = Producer({"bootstrap.servers": hub.bootstrap})
    producer.produce(
        STATEMENTS_RAW.name, key=b"MANDIRI", value=json.dumps(body), headers=[("sinergi-bank", b"MANDIRI")]
    )
    assert producer.flush(30) == 0

    def dead_lettered(msgs: list[Any]) -> bool:
        return any(entry.entry_id.encode() in (m.value() or b"") for m in msgs)

    msgs = poll_topic(hub.bootstrap, dlq("normalize_statements").name, dead_lettered)
    msg = next(m for m in msgs if entry.entry_id.encode() in (m.value() or b""))
    headers = dict(msg.headers() or [])
    assert headers["dlq-reason"] == b"AMOUNT_FORMAT"
    assert headers["dlq-source-topic"] == STATEMENTS_RAW.name.encode()
