"""The enrollment intake shared by the KBRI API (offices) and the bank API (partner banks at the counter).

`EnrollmentIntake.submit` is the one path from a parsed body to `kbri.enrollments.raw`: it validates with
the domain's `normalize_enrollment`, produces the EXACT raw bytes with the intake headers, and returns the
answer only after Kafka acknowledged. The normalizer calls the same function with the same inputs read
back from the headers, so both reach the same verdict and the same event id:

    sinergi-office        the owning office: an office itself; for a bank, derived from the placement
    sinergi-request-id    the submitter's X-Request-Id
    sinergi-event-id      services.domain.enrollment.enrollment_event_id(office, request id, submitted-by)
    sinergi-received-at   when the edge accepted it (UTC, milliseconds)
    sinergi-channel       PERWAKILAN_RI (office) or BANK_PARTNER (bank)
    sinergi-submitted-by  bank:<bank id>; absent on an office's record, whose headers stay as they were

Authentication and each API's own headers stay in the API; both call `check_request_id` and `count`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from connectors.http_common import HttpProblem, iso_utc, utc_now_ms
from connectors.kafka_edge import EdgeSender
from connectors.kbri.models import BillLineOut, BillOut, EnrollmentAccepted
from services.catalogue import ENROLLMENTS_RAW
from services.config import Settings
from services.domain.dates import wib_date
from services.domain.enrollment import SUBMITTED_BY_BANK, destination_country, normalize_enrollment
from services.domain.errors import Rejected
from services.domain.identity import compose_va, participant_id
from services.domain.placement import Placement, check_offices, place, placement_region
from services.domain.tariff import TariffTable, bill_amount_idr, load_tariffs
from services.metrics import ENROLLMENT_SUBMISSIONS
from services.reference import BankProfile, Office, load_banks, load_offices, load_tariff_document

OFFICE: Literal["office"] = "office"
BANK: Literal["bank"] = "bank"
CHANNEL_OFFICE = "PERWAKILAN_RI"
CHANNEL_BANK = "BANK_PARTNER"

REQUEST_ID_MISSING = "REQUEST_ID_MISSING"
REQUEST_ID_INVALID = "REQUEST_ID_INVALID"
PLACEMENT_OUTSIDE_BANK_COUNTRIES = "PLACEMENT_OUTSIDE_BANK_COUNTRIES"

H_OFFICE = "sinergi-office"
H_REQUEST_ID = "sinergi-request-id"
H_EVENT_ID = "sinergi-event-id"
H_RECEIVED_AT = "sinergi-received-at"
H_CHANNEL = "sinergi-channel"
H_SUBMITTED_BY = "sinergi-submitted-by"

_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


@dataclass(frozen=True)
class Submitter:
    """Who sent the request: an office, or a bank enrolling for the office that owns the placement."""

    kind: Literal["office", "bank"]
    id: str  # an authenticated, configured office code or bank id

    @property
    def submitted_by(self) -> str | None:
        return None if self.kind == OFFICE else SUBMITTED_BY_BANK + self.id

    @property
    def channel(self) -> str:
        return CHANNEL_OFFICE if self.kind == OFFICE else CHANNEL_BANK


def check_request_id(value: str | None) -> str:
    """The X-Request-Id idempotency key, or a 400."""
    if value is None or not value.strip():
        raise HttpProblem(400, REQUEST_ID_MISSING, "X-Request-Id is required", field="X-Request-Id")
    if _REQUEST_ID.fullmatch(value) is None:
        raise HttpProblem(
            400,
            REQUEST_ID_INVALID,
            "X-Request-Id must be 1-64 characters of A-Z a-z 0-9 . _ -",
            field="X-Request-Id",
        )
    return value


def count(kind: str, submitter: str, reason: str | None) -> None:
    """One submission outcome. `submitter` must be a configured id or "unknown"; reasons are stable codes."""
    outcome = "accepted" if reason is None else "rejected"
    ENROLLMENT_SUBMISSIONS.labels(kind, submitter, outcome, reason or "none").inc()


def _no_pii_kept(_plain: bytes) -> bytes:
    """The intake discards its validated Enrollment: nothing to encrypt here (the normalizer encrypts)."""
    return b""


class EnrollmentIntake:
    """Reference data and secrets, loaded once per app."""

    def __init__(self, settings: Settings, producer: EdgeSender) -> None:
        self.settings = settings
        self.producer = producer
        self.offices: dict[str, Office] = load_offices(settings.offices_file)
        check_offices(self.offices.values())  # fail at start-up, not on the first bank enrollment
        self.office_codes = frozenset(self.offices)
        self.banks: dict[str, BankProfile] = load_banks(settings.banks_file)
        self.tariffs: TariffTable = load_tariffs(load_tariff_document(settings.tariff_file))
        secret = settings.participant_key_secret.get_secret_value().encode("utf-8")
        digits = settings.customer_no_digits
        self.participant_key = lambda nik: participant_id(nik, secret, digits)

    def owner_for_bank(self, body: dict[str, Any], bank: BankProfile) -> Placement:
        """The office owning what `bank` submits; Rejected when the placement is not one the bank may enroll."""
        country = destination_country(body)
        if country not in bank.countries:
            raise Rejected(
                PLACEMENT_OUTSIDE_BANK_COUNTRIES, "destination_country", "is not a country this bank enrolls for"
            )
        return place(country, placement_region(body), self.offices.values())

    async def submit(
        self,
        raw: bytes,
        body: dict[str, Any],
        *,
        submitter: Submitter,
        office: str,
        request_id: str,
        warnings: Sequence[str] = (),
        extra_headers: Sequence[tuple[str, bytes]] = (),
    ) -> EnrollmentAccepted:
        """Validate, produce, answer. Raises Rejected (422) or BrokerUnavailable (503); nothing is kept.

        `warnings` are the caller's own (a placement fallback): added to the domain's in the answer and
        the log, not to the canonical record, which the normalizer rebuilds from the headers alone.
        """
        received_at = utc_now_ms()
        tariff = self.tariffs.tariff_on(wib_date(received_at))
        enrollment = normalize_enrollment(
            body,
            office_code=office,
            request_id=request_id,
            received_at=received_at,
            known_offices=self.office_codes,
            participant_key=self.participant_key,
            encrypt_pii=_no_pii_kept,
            tariff=tariff,
            channel=submitter.channel,
            submitted_by=submitter.submitted_by,
        )
        breakdown = bill_amount_idr(
            tariff, enrollment.participant_type, enrollment.contract_months, enrollment.programs
        )
        customer_no = enrollment.participant_id
        headers = [
            (H_OFFICE, enrollment.office_code.encode()),
            (H_REQUEST_ID, request_id.encode()),
            (H_EVENT_ID, enrollment.event_id.encode()),
            (H_RECEIVED_AT, iso_utc(received_at).encode()),
            (H_CHANNEL, submitter.channel.encode()),
        ]
        if submitter.submitted_by is not None:
            headers.append((H_SUBMITTED_BY, submitter.submitted_by.encode()))
        headers.extend(extra_headers)
        await self.producer.send(ENROLLMENTS_RAW.name, customer_no.encode(), raw, headers)
        return EnrollmentAccepted(
            event_id=enrollment.event_id,
            customer_no=customer_no,
            bill=BillOut(
                amount_idr=breakdown.total_idr,
                tariff_version=breakdown.tariff_version,
                lines=[
                    BillLineOut(code=line.code, description=line.description, amount_idr=line.amount_idr)
                    for line in breakdown.lines
                ],
                virtual_accounts={
                    bank_id: compose_va(bank.partner_service_id, customer_no) for bank_id, bank in self.banks.items()
                },
            ),
            warnings=[*enrollment.warnings, *warnings],
        )
