"""normalize_enrollments: kbri.enrollments.raw (JSON) → enrollments.v1 (Avro), bad input → dlq."""

from __future__ import annotations

import faust
import orjson

from services.app import topic
from services.catalogue import ENROLLMENTS, ENROLLMENTS_RAW
from services.context import ServiceContext
from services.domain.enrollment import normalize_enrollment
from services.domain.errors import Rejected
from services.stage import Stage, header_map, header_str, received_at

NAME = "normalize_enrollments"


def register(app: faust.App, ctx: ServiceContext) -> None:
    stage = Stage(app, NAME)
    source = topic(app, ENROLLMENTS_RAW.name)

    @app.agent(source, name=NAME)
    async def normalize(stream: faust.StreamT) -> None:
        async for event in stream.events():
            stage.consumed(event)
            msg = event.message
            headers = header_map(msg.headers)
            accepted = received_at(headers, msg.timestamp * 1000 if msg.timestamp else None)
            try:
                raw = orjson.loads(msg.value)
                if not isinstance(raw, dict):
                    raise Rejected("INVALID_JSON", None, "body is not a JSON object")
                enrollment = normalize_enrollment(
                    raw,
                    office_code=header_str(headers, "sinergi-office"),
                    request_id=header_str(headers, "sinergi-request-id"),
                    received_at=accepted,
                    known_offices=ctx.offices,
                    participant_key=ctx.participant_key,
                    encrypt_pii=ctx.encrypt_pii,
                    tariff=ctx.tariff_on(accepted),
                    channel=header_str(headers, "sinergi-channel", "PERWAKILAN_RI"),
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
                ENROLLMENTS.name,
                key=enrollment.participant_id.encode(),
                value=ctx.codec.encode(ENROLLMENTS.value_schema or "", enrollment),
                headers=[
                    ("sinergi-event-id", enrollment.event_id.encode()),
                    ("sinergi-received-at", accepted.isoformat().encode()),
                ],
            )
            stage.observe_latency(accepted)
