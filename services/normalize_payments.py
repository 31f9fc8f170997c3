"""normalize_payments: bank.payments.raw (SNAP JSON) → payments.v1 (Avro), bad input → dlq."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import faust

from services.app import topic
from services.catalogue import PAYMENTS, PAYMENTS_RAW
from services.context import ServiceContext
from services.domain.errors import Rejected
from services.domain.models import Payment
from services.domain.payment import normalize_payment
from services.stage import Stage, batch_of, header_str

NAME = "normalize_payments"


def register(app: faust.App, ctx: ServiceContext) -> None:
    stage = Stage(app, NAME)

    def convert(body: dict[str, Any], headers: dict[str, bytes], accepted: datetime) -> Payment:
        bank_id = header_str(headers, "sinergi-bank")
        bank = ctx.banks.get(bank_id)
        if bank is None:
            raise Rejected("UNKNOWN_BANK", "sinergi-bank", "bank is not in the partner registry")
        return normalize_payment(
            body,
            bank_id=bank_id,
            partner_service_id=bank.partner_service_id,
            allowed_currencies=bank.currencies,
            external_id=header_str(headers, "sinergi-external-id"),
            received_at=accepted,
        )

    @app.agent(topic(app, PAYMENTS_RAW.name), name=NAME)
    async def normalize(stream: faust.StreamT) -> None:
        await stage.normalize_batches(stream, PAYMENTS, ctx.codec, convert, batch_of(ctx))
