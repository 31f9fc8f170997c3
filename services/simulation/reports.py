"""The compact line `sinergi simulate` prints from a bank's daily reconciliation report
(`GET /v1/reports/daily`, services.domain.daily_report.DailyReport as JSON): counts and rupiah sums only.

Pure and defensive: the answer comes over HTTP, so anything that is not a known category with integer
counts is ignored rather than echoed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: The summary's groups, by the report's categories (statement_match.DecisionKind values).
GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("matched", ("MATCHED_BY_REF", "MATCHED_BY_VA_AMOUNT_DATE")),
    ("mismatched", ("AMOUNT_MISMATCH",)),
    ("unmatched", ("NOTIFIED_NOT_ON_STATEMENT", "ON_STATEMENT_NOT_NOTIFIED")),
    ("reversed", ("REVERSAL",)),
)


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def report_totals(doc: Mapping[str, Any]) -> dict[str, tuple[int, int]]:
    """Per group: (decisions, amount_idr), summed over the group's categories."""
    by_category: dict[str, tuple[int, int]] = {}
    categories = doc.get("categories")
    for line in categories if isinstance(categories, list) else ():
        if isinstance(line, Mapping) and isinstance(line.get("category"), str):
            by_category[line["category"]] = (_int(line.get("decisions")), _int(line.get("amount_idr")))
    totals: dict[str, tuple[int, int]] = {}
    for group, names in GROUPS:
        picked = [by_category.get(n, (0, 0)) for n in names]
        totals[group] = (sum(c for c, _ in picked), sum(a for _, a in picked))
    return totals


def summary_line(bank_id: str, business_date: str, doc: Mapping[str, Any]) -> str:
    """``daily report BNI 2026-12-02: matched 12 (IDR 4440000) | mismatched 1 (IDR 363500) | ...``;
    unmatched breaks are listed per kind because the two kinds mean different work."""
    totals = report_totals(doc)
    parts = [f"{group} {count} (IDR {amount})" for group, (count, amount) in totals.items()]
    kinds = _unmatched_kinds(doc)
    if kinds:
        parts[2] += " [" + ", ".join(f"{k} {v}" for k, v in kinds) + "]"
    return f"daily report {bank_id} {business_date}: " + " | ".join(parts)


def _unmatched_kinds(doc: Mapping[str, Any]) -> list[tuple[str, int]]:
    categories = doc.get("categories")
    wanted = dict(GROUPS)["unmatched"]
    found = []
    for line in categories if isinstance(categories, list) else ():
        if isinstance(line, Mapping) and line.get("category") in wanted and _int(line.get("decisions")):
            found.append((str(line["category"]), _int(line.get("decisions"))))
    return sorted(found)


__all__ = ["GROUPS", "report_totals", "summary_line"]
