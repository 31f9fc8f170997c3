"""SNAP request/response models of the bank API. Request models document; the domain validates."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class Amount(BaseModel):
    value: str = Field(description='Decimal string with exactly 2 decimals, e.g. "370000.00"')
    currency: str = Field(description="ISO 4217; must be one of the bank's currencies", examples=["IDR"])


class PaymentAdditionalInfo(BaseModel):
    """additionalInfo of a payment notification; keys other than fxRate are accepted and ignored."""

    fxRate: str | None = Field(
        None,
        description="IDR per one unit of paidAmount.currency: a decimal string, up to 12 digits and 6 decimals. "
        "Required when paidAmount is not IDR: a bank collecting abroad (MYR, HKD, TWD, SGD, per the bank's "
        "currencies) reports paidAmount in the currency the worker paid in, plus this rate; the hub keeps the "
        "exact original amount and amount_idr = round_half_up(value x fxRate). Must be absent for IDR.",
        examples=["3450.123456"],
    )


class VaPaymentRequest(BaseModel):
    """SNAP VA payment notification (service 25). Unknown fields are accepted and ignored."""

    partnerServiceId: str = Field(description="The bank's VA prefix, left-padded with spaces to 8")
    customerNo: str = Field(description="1-20 digits (the participant's customer number)")
    virtualAccountNo: str = Field(description="partnerServiceId (8) + customerNo, at most 28 characters")
    virtualAccountName: str | None = None
    paymentRequestId: str = Field(description="The bank's id of this payment (= inquiryRequestId), <= 128")
    paidAmount: Amount = Field(
        description='What the worker paid, in the currency paid: {"value": "370000.00", "currency": "IDR"} or '
        '{"value": "107.25", "currency": "MYR"} with additionalInfo.fxRate'
    )
    trxDateTime: str = Field(description="ISO-8601 with offset or Z, e.g. 2025-09-01T10:15:00+07:00")
    channelCode: str | None = None
    partnerReferenceNo: str | None = None
    additionalInfo: PaymentAdditionalInfo | None = None


class FlagReason(BaseModel):
    english: str
    indonesia: str


class VirtualAccountData(BaseModel):
    partnerServiceId: str
    customerNo: str
    virtualAccountNo: str
    paymentRequestId: str
    paidAmount: Amount
    paymentFlagStatus: Literal["00"] = "00"
    paymentFlagReason: FlagReason


class VaPaymentResponse(BaseModel):
    responseCode: Literal["2002500"] = "2002500"
    responseMessage: Literal["Successful"] = "Successful"
    virtualAccountData: VirtualAccountData


class B2bTokenRequest(BaseModel):
    """SNAP B2B access token request (service 73)."""

    grantType: Literal["client_credentials"]


class B2bTokenResponse(BaseModel):
    responseCode: Literal["2007300"] = "2007300"
    responseMessage: Literal["Successful"] = "Successful"
    accessToken: str = Field(description="Opaque bearer token for the transactional endpoints")
    tokenType: Literal["Bearer"] = "Bearer"
    expiresIn: str = Field(description="Lifetime in seconds, as a string", examples=["900"])


class SnapError(BaseModel):
    responseCode: str = Field(description="SNAP code: HTTP status (3) + service code (25 or 73) + case (2)")
    responseMessage: str = Field(description="SNAP message; names the offending field, never its value")
    reason: str = Field(description="sinergi's stable reason code, e.g. AMOUNT_FORMAT, BROKER_UNAVAILABLE")
