"""LayeredMap behaves as a dict, forks are independent, and a fork copies the overlay, not the base."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.domain import layered_map
from services.domain.layered_map import LayeredMap, RefIndexedMap

KEYS = st.sampled_from([f"k{i}" for i in range(12)])
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("set"), KEYS, st.integers(0, 5)),
        st.tuples(st.just("del"), KEYS, st.just(0)),
        st.tuples(st.just("fork"), st.just(""), st.just(0)),
    ),
    max_size=200,
)


@settings(max_examples=300, deadline=None)
@given(base=st.dictionaries(KEYS, st.integers(0, 5)), ops=OPS, min_overlay=st.sampled_from([0, 2, 64]))
def test_it_is_a_dict_through_any_sequence_of_writes_and_forks(
    base: dict[str, int], ops: list[tuple[str, str, int]], min_overlay: int
) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(layered_map, "MIN_OVERLAY", min_overlay)  # 0 and 2: folds happen within the run
        check_against_a_dict(base, ops)


def check_against_a_dict(base: dict[str, int], ops: list[tuple[str, str, int]]) -> None:
    model = dict(base)
    frozen_base = dict(base)
    current = LayeredMap.over(base)
    snapshots: list[tuple[LayeredMap[str, int], dict[str, int]]] = []
    for op, key, value in ops:
        if op == "set":
            current[key] = value
            model[key] = value
        elif op == "del":
            if key in model:
                del current[key]
                del model[key]
            else:
                with pytest.raises(KeyError):
                    del current[key]
        else:
            snapshots.append((current, dict(model)))
            current = current.fork()  # the old one is a snapshot from now on: never written again
        assert (key in current) == (key in model)
    if all(op != "del" for op, _, _ in ops):
        assert list(current) == list(model)  # dict order, overwritten keys in place
    assert sorted(current) == sorted(model)
    assert dict(current.items()) == model and len(current) == len(model) and current == model
    for snapshot, expected in snapshots:  # every fork left its parent as it was
        assert dict(snapshot.items()) == expected and len(snapshot) == len(expected)
        for one, other in ((snapshot, current), (current, snapshot)):
            keys = one.changed_keys(other)
            if keys is not None:  # what it names must cover every key whose value differs
                assert differing(expected, model) <= set(keys)
    assert base == frozen_base  # the dict it was layered over was never written


def differing(one: dict[str, int], other: dict[str, int]) -> set[str]:
    return {k for k in one.keys() | other.keys() if one.get(k, -1) != other.get(k, -1)}


def test_changed_keys_are_the_overlays_while_the_base_is_shared() -> None:
    one = LayeredMap.over({"a": 1, "b": 2})
    one["c"] = 3
    two = one.fork()
    two["a"] = 10
    del two["b"]
    assert sorted(one.changed_keys(two) or []) == ["a", "b", "c"]  # c is in both overlays: compared, unchanged
    assert LayeredMap.over({"a": 1}).changed_keys(two) is None  # another base: compare whole


def test_a_fork_copies_the_overlay_not_the_base() -> None:
    big = LayeredMap.over({f"k{i}": i for i in range(10_000)})
    base = big._base
    for i in range(50):
        big = big.fork()
        big[f"new{i}"] = i
    assert big._base is base and len(big._top) == 50  # 50 forks: the 10,000-item base never copied
    for i in range(50, 200):  # the overlay outgrows √10,000 = 100: folded once into a new base
        big = big.fork()
        big[f"new{i}"] = i
    assert big._base is not base and len(big._top) < 100 and len(big) == 10_200


def test_changed_keys_reach_back_through_folds() -> None:
    # The statement stage compares a bank's ledger before and after a batch of up to 500 inputs, over which each
    # collection folds several times: the changed keys must come from the folds, not from a walk of every item.
    start = LayeredMap.over({f"k{i}": i for i in range(10_000)})
    current, written = start, set()
    for i in range(1_000):  # about ten folds (the overlay outgrows √10,000 = 100)
        current = current.fork()
        current[f"k{i * 7}"] = -i - 1
        written.add(f"k{i * 7}")
    assert current._base is not start._base
    keys = start.changed_keys(current)
    assert keys is not None and set(keys) == written
    assert current.changed_keys(start) is not None and set(current.changed_keys(start) or []) == written
    assert {k for k in current if current[k] != start[k]} == written  # the truth, walked whole
    for _ in range(layered_map.FOLDS_KEPT * 200):  # far more folds than are remembered: unknown, compare whole
        current = current.fork()
        current[f"n{len(current)}"] = 0
    assert start.changed_keys(current) is None and current.changed_keys(start) is None


def test_unrelated_maps_never_share_a_lineage() -> None:
    one, two = LayeredMap.over({"a": 1}), LayeredMap.over({"a": 1})
    assert one.changed_keys(two) is None


@dataclass(frozen=True)
class Item:
    name: str
    ref_keys: frozenset[str]


REFS = st.frozensets(st.sampled_from(["r1", "r2", "r3", "r4"]), max_size=3)
INDEXED_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("set"), KEYS, REFS),
        st.tuples(st.just("del"), KEYS, st.just(frozenset[str]())),
        st.tuples(st.just("fork"), st.just(""), st.just(frozenset[str]())),
    ),
    max_size=150,
)


def carrying(items: dict[str, Item], ref: str) -> list[str]:
    return sorted(k for k, item in items.items() if ref in item.ref_keys)


@settings(max_examples=300, deadline=None)
@given(
    base=st.dictionaries(KEYS, REFS).map(lambda d: {k: Item(k, refs) for k, refs in d.items()}),
    ops=INDEXED_OPS,
    min_overlay=st.sampled_from([0, 2, 64]),
)
def test_the_ref_index_is_the_items_carrying_each_key_through_writes_and_forks(
    base: dict[str, Item], ops: list[tuple[str, str, frozenset[str]]], min_overlay: int
) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(layered_map, "MIN_OVERLAY", min_overlay)
        model = dict(base)
        current = RefIndexedMap.over(base)
        snapshots: list[tuple[RefIndexedMap[Item], dict[str, Item]]] = []
        for op, key, refs in ops:
            if op == "set":
                current[key] = model[key] = Item(key, refs)
            elif op == "del":
                assert current.pop(key, None) == model.pop(key, None)
            else:
                snapshots.append((current, dict(model)))
                current = current.fork()
            for ref in ("r1", "r2", "r3", "r4"):
                assert sorted(item.name for item in current.with_ref([ref])) == carrying(model, ref)
            assert sorted(i.name for i in current.with_ref(["r1", "r2"])) == sorted(
                set(carrying(model, "r1")) | set(carrying(model, "r2"))
            )
        assert current == model
        for snapshot, expected in snapshots:  # a fork's writes never reach its parent's index
            assert snapshot == expected
            for ref in ("r1", "r2", "r3", "r4"):
                assert sorted(item.name for item in snapshot.with_ref([ref])) == carrying(expected, ref)
