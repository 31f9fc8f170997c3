"""normalize_payments: bank.payments.raw (SNAP JSON) → payments.v1 (Avro), bad input → dlq."""

from __future__ import annotations

import faust
import orjson

from services.app import topic
from services.catalogue import PAYMENTS, PAYMENTS_RAW
from services.context import ServiceContext
from services.domain.errors import Rejected
from services.domain.payment import normalize_payment
from services.stage import Stage, header_map, header_str, received_at

NAME = "normalize_payments"


def register(app: faust.App, ctx: ServiceContext) -> None:
    stage = Stage(app, NAME)
    source = topic(app, PAYMENTS_RAW.name)

    @app.agent(source, name=NAME)
    async def normalize(stream: faust.StreamT) -> None:
        async for event in stream.events():
            stage.consumed(event)
            msg = event.message
            headers = header_map(msg.headers)
            accepted = received_at(headers, msg.timestamp * 1000 if msg.timestamp else None)
            bank_id = header_str(headers, "sinergi-bank")
            try:
                bank = ctx.banks.get(bank_id)
                if bank is None:
                    raise Rejected("UNKNOWN_BANK", "sinergi-bank", "bank is not in the partner registry")
                raw = orjson.loads(msg.value)
                if not isinstance(raw, dict):
                    raise Rejected("INVALID_JSON", None, "body is not a JSON object")
                payment = normalize_payment(
                    raw,
                    bank_id=bank_id,
                    partner_service_id=bank.partner_service_id,
                    allowed_currencies=bank.currencies,
                    external_id=header_str(headers, "sinergi-external-id"),
                    received_at=accepted,
                )
            except orjson.JSONDecodeError:
                await stage.dead_letter(event, "INVALID_JSON", "value is not valid JSON")
                continue
            except Rejected as rejected:
                await stage.dead_letter(event, rejected.reason, str(rejected))
                continue
            except Exception as exc:  # never crash the worker on one record
                await stage.dead_letter(event, "UNEXPECTED", type(exc).__name__)
                continue
            await stage.send(
                PAYMENTS.name,
                key=payment.participant_id.encode(),
                value=ctx.codec.encode(PAYMENTS.value_schema or "", payment),
                headers=[
                    ("sinergi-event-id", payment.event_id.encode()),
                    ("sinergi-received-at", accepted.isoformat().encode()),
                ],
            )
            stage.observe_latency(accepted)
