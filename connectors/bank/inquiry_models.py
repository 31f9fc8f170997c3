"""SNAP VA inquiry (service 24) request/response models (domain.md 4.4). The request model documents only:
the endpoint validates the raw body itself (connectors.bank.inquiry)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from connectors.bank.models import Amount


class VaInquiryRequest(BaseModel):
    """SNAP VA inquiry. Unknown fields are accepted and ignored."""

    partnerServiceId: str = Field(description="The bank's VA prefix, left-padded with spaces to 8", max_length=8)
    customerNo: str = Field(description="1-20 digits (the participant's customer number)", max_length=20)
    virtualAccountNo: str = Field(description="partnerServiceId (8) + customerNo, at most 28 characters", max_length=28)
    inquiryRequestId: str = Field(
        description="The bank's id of this inquiry (the later paymentRequestId), <= 128", max_length=128
    )
    channelCode: str | None = Field(None, description="ISO 18245 merchant category code, 1-4 digits")
    sourceBankCode: str | None = Field(None, max_length=8)
    trxDateInit: str | None = Field(None, description="ISO-8601 with offset or Z, e.g. 2025-09-01T10:15:00+07:00")
    amount: Amount | None = None
    passApp: str | None = Field(None, max_length=64)
    additionalInfo: dict[str, Any] | None = None


class Bilingual(BaseModel):
    english: str
    indonesia: str


class BillDescription(BaseModel):
    english: str = Field(max_length=18)
    indonesia: str = Field(max_length=18)


class BillDetail(BaseModel):
    billCode: str = Field(description='"01": the one bill of the current enrollment')
    billName: str
    billDescription: BillDescription
    billAmount: Amount


class InquiryVirtualAccountData(BaseModel):
    partnerServiceId: str
    customerNo: str
    virtualAccountNo: str
    virtualAccountName: str = Field(
        max_length=255, description="The member's name as the bank may show it (Settings.va_name_display)"
    )
    inquiryRequestId: str
    totalAmount: Amount = Field(description="Outstanding amount: bill minus what was paid, in IDR")
    billDetails: list[BillDetail] = Field(max_length=24)
    inquiryStatus: Literal["00"] = "00"
    inquiryReason: Bilingual


class VaInquiryResponse(BaseModel):
    responseCode: Literal["2002400"] = "2002400"
    responseMessage: Literal["Successful"] = "Successful"
    virtualAccountData: InquiryVirtualAccountData
