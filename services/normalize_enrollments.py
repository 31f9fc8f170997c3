"""normalize_enrollments: kbri.enrollments.raw (JSON) → enrollments.v1 (Avro), bad input → dlq."""

from __future__ import annotations

from datetime import datetime
from functools import partial
from typing import Any

import faust

from services.app import topic
from services.catalogue import ENROLLMENTS, ENROLLMENTS_RAW
from services.context import ServiceContext
from services.domain.enrollment import normalize_enrollment
from services.domain.models import Enrollment
from services.stage import Stage, batch_of, header_str

NAME = "normalize_enrollments"


def convert(ctx: ServiceContext, body: dict[str, Any], headers: dict[str, bytes], accepted: datetime) -> Enrollment:
    """The edge's call again, its inputs read back from the intake headers (connectors/intake.py).

    A bank's record names its owning office (derived at the edge, as answered to the bank) and the bank in
    sinergi-submitted-by; an office's record has no sinergi-submitted-by.
    """
    return normalize_enrollment(
        body,
        office_code=header_str(headers, "sinergi-office"),
        request_id=header_str(headers, "sinergi-request-id"),
        received_at=accepted,
        known_offices=ctx.offices,
        participant_key=ctx.participant_key,
        encrypt_pii=ctx.encrypt_pii,
        tariff=ctx.tariff_on(accepted),
        channel=header_str(headers, "sinergi-channel", "PERWAKILAN_RI"),
        submitted_by=header_str(headers, "sinergi-submitted-by") or None,
    )


def register(app: faust.App, ctx: ServiceContext) -> None:
    stage = Stage(app, NAME)

    @app.agent(topic(app, ENROLLMENTS_RAW.name), name=NAME)
    async def normalize(stream: faust.StreamT) -> None:
        await stage.normalize_batches(stream, ENROLLMENTS, ctx.codec, partial(convert, ctx), batch_of(ctx))
