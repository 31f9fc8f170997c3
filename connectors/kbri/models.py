"""KBRI API request/response models. The request model documents the body; validation is the domain's."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class EnrollmentRequest(BaseModel):
    """Body of POST /v1/enrollments (documentation; services.domain.enrollment is the validator)."""

    nik: str = Field(description="16-digit NIK", examples=["3602045211870001"])
    full_name: str = Field(description="Name as on the KTP, 1-255 characters")
    date_of_birth: str = Field(description="YYYY-MM-DD")
    sex: Literal["M", "F"]
    participant_type: Literal["PLACED", "PERSEORANGAN"]
    passport_number: str = Field(description="Uppercase letters/digits, 6-12 characters")
    destination_country: str = Field(description="ISO 3166-1 alpha-2, not ID", examples=["MY"])
    employer_name: str | None = Field(None, description="Employer as on the work agreement")
    departure_date: str = Field(description="Planned embarkation date, YYYY-MM-DD")
    contract_start: str = Field(description="Start of the work agreement, YYYY-MM-DD")
    contract_months: int = Field(ge=1, le=120)
    programs: list[Literal["JKK", "JKM", "JHT"]] = Field(description="Must include JKK and JKM")
    jht_monthly_amount_idr: int | None = Field(
        None, description="Integer rupiah within the tariff's JHT range; required iff JHT is chosen"
    )
    placement_region: str | None = Field(
        None,
        max_length=64,
        description="State or city of the workplace, e.g. Johor or Tawau. A bank's enrollment is owned by the "
        "office whose jurisdiction names it; an office's own submissions ignore it (the office is the owner)",
        examples=["Johor"],
    )


class BillLineOut(BaseModel):
    code: str = Field(description="PRE, a package code (M6/M12/M24) or EXCESS")
    description: str
    amount_idr: int


class BillOut(BaseModel):
    amount_idr: int = Field(description="Total JKK+JKM to pay, integer rupiah")
    tariff_version: str
    lines: list[BillLineOut]
    virtual_accounts: dict[str, str] = Field(
        description="SNAP virtualAccountNo per partner bank id (partnerServiceId padded to 8 + customer_no)"
    )


class EnrollmentAccepted(BaseModel):
    status: Literal["ACCEPTED"] = "ACCEPTED"
    event_id: str = Field(description="Deterministic: same office + X-Request-Id, same id")
    customer_no: str = Field(description="Participant id (keyed hash of the NIK); the VA customer number")
    bill: BillOut
    warnings: list[str] = Field(description="Warning codes, e.g. NIK_DOB_MISMATCH")
