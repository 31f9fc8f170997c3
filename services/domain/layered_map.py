"""A mapping that is cheap to copy: a shared base dict nobody modifies, and a small overlay of its own.

The statement ledger's steps are pure (each returns a new ledger and leaves its input as it was), and its
collections of settled payments and seen ids grow with every input for the 8 days they are kept. Copying them
as dicts on every input made an input cost O(items held): a payment + entry pair took 0.36 ms at 5,000 pairs in
one bank, 1.43 ms at 20,000, and a backlog of a year is far more. A :class:`LayeredMap` is copied with
:meth:`fork`: the base is shared and only the overlay is copied; once the overlay is longer than about the
square root of the base it is folded into a new base. A copy then costs O(√n) entries, amortized.

The stage stores a ledger once per batch, as the items that differ from the ledger before it
(:meth:`changed_keys`). While two maps share a base those are their overlays; a fold records the keys it
folded, so across folds too the difference is known without comparing every item (a batch of 500 inputs folds
each collection several times: walking every item instead made a step, with its share of the batch's store,
cost 0.32 ms at 16,000 payment + entry pairs in one bank and 0.17 ms at 4,000; 0.16 and 0.14 ms now).

Reads see the overlay first; a deletion is a tombstone in the overlay. Iteration is the base's keys in their
order (an overwritten key keeps its place, as in a dict; a deleted and re-set one too, unlike a dict), then the
keys only the overlay has. Nothing in the ledger depends on that order: its choices rank by ids.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping, MutableMapping
from itertools import count
from math import isqrt
from typing import Any, Protocol, Self, TypeVar, cast

K = TypeVar("K")
V = TypeVar("V")

_GONE: Any = object()  # an overlay value: the key was deleted
_MISSING: Any = object()
MIN_OVERLAY = 64  # below this an overlay is never folded: a small base is cheaper copied than layered
FOLDS_KEPT = 16  # folds a map remembers the keys of: changed_keys reaches back this many (a batch of the
# statement stage folds each collection about once per 64-100 inputs, and takes up to 500 inputs)
_base_ids = count()


class LayeredMap(MutableMapping[K, V]):
    __slots__ = ("_base", "_base_id", "_folds", "_top")

    def __init__(self, base: Mapping[K, V] | None = None) -> None:
        self._base: Mapping[K, V] = base if base is not None else {}  # shared with forks: never written
        self._top: dict[K, V] = {}
        # A base is named by a number, not by id(): a freed base's id can be reused by a new one.
        self._base_id = next(_base_ids)
        # (the id of a base this one's base was folded from, the keys that fold changed), oldest first
        self._folds: tuple[tuple[int, tuple[K, ...]], ...] = ()

    @classmethod
    def over(cls, mapping: Mapping[K, V]) -> LayeredMap[K, V]:
        """A private copy of ``mapping`` to write to: a fork of a LayeredMap, else a layer over it."""
        return mapping.fork() if isinstance(mapping, LayeredMap) else cls(mapping)

    def fork(self) -> Self:
        twin = type(self).__new__(type(self))
        if len(self._top) > max(MIN_OVERLAY, isqrt(len(self._base))):
            twin._base, twin._top = self._folded(), {}
            twin._base_id = next(_base_ids)
            twin._folds = (*self._folds, (self._base_id, tuple(self._top)))[-FOLDS_KEPT:]
        else:
            twin._base, twin._top = self._base, dict(self._top)
            twin._base_id, twin._folds = self._base_id, self._folds
        return twin

    def _folded(self) -> dict[K, V]:
        # dict(base) is a copy in C; walking self.items() went through __iter__ and __getitem__ per item.
        merged = dict(self._base)
        for key, value in self._top.items():
            if value is _GONE:
                merged.pop(key, None)
            else:
                merged[key] = value
        return merged

    def changed_keys(self, other: LayeredMap[K, V]) -> list[K] | None:
        """The keys whose value may differ between the two maps, or None when that is not known (compare them
        whole): their overlays while they share a base, and the keys of the folds in between when one's base was
        folded (within the last FOLDS_KEPT folds) from the other's."""
        if self._base_id == other._base_id:
            between: tuple[tuple[int, tuple[K, ...]], ...] = ()
        else:
            found = _folds_since(other, self._base_id)
            if found is None:
                found = _folds_since(self, other._base_id)
            if found is None:
                return None
            between = found
        keys = dict.fromkeys(self._top)
        for _, folded in between:
            keys.update(dict.fromkeys(folded))
        keys.update(dict.fromkeys(other._top))
        return list(keys)

    def __getitem__(self, key: K) -> V:
        value = self._top.get(key, _MISSING)
        if value is _MISSING:
            return self._base[key]
        if value is _GONE:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        value = self._top.get(cast(K, key), _MISSING)
        if value is _MISSING:
            return key in self._base
        return value is not _GONE

    def __setitem__(self, key: K, value: V) -> None:
        self._top[key] = value

    def __delitem__(self, key: K) -> None:
        if key not in self:
            raise KeyError(key)
        self._top[key] = _GONE

    def __iter__(self) -> Iterator[K]:
        top = self._top
        if not top:
            yield from self._base
            return
        for key in self._base:
            if top.get(key, _MISSING) is not _GONE:
                yield key
        for key, value in top.items():
            if value is not _GONE and key not in self._base:
                yield key

    def __len__(self) -> int:
        base = self._base
        added = sum(1 for k, v in self._top.items() if v is not _GONE and k not in base)
        removed = sum(1 for k, v in self._top.items() if v is _GONE and k in base)
        return len(base) + added - removed

    def __repr__(self) -> str:
        return f"LayeredMap({dict(self.items())!r})"


