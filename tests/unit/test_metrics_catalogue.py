"""Every metric in services/metrics.py is in the README's metrics table, as defined, with bounded labels only."""

from __future__ import annotations

import re

import pytest
from prometheus_client.metrics import MetricWrapperBase

from services import metrics
from services.config import REPO_ROOT

# Values of these are configured ids, enum members, reason codes or partition numbers: never a person.
ALLOWED_LABELS = {
    "stage", "topic", "partition", "office", "bank", "partner", "reason", "outcome", "kind", "api",
    "endpoint", "status", "type", "model", "format", "result", "submitter", "age", "phase", "collection",
}  # fmt: skip

ROW = re.compile(r"^\|\s*`(?P<name>sinergi_[a-z0-9_]+)`\s*\|\s*(?P<type>[a-z]+)\s*\|\s*(?P<labels>[^|]*)\|")


def defined() -> dict[str, MetricWrapperBase]:
    out = {}
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            # prometheus_client keeps a counter's name without the _total it exposes
            name = value._name + ("_total" if value._type == "counter" else "")
            out[name] = value
    return out


def documented() -> dict[str, tuple[str, tuple[str, ...]]]:
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n### Metrics\n", 1)[1].split("\n### ", 1)[0]
    rows: dict[str, tuple[str, tuple[str, ...]]] = {}
    for line in section.splitlines():
        m = ROW.match(line)
        if m:
            labels = tuple(x.strip() for x in m["labels"].split(",") if x.strip() not in ("", "—"))
            assert m["name"] not in rows, f"{m['name']} is in the README table twice"
            rows[m["name"]] = (m["type"], labels)
    return rows


def test_the_readme_table_is_found() -> None:
    assert len(documented()) >= 10


def test_every_defined_metric_is_in_the_readme_table_as_defined() -> None:
    table = documented()
    missing = sorted(set(defined()) - set(table))
    assert not missing, f"add these to README.md, ### Metrics: {missing}"
    for name, metric in defined().items():
        assert table[name] == (metric._type, tuple(metric._labelnames)), f"README row of {name} differs"


def test_the_readme_lists_no_metric_that_does_not_exist() -> None:
    assert not sorted(set(documented()) - set(defined()))


@pytest.mark.parametrize("name", sorted(defined()))
def test_labels_are_bounded(name: str) -> None:
    metric = defined()[name]
    assert set(metric._labelnames) <= ALLOWED_LABELS, f"{name}: {set(metric._labelnames) - ALLOWED_LABELS}"


@pytest.mark.parametrize("name", sorted(defined()))
def test_names_follow_the_convention(name: str) -> None:
    assert re.fullmatch(r"sinergi_[a-z0-9_]+", name)


# --- the business gauge's source: the bank read model's counts by status ----------------------------------------
def test_member_book_counts_by_status_follow_versions_and_tombstones() -> None:
    from test_member_book import record

    from connectors.bank.member_book import MemberBook
    from services.domain.models import MemberStatus

    book = MemberBook()
    assert book.count_by_status() == dict.fromkeys(MemberStatus, 0)
    book.apply(record(1))
    book.apply(record(2, status=MemberStatus.ACTIVE, paid_amount_idr=370_000))
    assert not book.apply(record(1))  # an older version changes nothing
    other = "223456789012345678"
    book.apply(record(1, participant_id=other, customer_no=other, record_id=f"{other}:1"))
    counts = book.count_by_status()
    assert counts[MemberStatus.ACTIVE] == 1 and counts[MemberStatus.AWAITING_PAYMENT] == 1
    assert sum(counts.values()) == len(book)
    book.forget(other)
    book.forget("999")  # unknown: nothing to take away
    assert book.count_by_status()[MemberStatus.AWAITING_PAYMENT] == 0
    assert sum(book.count_by_status().values()) == len(book) == 1
