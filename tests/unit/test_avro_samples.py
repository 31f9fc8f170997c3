"""Realistic sample records for every canonical model (imported by the Avro tests; holds no tests).

Timestamps have millisecond precision: timestamp-millis keeps no more.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from connectors.registry.app import SchemaStore, create_registry_app, preload
from services.avro import AvroCodec, ParsedSchema, RegistryClient, load_schemas, topic_value_schemas
from services.config import Settings
from services.domain.models import (
    Case,
    CaseAttachment,
    CaseCategory,
    CaseStatus,
    CaseUpdate,
    Enrollment,
    EntryDetailStatus,
    EntryDirection,
    FxRate,
    MemberRecord,
    MemberStatus,
    ParticipantType,
    Payment,
    Program,
    ReconciliationException,
    Reversal,
    Sex,
    StatementEntry,
    StatementSource,
)

SCHEMAS_DIR = Settings().schemas_dir
PII = b"gAAAAABmZ3xYq1vL0oHkC8mZ-fake-fernet-token-for-tests-only=="
CUSTOMER_NO = "381726354019283746"

ENROLLMENT = Enrollment(
    event_id="6f1c2e4a-8d0b-5c3e-9a71-2b4d6f8a0c1e",
    participant_id=CUSTOMER_NO,
    office_code="KBRI_KUALA_LUMPUR",
    office_request_id="KL-2025-000123",
    pii_encrypted=PII,
    full_name="Siti Nurhaliza binti Ahmad",
    date_of_birth=date(1995, 3, 14),
    sex=Sex.F,
    participant_type=ParticipantType.PLACED,
    destination_country="MY",
    employer_name="Syarikat Maju Jaya Sdn Bhd",
    departure_date=date(2025, 8, 1),
    contract_start=date(2025, 8, 4),
    contract_months=24,
    programs=[Program.JKK, Program.JKM, Program.JHT],
    jht_monthly_amount_idr=105_000,
    channel="PERWAKILAN_RI",
    warnings=["NIK_DOB_MISMATCH"],
    received_at=datetime(2025, 7, 20, 3, 15, 42, 123_000, tzinfo=UTC),
)

ENROLLMENT_MINIMAL = Enrollment(
    event_id="0a9b8c7d-6e5f-5a4b-8c3d-2e1f0a9b8c7d",
    participant_id="100000000000000001",
    office_code="KDEI_TAIPEI",
    office_request_id="TPE/77",
    pii_encrypted=b"",
    full_name="Budi",
    date_of_birth=date(1988, 12, 31),
    sex=Sex.UNKNOWN,
    participant_type=ParticipantType.PERSEORANGAN,
    destination_country="TW",
    departure_date=date(2025, 1, 2),
    contract_start=date(2025, 1, 3),
    contract_months=6,
    programs=[Program.JKK, Program.JKM],
    channel="BANK_PARTNER",
    received_at=datetime(2024, 12, 31, 23, 59, 59, 999_000, tzinfo=UTC),
)

PAYMENT_MYR = Payment(
    event_id="c0ffee00-1234-5abc-8def-0123456789ab",
    participant_id=CUSTOMER_NO,
    bank_id="MAYBANK_MY",
    partner_service_id="   88123",
    virtual_account_no="   88123" + CUSTOMER_NO,
    payment_request_id="MBB20250721000017",
    external_id="41807553358950093184",
    partner_reference_no="REF-7781",
    amount_idr=46_564,
    original_amount=Decimal("12.50"),
    original_currency="MYR",
    fx_rate=Decimal("3725.123456"),
    trx_time=datetime(2025, 7, 21, 1, 2, 3, 456_000, tzinfo=UTC),
    trx_utc_offset_minutes=480,
    channel_code="6011",
    received_at=datetime(2025, 7, 21, 1, 2, 4, 1_000, tzinfo=UTC),
)

PAYMENT_IDR = Payment(
    event_id="d1e2f3a4-b5c6-5d7e-8f90-a1b2c3d4e5f6",
    participant_id=CUSTOMER_NO,
    bank_id="MANDIRI",
    partner_service_id="   89001",
    virtual_account_no="   89001" + CUSTOMER_NO,
    payment_request_id="MDR-2025-07-21-0001",
    external_id="1",
    amount_idr=370_000,
    original_amount=Decimal("370000.00"),
    original_currency="IDR",
    trx_time=datetime(2025, 7, 21, 2, 0, tzinfo=UTC),
    trx_utc_offset_minutes=420,
    received_at=datetime(2025, 7, 21, 2, 0, 0, 250_000, tzinfo=UTC),
)

MEMBER_ACTIVE = MemberRecord(
    record_id=f"{CUSTOMER_NO}:3",
    participant_id=CUSTOMER_NO,
    version=3,
    status=MemberStatus.ACTIVE,
    office_code="KBRI_KUALA_LUMPUR",
    full_name="Siti Nurhaliza binti Ahmad",
    pii_encrypted=PII,
    date_of_birth=date(1995, 3, 14),
    sex=Sex.F,
    participant_type=ParticipantType.PLACED,
    destination_country="MY",
    programs=[Program.JKK, Program.JKM, Program.JHT],
    customer_no=CUSTOMER_NO,
    bill_amount_idr=370_000,
    paid_amount_idr=370_000,
    bill_issued_at=datetime(2025, 7, 20, 3, 15, 43, tzinfo=UTC),
    bill_expires_on=date(2025, 8, 19),
    coverage_start=date(2025, 8, 1),
    coverage_end=date(2027, 8, 31),
    enrollment_event_id=ENROLLMENT.event_id,
    payment_event_ids=[PAYMENT_MYR.event_id, PAYMENT_IDR.event_id],
    caused_by_event_id=PAYMENT_IDR.event_id,
    updated_at=datetime(2025, 7, 21, 2, 0, 0, 300_000, tzinfo=UTC),
)

MEMBER_AWAITING = MemberRecord(
    record_id="100000000000000001:1",
    participant_id="100000000000000001",
    version=1,
    status=MemberStatus.AWAITING_PAYMENT,
    office_code="KDEI_TAIPEI",
    full_name="Budi",
    pii_encrypted=b"\x00\xff\x10",
    date_of_birth=date(1988, 12, 31),
    sex=Sex.M,
    participant_type=ParticipantType.UNKNOWN,
    destination_country="TW",
    programs=[],
    customer_no="100000000000000001",
    bill_amount_idr=0,
    paid_amount_idr=0,
    bill_issued_at=datetime(1970, 1, 1, tzinfo=UTC),
    bill_expires_on=date(2025, 1, 31),
    enrollment_event_id=ENROLLMENT_MINIMAL.event_id,
    caused_by_event_id=ENROLLMENT_MINIMAL.event_id,
    updated_at=datetime(2025, 1, 1, 17, 0, tzinfo=UTC),
)

EXCEPTION = ReconciliationException(
    exception_id="e7c6b5a4-9382-5716-a5b4-c3d2e1f0a9b8",
    participant_id=CUSTOMER_NO,
    reason="OVERPAYMENT",
    event_id=PAYMENT_MYR.event_id,
    bank_id="MAYBANK_MY",
    amount_idr=9_223_372_036_854_775_807,  # long max: integer rupiah never goes through float
    detail="paid 46564 against a bill of 0",
    occurred_at=datetime(2025, 7, 21, 1, 2, 4, tzinfo=UTC),
)

EXCEPTION_MINIMAL = ReconciliationException(
    exception_id="x",
    participant_id="p",
    reason="UNKNOWN_VA",
    event_id="e",
    occurred_at=datetime(2025, 7, 21, tzinfo=UTC),
)

STATEMENT_ENTRY = StatementEntry(
    entry_id="5b0d7a3e-2c4f-5e61-8a9b-0c1d2e3f4a5b",
    bank_id="BNI",
    source=StatementSource.SNAP_STATEMENT,
    account_ref="******6789",
    booking_date=date(2025, 7, 15),
    value_date=date(2025, 7, 15),
    direction=EntryDirection.CREDIT,
    amount=Decimal("370000.00"),
    currency="IDR",
    bank_ref="TRX2507150000101",
    end_to_end_id="PRQ-20250715-0101",
    customer_ref="   88123381726354019283746",
    narrative="PEMBAYARAN VA BPJSTK PMI",
    detail_status=EntryDetailStatus.ERROR_CORRECTION,
    statement_ref="2025071500001234",
    line_no=3,
    imported_at=datetime(2025, 7, 16, 1, 0, 0, 250_000, tzinfo=UTC),
)

STATEMENT_ENTRY_MINIMAL = StatementEntry(
    entry_id="9e8d7c6b-5a49-5382-9170-6f5e4d3c2b1a",
    bank_id="MANDIRI",
    source=StatementSource.MT940,
    account_ref="****",
    booking_date=date(2025, 1, 1),
    direction=EntryDirection.DEBIT,
    amount=Decimal("0.01"),
    currency="MYR",
    detail_status=EntryDetailStatus.REVERSAL,
    line_no=1,
    imported_at=datetime(2025, 1, 1, tzinfo=UTC),
)

CASE_ANSWERED = CaseUpdate(
    case_event_id="3d5c0e4b-7a2f-5b9e-8c61-4f0a2b3c4d5e",
    case_id="KL-CASE-2025-0042",
    office_code="KBRI_KUALA_LUMPUR",
    version=2,
    status=CaseStatus.ANSWERED,
    answer="Iuran sudah diterima; kartu peserta dikirim lewat KBRI.",
    updated_at=datetime(2025, 7, 22, 4, 30, 0, 125_000, tzinfo=UTC),
)

CASE_RECEIVED = CaseUpdate(
    case_event_id="x",
    case_id="1",
    office_code="KDEI_TAIPEI",
    version=1,
    status=CaseStatus.RECEIVED,
    updated_at=datetime(2025, 1, 1, tzinfo=UTC),
)

CASE = Case(
    case_event_id="8a3f2c1d-4b5e-5f60-9a7b-1c2d3e4f5a6b",
    case_id="KL-CASE-2025-0042",
    office_code="KBRI_KUALA_LUMPUR",
    participant_id=CUSTOMER_NO,
    category=CaseCategory.CLAIM_INQUIRY,
    text="Pekerja menanyakan status klaim JKK setelah kecelakaan kerja.\nMohon informasi dokumen yang kurang.",
    attachments=[
        CaseAttachment(ref="https://dms.kbri-kl.example/cases/0042/laporan.pdf", media_type="application/pdf"),
        CaseAttachment(ref="DMS-2025/0042-2"),
    ],
    received_at=datetime(2025, 7, 22, 2, 0, 0, 500_000, tzinfo=UTC),
)

CASE_MINIMAL = Case(
    case_event_id="y",
    case_id="1",
    office_code="KDEI_TAIPEI",
    category=CaseCategory.OTHER,
    text="?",
    received_at=datetime(2025, 1, 1, tzinfo=UTC),
)

FX_RATE = FxRate(
    currency="MYR",
    value_date=date(2025, 7, 21),
    idr_per_unit=Decimal("3452.125000"),
    source="SIMULATOR",
    published_at=datetime(2025, 7, 21, 1, 0, 0, 123000, tzinfo=UTC),
)

REVERSAL = Reversal(
    event_id="rev-1",
    participant_id="p" * 64,
    bank_id="MANDIRI",
    reverses_event_id="pay-1",
    bank_refs=["REF1", "E2E1"],
    amount=Decimal("108000.00"),
    currency="IDR",
    received_at=datetime(2025, 7, 22, 3, 4, 5, 678000, tzinfo=UTC),
    detail="REF",
)
REVERSAL_MINIMAL = Reversal(
    event_id="rev-2",
    participant_id="q",
    bank_id="BNI",
    bank_refs=["X"],
    received_at=datetime(2025, 1, 1, tzinfo=UTC),
)

SAMPLES: dict[str, list[Any]] = {
    "sinergi.Enrollment": [ENROLLMENT, ENROLLMENT_MINIMAL],
    "sinergi.Payment": [PAYMENT_MYR, PAYMENT_IDR],
    "sinergi.MemberRecord": [MEMBER_ACTIVE, MEMBER_AWAITING],
    "sinergi.ReconciliationException": [EXCEPTION, EXCEPTION_MINIMAL],
    "sinergi.StatementEntry": [STATEMENT_ENTRY, STATEMENT_ENTRY_MINIMAL],
    "sinergi.Case": [CASE, CASE_MINIMAL],
    "sinergi.CaseUpdate": [CASE_ANSWERED, CASE_RECEIVED],
    "sinergi.FxRate": [FX_RATE],
    "sinergi.Reversal": [REVERSAL, REVERSAL_MINIMAL],
}


def _sync_asgi_transport(app: Any) -> httpx.MockTransport:
    """httpx has no sync ASGI transport: run the request on the ASGI app in a helper thread's own loop
    (the codec's blocking fetch is called from inside the test's running event loop)."""

    async def forward(request: httpx.Request) -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://registry.test") as c:
            answer = await c.request(
                request.method, request.url.raw_path.decode(), content=request.content, headers=request.headers
            )
            return httpx.Response(answer.status_code, headers=answer.headers, content=answer.content)

    def handle(request: httpx.Request) -> httpx.Response:
        with ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(asyncio.run, forward(request)).result(timeout=30)

    return httpx.MockTransport(handle)


def embedded_registry(schemas_dir: Path = SCHEMAS_DIR) -> tuple[SchemaStore, RegistryClient]:
    """An in-process embedded registry, preloaded, and a client talking to it over ASGI (no network)."""
    store = SchemaStore()
    preload(store, schemas_dir)
    app = create_registry_app(store)
    client = RegistryClient(
        "http://registry.test",
        transport=httpx.ASGITransport(app=app),
        sync_transport=_sync_asgi_transport(app),
    )
    return store, client


async def started_codec(registry: RegistryClient, schemas: dict[str, ParsedSchema] | None = None) -> AvroCodec:
    schemas = schemas if schemas is not None else load_schemas(SCHEMAS_DIR)
    codec = AvroCodec(registry, schemas, topic_value_schemas(schemas))
    await codec.start()
    return codec
