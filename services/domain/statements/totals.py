"""Check parsed entries against the totals and balances the statement itself declares (domain.md 8)."""

from __future__ import annotations

from decimal import Decimal

from services.domain.models import EntryDetailStatus, EntryDirection
from services.domain.statements._common import Discrepancy, ParseResult

# pending and informational camt entries are not booked: they are in no balance or booked total
_NOT_BOOKED = frozenset({EntryDetailStatus.PDNG, EntryDetailStatus.INFO})


def check_totals(result: ParseResult) -> list[str]:
    """Discrepancy codes (empty when everything adds up).

    SNAP ``totalCreditEntries``/``totalDebitEntries`` and camt.053 ``TxsSummry``: count and sum per direction.
    camt.053 OPBD/CLBD and MT940 60F/62F (also SNAP starting/ending balance): opening + credits - debits
    must equal closing. camt.054 declares nothing: NO_DECLARED_TOTALS.
    """
    codes: list[str] = []
    booked = [e for e in result.entries if e.detail_status not in _NOT_BOOKED]
    credits = [e.amount for e in booked if e.direction is EntryDirection.CREDIT]
    debits = [e.amount for e in booked if e.direction is EntryDirection.DEBIT]
    credit_sum, debit_sum = sum(credits, Decimal("0")), sum(debits, Decimal("0"))
    totals, balances = result.totals, result.balances

    if result.errors:
        codes.append(Discrepancy.LINES_REJECTED.value)
    if totals is None and (balances is None or balances.opening is None or balances.closing is None):
        codes.append(Discrepancy.NO_DECLARED_TOTALS.value)
        return codes
    currencies = {e.currency for e in booked}
    if len(currencies) > 1 or (balances is not None and currencies - {balances.currency}):
        codes.append(Discrepancy.CURRENCY_MISMATCH.value)
    if totals is not None:
        if totals.has_more:
            codes.append(Discrepancy.HAS_MORE_PAGES.value)
        if totals.credit_count is not None and totals.credit_count != len(credits):
            codes.append(Discrepancy.CREDIT_COUNT_MISMATCH.value)
        if totals.credit_amount is not None and totals.credit_amount != credit_sum:
            codes.append(Discrepancy.CREDIT_TOTAL_MISMATCH.value)
        if totals.debit_count is not None and totals.debit_count != len(debits):
            codes.append(Discrepancy.DEBIT_COUNT_MISMATCH.value)
        if totals.debit_amount is not None and totals.debit_amount != debit_sum:
            codes.append(Discrepancy.DEBIT_TOTAL_MISMATCH.value)
    if (
        balances is not None
        and balances.opening is not None
        and balances.closing is not None
        and balances.opening + credit_sum - debit_sum != balances.closing
    ):
        codes.append(Discrepancy.BALANCE_MISMATCH.value)
    return codes
