"""The statement stage's bank ledgers in a changelog-backed Faust table, one small item per key.

Layout and crash safety are :mod:`services.domain.ledger_items`'s: a step writes its change set to the bank's
journal slot (zlib-compressed JSON: a day's close can change thousands of items), then each changed item. Every
write goes to the changelog partition of the bank's inputs, named by the caller (a batch holds inputs of several
partitions, so Faust's "the current event's partition" would be wrong), through
:class:`services.durable_table.DurableWrites`: the changelog holds them in order and a crash keeps a prefix.
Without ``writes`` (the unit tests) the table mapping itself is written.

The ledger a worker works on lives in memory, rebuilt from the table the first time a bank is needed after
start or a rebalance (the table is recovered by then: Faust pauses agents until recovery is done). A rebuild
writes the journal's items again, because a crash may have kept the journal and only some of them, and the
next step's journal replaces that slot.
"""

from __future__ import annotations

import zlib
from typing import Any

import orjson

from services.domain.ledger_items import Change, changes, journal_key, ledger_from_items, prefix
from services.domain.statement_match import BankLedger
from services.durable_table import DurableWrites


class LedgerTable:
    def __init__(self, table: Any, writes: DurableWrites | None = None) -> None:
        self.table = table  # a faust Table with bytes keys and bytes values
        self.writes = writes
        self._ledgers: dict[str, BankLedger] = {}
        self.rebuilds = 0

    def forget(self) -> None:
        """Drop every ledger held in memory: partitions moved, another worker may have written them."""
        self._ledgers.clear()

    def get(self, bank_id: str, partition: int = 0) -> BankLedger:
        ledger = self._ledgers.get(bank_id)
        if ledger is None:
            ledger = self._rebuild(bank_id, partition)
            self._ledgers[bank_id] = ledger
        return ledger

    def put(self, before: BankLedger, after: BankLedger, partition: int = 0) -> int:
        """Store the items ``after`` changed since ``before``; returns how many items were written."""
        writes = changes(before, after)
        if writes:
            self._set(partition, journal_key(after.bank_id).encode(), zlib.compress(orjson.dumps(writes)))
            self._write(writes, partition)
        self._ledgers[after.bank_id] = after
        return len(writes)

    def _write(self, writes: list[Change], partition: int) -> None:
        for key, value in writes:
            raw = key.encode()
            if value is not None:
                self._set(partition, raw, orjson.dumps(value))
            elif raw in self.table:
                self._set(partition, raw, None)

    def _set(self, partition: int, key: bytes, value: bytes | None) -> None:
        if self.writes is not None:
            self.writes.put(partition, key, value)
        elif value is None:
            del self.table[key]
        else:
            self.table[key] = value

    def _rebuild(self, bank_id: str, partition: int) -> BankLedger:
        self.rebuilds += 1
        head = prefix(bank_id).encode()
        slot = journal_key(bank_id).encode()
        stored = [
            (k.decode(), orjson.loads(v))
            for k, v in self.table.items()
            if k.startswith(head) and k != slot and v is not None
        ]
        packed = self.table.get(slot)
        journal: list[Change] = [(k, v) for k, v in orjson.loads(zlib.decompress(packed))] if packed else []
        self._write(journal, partition)
        return ledger_from_items(bank_id, stored, journal)
