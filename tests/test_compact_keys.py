"""The key index of the native evaluators (native/_evaluator.pyx ``_KeyIndex``): rising keys
whose directory buckets are at most 2**32 keys wide are kept as 32-bit offsets (half the
memory, docs/sync.md "Fourth pass: memory"); whichever way an index keeps its keys, it finds
exactly what a dict of them finds, gives back the same keys in the same order, and an
evaluator built on it decides and exports its cards as before."""

from __future__ import annotations

from array import array

from hypothesis import given, settings
from hypothesis import strategies as st

from native import NativeFuelEvaluator
from native._evaluator import _key_index_probe
from native.compact import card_no_of, sample_fuel_columns

I64 = st.integers(min_value=1, max_value=2**63 - 1)


def _check(keys: list[int], skip_zero: bool, queries: list[int]) -> bool:
    """The index's answers against a dict's; returns whether it was compact."""
    compact, found, ranked, by_pos, exported = _key_index_probe(array("q", keys), skip_zero, queries)
    pos = {}
    for i, k in enumerate(keys):
        if not (skip_zero and k == 0):
            pos.setdefault(k, i)
    if len(pos) == len([k for k in keys if not (skip_zero and k == 0)]):  # no repeats: a proper index
        assert found == [pos.get(q, -1) for q in queries]
        assert ranked == sorted(pos)
    if by_pos is not None:
        assert by_pos == keys and exported == keys
    return compact


@settings(max_examples=300, deadline=None)
@given(base=I64, steps=st.lists(st.integers(min_value=1, max_value=2**40), max_size=300),
       extra=st.lists(I64, max_size=20), data=st.data())
def test_rising_keys_found_exactly_compact_or_not(base, steps, extra, data):
    keys, k = [], base
    for s in steps:
        if k > 2**63 - 1:
            break
        keys.append(k)
        k += s
    queries = keys + [x + d for x in keys[:50] for d in (-1, 1)] + extra + [base - 1, 0, 2**63 - 1]
    queries = [q for q in queries if 0 <= q <= 2**63 - 1]
    compact = _check(keys, data.draw(st.booleans()), queries)
    if keys and keys[-1] - keys[0] < 2**33:
        assert compact  # a span of 2**33 is at most 2**32 a bucket even for the fewest buckets (2)


@settings(max_examples=200, deadline=None)
@given(keys=st.lists(st.integers(min_value=0, max_value=2**63 - 1), max_size=200), queries=st.lists(I64, max_size=30))
def test_any_keys_found_exactly(keys, queries):
    _check(keys, True, keys + queries)
    _check([k for k in keys if k], False, keys + queries)


def test_sequential_keys_are_compact_and_wide_ones_are_not():
    seq = list(range(17005830000000001, 17005830000100001))
    assert _check(seq, True, seq[::997] + [seq[0] - 1, seq[-1] + 1])
    wide = [1 + i * (2**62 // 10) for i in range(10)]  # 10 keys over the whole range: buckets too wide
    assert not _check(wide, True, wide + [2, 3])


def test_evaluator_on_compact_keys_finds_numbers_and_exports_them():
    cols = sample_fuel_columns(n_cards=20_000, seed=3)
    keys = list(cols.card_key)
    assert keys == sorted(keys)
    ev = NativeFuelEvaluator(cols)
    assert _key_index_probe(cols.card_key, True, [])[0]  # the sample's numbers index compact
    for i in range(0, len(keys), 37):
        no = card_no_of(keys[i])
        assert ev.card_position(no) == i and ev.card_number(i) == no
    assert ev.card_position(card_no_of(keys[-1] + 1)) is None
    assert ev.card_position(card_no_of(keys[0] - 1)) is None
    out = ev._columns(None, None)  # every card and contract, as a snapshot's build starts from
    assert list(out.card_key) == keys and list(out.stop_keys) == list(cols.stop_keys)
    assert NativeFuelEvaluator(out).nbytes() == ev.nbytes()
    assert ev.nbytes() < sample_fuel_columns(n_cards=20_000, seed=3).nbytes()
