"""Structured logging with the one masking point for personal data.

Callers log event ids, reason codes and counts, never personal values. As a second line of defence
every record passes through `mask_text`, which blanks anything shaped like a NIK (16 digits), a long
account/VA number or a passport number before it is written.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

# Not inside a decimal number: "runtime=6.0123456789806" is a measurement, not an account.
_NIK_OR_ACCOUNT = re.compile(r"(?<!\d)(?<!\d\.)\d{10,20}(?!\d)(?!\.\d)")
_PASSPORT = re.compile(r"\b(?=[A-Z0-9]*\d)(?=[A-Z0-9]*[A-Z])[A-Z0-9]{6,12}\b")
# An event id is never personal data, and one whose last group holds ten digits in a row was logged as
# "aade-******2936ce": unsearchable. UUIDs are matched first and kept whole.
_UUID = r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"
_MASKED = re.compile(rf"(?P<uuid>{_UUID})|(?P<number>{_NIK_OR_ACCOUNT.pattern})|(?P<passport>{_PASSPORT.pattern})")


def _mask(m: re.Match[str]) -> str:
    if m.group("uuid"):
        return m.group()
    if m.group("number"):
        return "*" * (len(m.group()) - 4) + m.group()[-4:]
    return "[passport]"


def mask_text(text: str) -> str:
    return _MASKED.sub(_mask, text)


class _MaskingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = mask_text(record.getMessage())
        record.args = None
        return True


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            out.update({k: mask_text(str(v)) for k, v in extra.items()})
        if record.exc_info:
            out["exc"] = mask_text(self.formatException(record.exc_info))
        return json.dumps(out, ensure_ascii=False)


def configure(level: str = "INFO", json_output: bool | None = None) -> None:
    if json_output is None:
        json_output = not sys.stderr.isatty()
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_MaskingFilter())
    handler.setFormatter(
        _JsonFormatter() if json_output else logging.Formatter("%(asctime)s %(levelname)-5s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiokafka and faust log per request at DEBUG/INFO; keep them quiet on the hot path.
    for noisy in ("aiokafka", "faust", "mode", "uvicorn.access", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # Except table recovery and group membership: a few lines per rebalance, what an SRE needs when a
    # worker is slow to start.
    logging.getLogger("faust.tables.recovery").setLevel(logging.INFO)
    logging.getLogger("aiokafka.consumer.group_coordinator").setLevel(logging.INFO)
    # kafka-python serves the start-up probe and topic admin only; a refused probe is expected, its
    # failures surface as exceptions.
    logging.getLogger("kafka").setLevel(logging.CRITICAL)


def event(logger: logging.Logger, message: str, **fields: Any) -> None:
    """One structured line per significant event; fields must be ids, codes and counts."""
    logger.info(message, extra={"fields": fields})