def _folds_since(later: LayeredMap[K, Any], base_id: int) -> tuple[tuple[int, tuple[K, ...]], ...] | None:
    """The folds that led from the base ``base_id`` to ``later``'s base, or None if it is not among them."""
    for i, (folded_from, _) in enumerate(later._folds):
        if folded_from == base_id:
            return later._folds[i:]
    return None


class HasRefKeys(Protocol):
    @property
    def ref_keys(self) -> Collection[str]: ...


R = TypeVar("R", bound=HasRefKeys)


class RefIndexedMap(LayeredMap[str, R]):
    """A :class:`LayeredMap` of items by id that also knows which items carry each reference key.

    Matching an item by reference looked at every open item of the other side: a statement of N entries
    against N waiting notifications (or a backlog whose entries arrive first) was N² set tests, 18 % of the
    statement stage's CPU in ``make bench`` (py-spy). :meth:`with_ref` looks the keys up instead. The index is kept
    through every write and delete and forked with the map; a map built over plain items (a ledger read from
    storage, or pruned) indexes them once. It compares as the mapping it is: the index is derived.
    """

    __slots__ = ("_refs",)

    def __init__(self, base: Mapping[str, R] | None = None) -> None:
        super().__init__(base)
        index: dict[str, tuple[str, ...]] = {}
        for item_id, item in self._base.items():
            for key in item.ref_keys:
                index[key] = (*index.get(key, ()), item_id)
        self._refs: LayeredMap[str, tuple[str, ...]] = LayeredMap(index)

    @classmethod
    def over(cls, mapping: Mapping[str, R]) -> RefIndexedMap[R]:
        return mapping.fork() if isinstance(mapping, RefIndexedMap) else cls(mapping)

    def fork(self) -> Self:
        twin = super().fork()
        twin._refs = self._refs.fork()
        return twin

    def with_ref(self, keys: Iterable[str]) -> list[R]:
        """The items carrying any of ``keys``."""
        ids = {item_id for key in keys for item_id in self._refs.get(key, ())}
        return [self[item_id] for item_id in ids]

    def __setitem__(self, key: str, value: R) -> None:
        old = self.get(key)
        if old is not None:
            self._unindex(key, old)
        super().__setitem__(key, value)
        for ref in value.ref_keys:
            self._refs[ref] = (*self._refs.get(ref, ()), key)

    def __delitem__(self, key: str) -> None:
        old = self[key]
        super().__delitem__(key)
        self._unindex(key, old)

    def _unindex(self, key: str, item: R) -> None:
        for ref in item.ref_keys:
            rest = tuple(i for i in self._refs.get(ref, ()) if i != key)
            if rest:
                self._refs[ref] = rest
            else:
                self._refs.pop(ref, None)
