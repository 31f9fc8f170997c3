"""Statement reconciliation per bank (domain.md 4.7 and 7.3 "Reconciliation"): notifications against entries.

A :class:`BankLedger` is the state of one bank (a Faust table value: ``ledger.to_json()`` and
``BankLedger.from_json(that)`` round-trip exactly). Three pure functions move it forward, each returning a
:class:`Step` with the new ledger and the :class:`Decision` records it caused; the input ledger is never
modified, and the same inputs in the same order give the same decisions with the same ids.

* :func:`apply_payment` -- a ``Payment`` (the normalized SNAP notification);
* :func:`apply_entry` -- a ``StatementEntry`` (any statement format);
* :func:`close_day` -- the bank's statement for a WIB business date is complete (it arrived, or the grace
  of :func:`due_closures` ran out).

Rules, in the order of domain.md 7.3:

1. **Reference** (at once, in any arrival order): an entry's ``bank_ref``, ``end_to_end_id`` or
   ``customer_ref`` equals the payment's ``payment_request_id`` or ``partner_reference_no`` (trimmed, case
   ignored; placeholders such as ``NOTPROVIDED`` never match). Equal amounts: ``MATCHED_BY_REF``; otherwise
   ``AMOUNT_MISMATCH`` with ``difference`` = statement minus notified.
2. **VA + amount + date**: the payment's VA number (digits) or customer number is a whole digit run in the
   entry's references or narrative, the amounts are equal, and the entry's value date (booking date when it
   has none) is within one day of the payment's WIB date: ``MATCHED_BY_VA_AMOUNT_DATE``. This weaker rule
   waits until the day of the item closes, so that a reference match arriving later the same day wins
   whatever the arrival order; an item arriving for a day already closed is matched at once.
3. When a day closes, a notification of that WIB date still without an entry is ``NOTIFIED_NOT_ON_STATEMENT``
   and a credit entry booked that day still without a notification is ``ON_STATEMENT_NOT_NOTIFIED``.

Amounts are compared exactly in the entry's currency: the payment's original amount when the currencies
are equal (an MYR entry against an MYR payment), its integer rupiah when the entry is in IDR (a bank that
collected MYR but credits an IDR account). Any other currency pair never matches by VA, and a reference
match across it is an ``AMOUNT_MISMATCH`` with detail ``CURRENCY_DIFFERS`` and no difference.

A debit entry (a correction, a reversal, or any debit) that takes back a notified payment is a
``REVERSAL``: it names the payment's reference, or the bank reference of the credit that matched it, or
repeats that credit's customer reference with its amount, or carries its VA with its amount. A debit that
takes back nothing (a bank fee) causes no decision; one that arrives before its payment waits for it. A
credit with a correction or reversal status reverses a debit, not a payment, and is left alone.

Late facts are first-class (domain.md 4.5: late and duplicate notifications are expected): a notification
or an entry that pairs with an item whose break already stands produces the match with ``resolves`` naming
that break's decision id; :func:`effective` drops resolved breaks. The same event id, entry id, or the same
bank transaction uploaded again in another format (same account, bank reference, direction, amount,
currency and booking date), is a duplicate: ``Step.duplicate`` and no decision.

Decision ids are UUIDv5 of (kind, bank, payment event id, entry id). Decisions carry ids, codes and
amounts only, never a name, an account or a VA number.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum
from typing import Annotated, Any, Self

from pydantic import BaseModel, ConfigDict, Field, SkipValidation, model_validator

from services.domain.dates import WIB, require_aware, wib_date
from services.domain.identity import PARTNER_SERVICE_ID_LEN, event_uuid
from services.domain.layered_map import LayeredMap, RefIndexedMap
from services.domain.models import EntryDetailStatus, EntryDirection, Payment, Reversal, StatementEntry

IDR = "IDR"
# a bank that sends no statement by noon WIB the next day is closed without one (the stage may configure it)
DEFAULT_CLOSE_GRACE = timedelta(hours=12)
# A shorter digit run in a reference or narrative is too likely to be an amount or a date to stand for a VA.
MIN_VA_DIGITS = 10
DATE_WINDOW_DAYS = 1

_PLACEHOLDER_REFS = frozenset({"NOTPROVIDED", "NONREF", "NONE", "NULL", "N/A", "NA", "-"})
_DIGITS = re.compile(r"[0-9]+")
_WORDS = re.compile(r"[0-9A-Z_\-]+")
_CORRECTIONS = frozenset({EntryDetailStatus.ERROR_CORRECTION, EntryDetailStatus.REVERSAL})
_ONE = Decimal(1)


class DecisionKind(StrEnum):
    """Stable decision kinds. Add kinds; never rename one."""

    MATCHED_BY_REF = "MATCHED_BY_REF"
    MATCHED_BY_VA_AMOUNT_DATE = "MATCHED_BY_VA_AMOUNT_DATE"
    AMOUNT_MISMATCH = "AMOUNT_MISMATCH"
    NOTIFIED_NOT_ON_STATEMENT = "NOTIFIED_NOT_ON_STATEMENT"
    ON_STATEMENT_NOT_NOTIFIED = "ON_STATEMENT_NOT_NOTIFIED"
    REVERSAL = "REVERSAL"


MATCHES = frozenset({DecisionKind.MATCHED_BY_REF, DecisionKind.MATCHED_BY_VA_AMOUNT_DATE})
BREAKS = frozenset(set(DecisionKind) - MATCHES)


class Detail(StrEnum):
    """Stable sub-reasons in ``Decision.detail``."""

    AMOUNT_DIFFERS = "AMOUNT_DIFFERS"
    CURRENCY_DIFFERS = "CURRENCY_DIFFERS"
    REVERSED_BY_REF = "REVERSED_BY_REF"
    REVERSED_BY_ENTRY_REF = "REVERSED_BY_ENTRY_REF"
    REVERSED_BY_CUSTOMER_REF = "REVERSED_BY_CUSTOMER_REF"
    REVERSED_BY_VA_AMOUNT = "REVERSED_BY_VA_AMOUNT"


class AgeingBucket(StrEnum):
    D0_1 = "0-1d"
    D2_3 = "2-3d"
    D4_7 = "4-7d"
    OVER_7 = ">7d"


def ageing_days(business_date: date, now: datetime) -> int:
    """Whole WIB days from ``business_date`` to ``now`` (0 on the day itself, never negative)."""
    return max((wib_date(now) - business_date).days, 0)


def ageing_bucket(days: int) -> AgeingBucket:
    """0-1 d, 2-3 d, 4-7 d, >7 d."""
    if days < 0:
        raise ValueError("ageing days cannot be negative")
    if days <= 1:
        return AgeingBucket.D0_1
    if days <= 3:
        return AgeingBucket.D2_3
    if days <= 7:
        return AgeingBucket.D4_7
    return AgeingBucket.OVER_7


_FIELDS_SETS: dict[frozenset[str], set[str]] = {}
_NO_KEYS: frozenset[str] = frozenset()


def _keys(values: Iterable[str]) -> frozenset[str]:
    """A derived key set; the empty one shared (a ledger holds many, 216 bytes each)."""
    found = frozenset(values)
    return found if found else _NO_KEYS


def _few(values: Iterable[str]) -> tuple[str, ...]:
    """A payment's derived keys (one to three): a tuple is 56-72 bytes where a frozenset is 216, and a ledger
    holds a settled payment for 8 days. Sorted, so equal payments derive equal tuples."""
    return tuple(sorted(set(values)))


# What the "before" validators derive, taken as it is (validating would copy each, and lose the shared empty set).
_Derived = Annotated[frozenset[str], SkipValidation]
_DerivedFew = Annotated[tuple[str, ...], SkipValidation]


def _share_fields_set(model: BaseModel) -> None:
    # Pydantic gives every instance its own set of the field names it was given (728 bytes for 13 names) and a
    # ledger holds two models per settled payment for 8 days. Instances given the same names share one set:
    # it is never changed in place (these models are frozen, and model_copy copies it before adding names).
    names = model.__pydantic_fields_set__
    object.__setattr__(model, "__pydantic_fields_set__", _FIELDS_SETS.setdefault(frozenset(names), names))


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    def model_post_init(self, context: Any, /) -> None:
        _share_fields_set(self)

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        copied = super().model_copy(update=update, deep=deep)
        _share_fields_set(copied)
        return copied


class Decision(_Frozen):
    """One reconciliation outcome. ``business_date`` is the payment's WIB date when a payment is involved
    (except a REVERSAL, which belongs to the day its debit was booked), else the entry's booking date.

    ``notified_*`` describe the payment (original amount and currency), ``statement_*`` the entry;
    ``difference`` is statement minus notified in the statement currency (mismatches and partial
    reversals only). ``amount_idr`` is the rupiah value: the payment's integer rupiah when a payment is
    involved (for a partial reversal of an IDR debit, the debit), an IDR entry's amount otherwise, None for a
    foreign-currency entry that no payment explains.
    """

    decision_id: str
    kind: DecisionKind
    bank_id: str
    business_date: date
    payment_event_id: str | None = None
    entry_id: str | None = None
    participant_id: str | None = None
    notified_amount: Decimal | None = None
    notified_currency: str | None = None
    statement_amount: Decimal | None = None
    statement_currency: str | None = None
    difference: Decimal | None = None
    amount_idr: int | None = None
    ageing_days: int | None = None
    ageing_bucket: AgeingBucket | None = None
    resolves: tuple[str, ...] = ()
    detail: str = ""
    decided_at: datetime

    def age(self, now: datetime) -> int:
        """Ageing of this decision's business date at ``now`` (for re-ageing a standing break)."""
        return ageing_days(self.business_date, now)


