"""`GET /v1/reports/daily` in-process: a signed GET over the empty body, the caller's bank only."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta, timezone

import httpx
import pytest

from connectors.bank import reports
from connectors.bank.snap_signing import sign_transactional_hmac
from services.config import DEV_BANK_SECRETS, Settings
from services.domain.statement_match import Decision, DecisionKind

PATH = "/v1/reports/daily"
TOKENS = {"MANDIRI": "dev-token-mandiri", "BNI": "dev-token-bni"}
WIB = timezone(timedelta(hours=7))
DAY = date(2025, 7, 15)


def decision(bank: str, kind: DecisionKind, decision_id: str, amount_idr: int) -> Decision:
    return Decision(
        decision_id=decision_id,
        kind=kind,
        bank_id=bank,
        business_date=DAY,
        amount_idr=amount_idr,
        decided_at=datetime(2025, 7, 15, 18, tzinfo=UTC),
    )


STORED = [
    decision("MANDIRI", DecisionKind.MATCHED_BY_REF, "d1", 370_000),
    decision("MANDIRI", DecisionKind.MATCHED_BY_REF, "d2", 100_000),
    decision("MANDIRI", DecisionKind.AMOUNT_MISMATCH, "d3", 50_000),
    decision("BNI", DecisionKind.MATCHED_BY_REF, "d4", 999_000),
]


@pytest.fixture
def edge_settings() -> Settings:
    return Settings()  # the stage is on by default (Settings.statement_reconciliation_enabled)


@pytest.fixture
def asked(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []

    async def fake(settings: Settings, bank: str) -> Sequence[Decision]:
        calls.append(bank)
        return [d for d in STORED if d.bank_id == bank]

    monkeypatch.setattr(reports, "read_decisions", fake)
    return calls


async def get(
    client: httpx.AsyncClient, params: dict[str, str], *, bank: str = "MANDIRI", secret: str | None = None
) -> httpx.Response:
    token = TOKENS[bank]
    ts = datetime.now(WIB).isoformat(timespec="seconds")
    key = (secret or DEV_BANK_SECRETS[bank]).encode()
    headers = {
        "Authorization": f"Bearer {token}",
        "X-PARTNER-ID": bank,
        "X-TIMESTAMP": ts,
        "X-SIGNATURE": sign_transactional_hmac(key, "GET", PATH, token, b"", ts),
    }
    return await client.get(PATH, params=params, headers=headers)


async def test_a_bank_reads_its_own_daily_report(bank_client: httpx.AsyncClient, asked: list[str]) -> None:
    resp = await get(bank_client, {"bank": "MANDIRI", "date": DAY.isoformat()})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert (body["bank_id"], body["business_date"]) == ("MANDIRI", "2025-07-15")
    categories = {c["category"]: c for c in body["categories"]}
    assert categories["MATCHED_BY_REF"]["decisions"] == 2
    assert categories["MATCHED_BY_REF"]["amount_idr"] == 470_000
    assert categories["TOTAL"]["decisions"] == 3
    assert asked == ["MANDIRI"]


async def test_another_banks_report_is_forbidden_and_not_read(bank_client: httpx.AsyncClient, asked: list[str]) -> None:
    resp = await get(bank_client, {"bank": "BNI", "date": DAY.isoformat()})
    assert resp.status_code == 403
    assert resp.json() == {"responseCode": "4030001", "responseMessage": "Feature Not Allowed", "reason": "OTHER_BANK"}
    assert asked == []


@pytest.mark.parametrize(
    ("params", "status", "code", "reason"),
    [
        ({"date": "2025-07-15"}, 400, "4000002", "MISSING_FIELD"),
        ({"bank": "MANDIRI"}, 400, "4000002", "MISSING_FIELD"),
        ({"bank": "MANDIRI", "date": "15-07-2025"}, 400, "4000001", "INVALID_FIELD"),
    ],
)
async def test_missing_or_malformed_parameters_are_refused(
    bank_client: httpx.AsyncClient, asked: list[str], params: dict[str, str], status: int, code: str, reason: str
) -> None:
    resp = await get(bank_client, params)
    assert resp.status_code == status
    assert (resp.json()["responseCode"], resp.json()["reason"]) == (code, reason)
    assert asked == []


async def test_a_wrong_signature_is_unauthorized(bank_client: httpx.AsyncClient, asked: list[str]) -> None:
    resp = await get(bank_client, {"bank": "MANDIRI", "date": "2025-07-15"}, secret="not-the-secret")
    assert resp.status_code == 401
    assert resp.json()["responseCode"] == "4010000"
    assert asked == []


async def test_an_unreadable_topic_is_503(bank_client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(settings: Settings, bank: str) -> Sequence[Decision]:
        raise RuntimeError("no broker configured")

    monkeypatch.setattr(reports, "read_decisions", broken)
    resp = await get(bank_client, {"bank": "MANDIRI", "date": "2025-07-15"})
    assert resp.status_code == 503
    assert (resp.json()["responseCode"], resp.json()["reason"]) == ("5000002", "REPORT_UNAVAILABLE")


async def test_report_says_so_when_statement_reconciliation_is_off(asked: list[str]) -> None:
    from connectors.bank.app import create_bank_app
    from connectors.kafka_edge import InMemoryProducer

    app = create_bank_app(Settings(statement_reconciliation_enabled=False), InMemoryProducer())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bank.test") as client:
        resp = await get(client, {"bank": "MANDIRI", "date": DAY.isoformat()})
    assert resp.status_code == 503, resp.text
    assert resp.json()["reason"] == "STATEMENT_RECONCILIATION_DISABLED"
    assert asked == []  # nothing read
