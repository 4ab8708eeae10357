"""``stop_list_numbers`` of a fuel evaluator is every number on its stop list now, each once,
after any run-time changes (host deltas: ``set_stop_listed`` and ``FuelUpdate``'s
``stop_listed`` / ``stop_unlisted``) and whole lists, on the native evaluator exactly as on
the reference one (terminal/stop_list_swap.py compares a whole list with it)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from authz.update import FuelUpdate
from native.compact import sample_fuel_columns
from terminal.replica import Replica

IMPLS = ("native", "reference")
FOREIGN = [f"99{i:014d}" for i in range(4)] + ["ABC-1", "ZZ"]  # numbers of no card of the replica


def evaluators() -> dict:
    return {impl: Replica(sample_fuel_columns(n_cards=40, seed=7), None, impl=impl).fuel for impl in IMPLS}


def universe(ev) -> list[str]:
    """20 numbers: some of the list the evaluator was built with, cards of it, foreign ones."""
    nos = sorted(set(ev.stop_list_numbers()))[:6] + [ev.model.cards[i].card_no for i in range(8)] + FOREIGN
    nos = list(dict.fromkeys(nos))
    return (nos + [f"98{i:014d}" for i in range(20)])[:20]


change = st.one_of(st.tuples(st.just("set"), st.integers(0, 19), st.booleans()),
                   st.tuples(st.just("update"), st.sets(st.integers(0, 19), max_size=4),
                             st.sets(st.integers(0, 19), max_size=4)),
                   st.tuples(st.just("replace"), st.sets(st.integers(0, 19), max_size=8)))


@settings(max_examples=80, deadline=None)
@given(st.lists(change, max_size=12))
def test_every_number_on_the_list_now_each_once_on_both_evaluators(changes):
    evs = evaluators()
    nos = universe(evs["native"])
    assert nos == universe(evs["reference"])
    expected = set(evs["reference"].stop_list_numbers())
    for c in changes:
        for ev in evs.values():
            if c[0] == "set":
                ev.set_stop_listed(nos[c[1]], c[2])
            elif c[0] == "update":
                on = tuple(sorted(nos[i] for i in c[1] - c[2]))
                off = tuple(sorted(nos[i] for i in c[2]))
                ev.apply(FuelUpdate(stop_listed=on, stop_unlisted=off))
            else:
                ev.replace_stop_list(nos[i] for i in sorted(c[1]))
        if c[0] == "set":
            (expected.add if c[2] else expected.discard)(nos[c[1]])
        elif c[0] == "update":
            expected -= {nos[i] for i in c[2]}
            expected |= {nos[i] for i in c[1] - c[2]}
        else:
            expected = {nos[i] for i in c[1]}
        for impl, ev in evs.items():
            got = list(ev.stop_list_numbers())
            assert len(got) == len(set(got)), (impl, got)
            assert set(got) == expected, impl
            assert all(ev.on_stop_list(no) for no in got), impl