class NotifiedPayment(_Frozen):
    """What the ledger keeps of a notification."""

    event_id: str
    participant_id: str
    virtual_account_no: str
    payment_request_id: str
    partner_reference_no: str | None = None
    amount_idr: int
    original_amount: Decimal
    original_currency: str
    trx_time: datetime
    business_date: date
    break_id: str | None = None  # the NOTIFIED_NOT_ON_STATEMENT decision while it stands
    # derived on validation (never serialized): what the open items' reference index and the VA rules look up
    ref_keys: _DerivedFew = Field(default=(), exclude=True)
    va_tokens: _DerivedFew = Field(default=(), exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _derive(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        keys = {_ref(data.get("payment_request_id")), _ref(data.get("partner_reference_no"))}
        va, pid = data.get("virtual_account_no"), data.get("participant_id")
        tokens = {pid} if isinstance(pid, str) else set()
        if isinstance(va, str):
            tokens |= {"".join(va.split()), va[PARTNER_SERVICE_ID_LEN:].strip()}
        return {
            **data,
            "ref_keys": _few(k for k in keys if k),
            "va_tokens": _few(t for t in tokens if len(t) >= MIN_VA_DIGITS and t.isdigit()),
        }

    @classmethod
    def of(cls, payment: Payment) -> NotifiedPayment:
        return cls(
            event_id=payment.event_id,
            participant_id=payment.participant_id,
            virtual_account_no=payment.virtual_account_no,
            payment_request_id=payment.payment_request_id,
            partner_reference_no=payment.partner_reference_no,
            amount_idr=payment.amount_idr,
            original_amount=payment.original_amount,
            original_currency=payment.original_currency,
            trx_time=payment.trx_time,
            business_date=wib_date(payment.trx_time),
        )


class BookedEntry(_Frozen):
    """What the ledger keeps of a statement entry."""

    entry_id: str
    account_ref: str
    booking_date: date
    value_date: date | None = None
    direction: EntryDirection
    detail_status: EntryDetailStatus
    amount: Decimal
    currency: str
    bank_ref: str | None = None
    end_to_end_id: str | None = None
    customer_ref: str | None = None
    narrative: str | None = None
    break_id: str | None = None  # the ON_STATEMENT_NOT_NOTIFIED decision while it stands
    # derived on validation, never serialized: references, digit runs long enough for a VA, and the
    # references plus narrative words (a correction names the transaction it corrects in its narrative)
    ref_keys: _Derived = Field(default=_NO_KEYS, exclude=True)
    digit_runs: _Derived = Field(default=_NO_KEYS, exclude=True)
    words: _Derived = Field(default=_NO_KEYS, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _derive(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        texts = [data.get(k) for k in ("bank_ref", "end_to_end_id", "customer_ref")]
        refs = _keys(k for k in map(_ref, texts) if k)
        narrative = data.get("narrative")
        runs = {run for t in [*texts, narrative] if isinstance(t, str) for run in _DIGITS.findall(t)}
        words = set(refs)
        if isinstance(narrative, str):
            words |= {w for w in _WORDS.findall(narrative.upper()) if w not in _PLACEHOLDER_REFS}
        return {
            **data,
            "ref_keys": refs,
            "digit_runs": _keys(r for r in runs if len(r) >= MIN_VA_DIGITS),
            "words": _keys(words),
        }

    @classmethod
    def of(cls, entry: StatementEntry) -> BookedEntry:
        return cls(
            entry_id=entry.entry_id,
            account_ref=entry.account_ref,
            booking_date=entry.booking_date,
            value_date=entry.value_date,
            direction=entry.direction,
            detail_status=entry.detail_status,
            amount=entry.amount,
            currency=entry.currency,
            bank_ref=entry.bank_ref,
            end_to_end_id=entry.end_to_end_id,
            customer_ref=entry.customer_ref,
            narrative=entry.narrative,
        )

    @property
    def match_date(self) -> date:
        return self.value_date or self.booking_date


class SettledCredit(_Frozen):
    """What a reversal needs of the credit that settled a payment: its references and its money. A ledger
    holds one per settled payment for 8 days, so not the whole entry (a third of the memory per pair)."""

    model_config = ConfigDict(frozen=True, extra="ignore")  # a settlement stored with the whole entry still loads

    entry_id: str
    bank_ref: str | None = None
    customer_ref: str | None = None
    amount: Decimal
    currency: str

    @classmethod
    def of(cls, entry: BookedEntry) -> SettledCredit:
        return cls(
            entry_id=entry.entry_id,
            bank_ref=entry.bank_ref,
            customer_ref=entry.customer_ref,
            amount=entry.amount,
            currency=entry.currency,
        )


class Settlement(_Frozen):
    """A notification tied to its credit entry (matched or mismatched); kept so a later debit can reverse it."""

    payment: NotifiedPayment
    entry: SettledCredit
    decision_id: str


class BankLedger(_Frozen):
    """A bank's ledger. A step's ledger holds :class:`LayeredMap` objects where the fields say dict (set without
    validation, by ``model_copy``): they read, compare and serialize (``to_json``) as the dicts they stand for."""

    bank_id: str
    open_payments: dict[str, NotifiedPayment] = Field(default_factory=dict)  # without an entry, by event id
    open_entries: dict[str, BookedEntry] = Field(default_factory=dict)  # credits without a payment, by entry id
    debits: dict[str, BookedEntry] = Field(default_factory=dict)  # debits that took back no payment (yet)
    settled: dict[str, Settlement] = Field(default_factory=dict)  # by payment event id
    reversed: dict[str, str] = Field(default_factory=dict)  # payment event id -> REVERSAL decision id
    seen_events: dict[str, date] = Field(default_factory=dict)  # payment event id -> business date
    seen_entries: dict[str, date] = Field(default_factory=dict)  # entry id and fingerprint -> booking date
    closed_days: tuple[date, ...] = ()  # ascending

    @classmethod
    def empty(cls, bank_id: str) -> BankLedger:
        return cls(bank_id=bank_id)

    def is_closed(self, business_date: date) -> bool:
        return business_date in self.closed_days

    def to_json(self) -> dict[str, Any]:
        plain = {name: dict(value) for name, value in self.__dict__.items() if isinstance(value, LayeredMap)}
        return self.model_copy(update=plain).model_dump(mode="json")

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BankLedger:
        return cls.model_validate(data)


@dataclass(frozen=True)
class Step:
    ledger: BankLedger
    decisions: tuple[Decision, ...] = ()
    duplicate: bool = False


# --- references ---------------------------------------------------------------------------------------


def _ref(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    text = value.strip().upper()
    return None if not text or text in _PLACEHOLDER_REFS else text


def _expected_in(p: NotifiedPayment, currency: str) -> Decimal | None:
    """The payment's amount in ``currency``, or None when the two cannot be compared."""
    if currency == p.original_currency:
        return p.original_amount
    if currency == IDR:
        return Decimal(p.amount_idr)
    return None


def _same_amount(p: NotifiedPayment, e: BookedEntry) -> bool:
    return _expected_in(p, e.currency) == e.amount


def _va_fits(p: NotifiedPayment, e: BookedEntry) -> bool:
    return (
        _same_amount(p, e)
        and abs((e.match_date - p.business_date).days) <= DATE_WINDOW_DAYS
        and not e.digit_runs.isdisjoint(p.va_tokens)
    )


def _idr_of_entry(e: BookedEntry) -> int | None:
    if e.currency != IDR:
        return None
    return int(e.amount.quantize(_ONE, rounding=ROUND_HALF_UP))


def _is_collection(e: BookedEntry) -> bool:
    return e.direction is EntryDirection.CREDIT and e.detail_status not in _CORRECTIONS


def _fingerprint(entry: StatementEntry) -> str | None:
    """The same bank transaction in another upload format (camt.054 intraday, then MT940 at day end) has
    another entry id (the id includes the source) but the same account, bank reference and amounts."""
    ref = _ref(entry.bank_ref)
    if ref is None:
        return None
    return event_uuid(
        "statement-entry-fp",
        entry.bank_id,
        entry.account_ref,
        entry.direction.value,
        str(entry.amount),
        entry.currency,
        entry.booking_date.isoformat(),
        ref,
    )


def _decision_id(kind: DecisionKind, bank_id: str, payment_event_id: str | None, entry_id: str | None) -> str:
    return event_uuid("statement-match", kind.value, bank_id, payment_event_id or "-", entry_id or "-")


# --- the working copy ---------------------------------------------------------------------------------


class _Work:
    """Copies of the ledger's collections to write to (layered: a fork, not a copy, for the large ones); items
    are frozen, so the input ledger stays untouched."""

    def __init__(self, ledger: BankLedger, now: datetime) -> None:
        self.ledger = ledger
        self.bank_id = ledger.bank_id
        self.now = now
        # Open items are layered too, and indexed by reference key: a reference match looks its keys up.
        self.open_payments = RefIndexedMap.over(ledger.open_payments)
        self.open_entries = RefIndexedMap.over(ledger.open_entries)
        self.debits = dict(ledger.debits)
        # These three grow with every input for the days kept: layered, so a step does not copy them whole.
        self.settled = LayeredMap.over(ledger.settled)
        self.reversed = dict(ledger.reversed)
        self.seen_events = LayeredMap.over(ledger.seen_events)
        self.seen_entries = LayeredMap.over(ledger.seen_entries)
        self.closed = set(ledger.closed_days)
        self.decisions: list[Decision] = []

    def freeze(self) -> Step:
        ledger = self.ledger.model_copy(
            update={
                "open_payments": self.open_payments,
                "open_entries": self.open_entries,
                "debits": self.debits,
                "settled": self.settled,
                "reversed": self.reversed,
                "seen_events": self.seen_events,
                "seen_entries": self.seen_entries,
                "closed_days": tuple(sorted(self.closed)),
            }
        )
        return Step(ledger, tuple(self.decisions))

    def _ageing(self, business_date: date) -> dict[str, Any]:
        days = ageing_days(business_date, self.now)
        return {"ageing_days": days, "ageing_bucket": ageing_bucket(days)}

    # candidates --------------------------------------------------------------------------------------

    def ref_entry_for(self, p: NotifiedPayment) -> BookedEntry | None:
        found = self.open_entries.with_ref(p.ref_keys)
        return min(found, key=lambda e: _entry_rank(p, e), default=None)

    def ref_payment_for(self, e: BookedEntry) -> NotifiedPayment | None:
        found = self.open_payments.with_ref(e.ref_keys)
        return min(found, key=lambda p: _payment_rank(p, e), default=None)

    def va_entry_for(self, p: NotifiedPayment, index: dict[str, list[str]] | None = None) -> BookedEntry | None:
        """``index`` (digit run -> entry ids, see :meth:`entry_index`) narrows the scan during a close."""
        if index is None:
            pool: Iterable[BookedEntry] = self.open_entries.values()
        else:
            ids = {i for t in p.va_tokens for i in index.get(t, ())}
            pool = [e for i in ids if (e := self.open_entries.get(i)) is not None]
        found = [e for e in pool if _va_fits(p, e)]
        return min(found, key=lambda e: _entry_rank(p, e), default=None)

    def va_payment_for(self, e: BookedEntry, index: dict[str, list[str]] | None = None) -> NotifiedPayment | None:
        if index is None:
            pool: Iterable[NotifiedPayment] = self.open_payments.values()
        else:
            ids = {i for t in e.digit_runs for i in index.get(t, ())}
            pool = [p for i in ids if (p := self.open_payments.get(i)) is not None]
        found = [p for p in pool if _va_fits(p, e)]
        return min(found, key=lambda p: _payment_rank(p, e), default=None)

    def entry_index(self) -> dict[str, list[str]]:
        index: dict[str, list[str]] = {}
        for e in self.open_entries.values():
            for run in e.digit_runs:
                index.setdefault(run, []).append(e.entry_id)
        return index

    def payment_index(self) -> dict[str, list[str]]:
        index: dict[str, list[str]] = {}
        for p in self.open_payments.values():
            for token in p.va_tokens:
                index.setdefault(token, []).append(p.event_id)
        return index

    # outcomes ----------------------------------------------------------------------------------------

    def settle(self, p: NotifiedPayment, e: BookedEntry, *, by_ref: bool) -> None:
        expected = _expected_in(p, e.currency)
        if not by_ref:
            kind, detail, difference = DecisionKind.MATCHED_BY_VA_AMOUNT_DATE, "", None
        elif expected == e.amount:
            kind, detail, difference = DecisionKind.MATCHED_BY_REF, "", None
        elif expected is None:
            kind, detail, difference = DecisionKind.AMOUNT_MISMATCH, Detail.CURRENCY_DIFFERS.value, None
        else:
            kind, detail, difference = DecisionKind.AMOUNT_MISMATCH, Detail.AMOUNT_DIFFERS.value, e.amount - expected
        decision_id = _decision_id(kind, self.bank_id, p.event_id, e.entry_id)
        ageing = self._ageing(p.business_date) if kind in BREAKS else {}
        self.decisions.append(
            Decision(
                decision_id=decision_id,
                kind=kind,
                bank_id=self.bank_id,
                business_date=p.business_date,
                payment_event_id=p.event_id,
                entry_id=e.entry_id,
                participant_id=p.participant_id,
                notified_amount=p.original_amount,
                notified_currency=p.original_currency,
                statement_amount=e.amount,
                statement_currency=e.currency,
                difference=difference,
                amount_idr=p.amount_idr,
                resolves=tuple(b for b in (p.break_id, e.break_id) if b),
                detail=detail,
                decided_at=self.now,
                **ageing,
            )
        )
        self.open_payments.pop(p.event_id, None)
        self.open_entries.pop(e.entry_id, None)
        clean_p = p if p.break_id is None else p.model_copy(update={"break_id": None})  # most never had a break
        self.settled[p.event_id] = Settlement(payment=clean_p, entry=SettledCredit.of(e), decision_id=decision_id)
        self.reverse_pending(clean_p)

    def break_payment(self, p: NotifiedPayment) -> None:
        kind = DecisionKind.NOTIFIED_NOT_ON_STATEMENT
        decision_id = _decision_id(kind, self.bank_id, p.event_id, None)
        self.decisions.append(
            Decision(
                decision_id=decision_id,
                kind=kind,
                bank_id=self.bank_id,
                business_date=p.business_date,
                payment_event_id=p.event_id,
                participant_id=p.participant_id,
                notified_amount=p.original_amount,
                notified_currency=p.original_currency,
                amount_idr=p.amount_idr,
                decided_at=self.now,
                **self._ageing(p.business_date),
            )
        )
        self.open_payments[p.event_id] = p.model_copy(update={"break_id": decision_id})

    def break_entry(self, e: BookedEntry) -> None:
        kind = DecisionKind.ON_STATEMENT_NOT_NOTIFIED
        decision_id = _decision_id(kind, self.bank_id, None, e.entry_id)
        self.decisions.append(
            Decision(
                decision_id=decision_id,
                kind=kind,
                bank_id=self.bank_id,
                business_date=e.booking_date,
                entry_id=e.entry_id,
                statement_amount=e.amount,
                statement_currency=e.currency,
                amount_idr=_idr_of_entry(e),
                decided_at=self.now,
                **self._ageing(e.booking_date),
            )
        )
        self.open_entries[e.entry_id] = e.model_copy(update={"break_id": decision_id})

    # reversals ---------------------------------------------------------------------------------------

    def _reversal_rule(self, p: NotifiedPayment, debit: BookedEntry) -> Detail | None:
        words = debit.words
        if not words.isdisjoint(p.ref_keys):
            return Detail.REVERSED_BY_REF
        settlement = self.settled.get(p.event_id)
        credit = settlement.entry if settlement else None
        if credit is not None:
            credit_ref = _ref(credit.bank_ref)
            if credit_ref and credit_ref in words:
                return Detail.REVERSED_BY_ENTRY_REF
            customer_ref = _ref(credit.customer_ref)
            same_money = credit.amount == debit.amount and credit.currency == debit.currency
            if customer_ref and customer_ref == _ref(debit.customer_ref) and same_money:
                return Detail.REVERSED_BY_CUSTOMER_REF
        if (
            _same_amount(p, debit)
            and debit.match_date >= p.business_date - timedelta(days=DATE_WINDOW_DAYS)
            and not debit.digit_runs.isdisjoint(p.va_tokens)
        ):
            return Detail.REVERSED_BY_VA_AMOUNT
        return None

    def _reversible(self) -> list[NotifiedPayment]:
        payments = [s.payment for s in self.settled.values()] + list(self.open_payments.values())
        return [p for p in payments if p.event_id not in self.reversed]

    def reverse_with(self, debit: BookedEntry) -> bool:
        """Tie a debit to the payment it takes back; the strongest rule wins, then the nearest payment."""
        found = []
        for p in self._reversible():
            rule = self._reversal_rule(p, debit)
            if rule is not None:
                found.append((_REVERSAL_STRENGTH[rule], _payment_rank(p, debit), rule, p))
        if not found:
            return False
        _, _, rule, p = min(found, key=lambda f: (f[0], f[1]))
        self.reverse(p, debit, rule)
        return True

    def reverse_pending(self, p: NotifiedPayment) -> None:
        """A debit that arrived before the payment (or before the credit it names) applies now."""
        if p.event_id in self.reversed:
            return
        found = []
        for debit in self.debits.values():
            rule = self._reversal_rule(p, debit)
            if rule is not None:
                found.append((_REVERSAL_STRENGTH[rule], debit.booking_date, debit.entry_id, rule, debit))
        if found:
            *_, rule, debit = min(found, key=lambda f: (f[0], f[1], f[2]))
            self.reverse(p, debit, rule)

    def reverse(self, p: NotifiedPayment, debit: BookedEntry, rule: Detail) -> None:
        kind = DecisionKind.REVERSAL
        decision_id = _decision_id(kind, self.bank_id, p.event_id, debit.entry_id)
        expected = _expected_in(p, debit.currency)
        full = expected == debit.amount
        difference = None if full or expected is None else debit.amount - expected
        self.decisions.append(
            Decision(
                decision_id=decision_id,
                kind=kind,
                bank_id=self.bank_id,
                business_date=debit.booking_date,
                payment_event_id=p.event_id,
                entry_id=debit.entry_id,
                participant_id=p.participant_id,
                notified_amount=p.original_amount,
                notified_currency=p.original_currency,
                statement_amount=debit.amount,
                statement_currency=debit.currency,
                difference=difference,
                amount_idr=p.amount_idr if full else _idr_of_entry(debit),
                detail=rule.value,
                decided_at=self.now,
                **self._ageing(debit.booking_date),
            )
        )
        self.debits.pop(debit.entry_id, None)
        self.reversed[p.event_id] = decision_id


_REVERSAL_STRENGTH = {
    Detail.REVERSED_BY_REF: 0,
    Detail.REVERSED_BY_ENTRY_REF: 0,
    Detail.REVERSED_BY_CUSTOMER_REF: 1,
    Detail.REVERSED_BY_VA_AMOUNT: 2,
}


def _entry_rank(p: NotifiedPayment, e: BookedEntry) -> tuple[bool, int, date, str]:
    return (not _same_amount(p, e), abs((e.match_date - p.business_date).days), e.booking_date, e.entry_id)


def _payment_rank(p: NotifiedPayment, e: BookedEntry) -> tuple[bool, int, datetime, str]:
    return (not _same_amount(p, e), abs((e.match_date - p.business_date).days), p.trx_time, p.event_id)


def _check_bank(ledger: BankLedger, bank_id: str) -> None:
    if ledger.bank_id != bank_id:
        raise ValueError("record belongs to another bank than the ledger")


# --- the public steps ---------------------------------------------------------------------------------


def apply_payment(ledger: BankLedger, payment: Payment, *, now: datetime | None = None) -> Step:
    """Take in one notification. ``now`` (default: the notification's ``received_at``) ages any break."""
    _check_bank(ledger, payment.bank_id)
    if payment.event_id in ledger.seen_events:
        return Step(ledger, duplicate=True)
    work = _Work(ledger, require_aware(now or payment.received_at, "now"))
    p = NotifiedPayment.of(payment)
    work.seen_events[p.event_id] = p.business_date
    entry = work.ref_entry_for(p)
    if entry is not None:
        work.settle(p, entry, by_ref=True)
    elif p.business_date in work.closed:
        entry = work.va_entry_for(p)
        if entry is not None:
            work.settle(p, entry, by_ref=False)
        else:
            work.break_payment(p)
    else:
        work.open_payments[p.event_id] = p
    work.reverse_pending(p)
    return work.freeze()


def apply_entry(ledger: BankLedger, entry: StatementEntry, *, now: datetime | None = None) -> Step:
    """Take in one statement entry. ``now`` (default: the entry's ``imported_at``) ages any break."""
    _check_bank(ledger, entry.bank_id)
    fingerprint = _fingerprint(entry)
    if entry.entry_id in ledger.seen_entries or (fingerprint is not None and fingerprint in ledger.seen_entries):
        return Step(ledger, duplicate=True)
    work = _Work(ledger, require_aware(now or entry.imported_at, "now"))
    e = BookedEntry.of(entry)
    work.seen_entries[e.entry_id] = e.booking_date
    if fingerprint is not None:
        work.seen_entries[fingerprint] = e.booking_date
    if e.direction is EntryDirection.DEBIT:
        if not work.reverse_with(e):
            work.debits[e.entry_id] = e
    elif _is_collection(e):
        p = work.ref_payment_for(e)
        if p is not None:
            work.settle(p, e, by_ref=True)
        elif e.booking_date in work.closed:
            p = work.va_payment_for(e)
            if p is not None:
                work.settle(p, e, by_ref=False)
            else:
                work.break_entry(e)
        else:
            work.open_entries[e.entry_id] = e
    return work.freeze()


def close_day(ledger: BankLedger, bank: str, business_date: date, now: datetime) -> Step:
    """The statement for ``business_date`` is complete: VA matches for the day's open items, then a break for
    every notification of that WIB date and every credit booked that day still alone. Closing twice is a
    no-op; items arriving for a closed day are decided on arrival."""
    _check_bank(ledger, bank)
    if ledger.is_closed(business_date):
        return Step(ledger)
    work = _Work(ledger, require_aware(now, "now"))
    work.closed.add(business_date)
    payments = [p for p in work.open_payments.values() if p.business_date == business_date and not p.break_id]
    # settle() removes matched items from the open dicts, so a stale id in an index is skipped on lookup
    entry_index = work.entry_index()
    for p in sorted(payments, key=lambda p: (p.trx_time, p.event_id)):
        entry = work.va_entry_for(p, entry_index)
        if entry is not None:
            work.settle(p, entry, by_ref=False)
    payment_index = work.payment_index()
    entries = [e for e in work.open_entries.values() if e.booking_date == business_date and not e.break_id]
    for e in sorted(entries, key=lambda e: (e.match_date, e.entry_id)):
        partner = work.va_payment_for(e, payment_index)
        if partner is not None:
            work.settle(partner, e, by_ref=False)
    for p in sorted(work.open_payments.values(), key=lambda p: (p.trx_time, p.event_id)):
        if p.business_date == business_date and not p.break_id:
            work.break_payment(p)
    for e in sorted(work.open_entries.values(), key=lambda e: (e.match_date, e.entry_id)):
        if e.booking_date == business_date and not e.break_id:
            work.break_entry(e)
    return work.freeze()


def _end_of_day(business_date: date) -> datetime:
    return datetime.combine(business_date + timedelta(days=1), time(0), tzinfo=WIB)


def due_closures(ledger: BankLedger, now: datetime, grace: timedelta = DEFAULT_CLOSE_GRACE) -> tuple[date, ...]:
    """Open business dates with waiting items whose WIB day ended at least ``grace`` before ``now``: the
    bank sent no statement for them in time, so the caller closes them with :func:`close_day`."""
    at = require_aware(now, "now")
    days = {p.business_date for p in ledger.open_payments.values() if not p.break_id}
    days |= {e.booking_date for e in ledger.open_entries.values() if not e.break_id}
    return tuple(sorted(d for d in days if not ledger.is_closed(d) and _end_of_day(d) + grace <= at))


def prune(ledger: BankLedger, keep_from: date) -> BankLedger:
    """Forget closed days before ``keep_from`` (their decisions were emitted): settled payments, standing
    breaks, waiting debits and the ids that detect duplicates. Items of a day not yet closed are kept, so
    nothing is dropped undecided; keep ``keep_from`` older than any redelivery (raw topics keep 7 days)."""

    if not _prunable(ledger, keep_from):
        # The usual tick: nothing is old yet. The same ledger, so the stage writes nothing and its collections stay
        # layered; rebuilding every collection as a dict cost a walk of 8 days of items per bank per tick.
        return ledger

    def old(day: date) -> bool:
        return day < keep_from and ledger.is_closed(day)

    settled = {k: s for k, s in ledger.settled.items() if not old(s.payment.business_date)}
    open_payments = {k: p for k, p in ledger.open_payments.items() if not old(p.business_date)}
    known = settled.keys() | open_payments.keys()
    return ledger.model_copy(
        update={
            "settled": settled,
            "open_payments": open_payments,
            "open_entries": {k: e for k, e in ledger.open_entries.items() if not old(e.booking_date)},
            "debits": {k: e for k, e in ledger.debits.items() if e.booking_date >= keep_from},
            "reversed": {k: v for k, v in ledger.reversed.items() if k in known},
            "seen_events": {k: d for k, d in ledger.seen_events.items() if not old(d)},
            "seen_entries": {k: d for k, d in ledger.seen_entries.items() if not old(d)},
            "closed_days": tuple(d for d in ledger.closed_days if d >= keep_from),
        }
    )


def _prunable(ledger: BankLedger, keep_from: date) -> bool:
    """Whether :func:`prune` would drop anything: items go only with a closed day before ``keep_from``, debits
    booked before it, reversals of payments no longer held. Closed days, debits and reversals are few."""
    return (
        any(day < keep_from for day in ledger.closed_days)
        or any(e.booking_date < keep_from for e in ledger.debits.values())
        or any(k not in ledger.settled and k not in ledger.open_payments for k in ledger.reversed)
    )


def reversal_of(decision: Decision) -> Reversal | None:
    """The member reconciler's input a REVERSAL decision stands for (None for any other decision).

    Its event id is the decision id (deterministic: a redelivered decision is the same reversal). The debit's
    amount and currency go with it, so a partial take-back is refused there as an amount mismatch instead of
    putting the member back for money the bank only partly returned.
    """
    if decision.kind is not DecisionKind.REVERSAL or not decision.participant_id or not decision.payment_event_id:
        return None
    has_amount = decision.statement_amount is not None and decision.statement_currency is not None
    return Reversal(
        event_id=decision.decision_id,
        participant_id=decision.participant_id,
        bank_id=decision.bank_id,
        reverses_event_id=decision.payment_event_id,
        amount=decision.statement_amount if has_amount else None,
        currency=decision.statement_currency if has_amount else None,
        received_at=decision.decided_at,
        detail=decision.detail,
    )


def effective(decisions: Iterable[Decision]) -> list[Decision]:
    """Each decision once (a redelivered decision has the same id), without the breaks a later match
    resolved, in first-seen order."""
    unique: dict[str, Decision] = {}
    for decision in decisions:
        unique.setdefault(decision.decision_id, decision)
    resolved = {r for d in unique.values() for r in d.resolves}
    return [d for d in unique.values() if d.decision_id not in resolved]
