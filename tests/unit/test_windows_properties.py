"""Properties of the window core (hypothesis)."""

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.aggregates import Aggregate, merge_all
from streams.core.model import KpiModel, MeterInfo
from streams.core.rolling import hopping_window_starts
from streams.core.windows import WindowEngine, WindowResult

pytestmark = pytest.mark.unit

MIN = 60_000


@given(ts=st.integers(0, 10**13), step=st.integers(1, 10**6), k=st.integers(1, 50))
def test_each_timestamp_in_exactly_size_over_step_hopping_windows(ts, step, k):
    size = k * step
    starts = hopping_window_starts(ts, size, step)
    assert len(starts) == size // step
    assert len(set(starts)) == len(starts)
    assert all(s % step == 0 and s <= ts < s + size for s in starts)
    # and no other aligned window contains it
    assert not (starts[0] - step <= ts < starts[0] - step + size)
    assert not (starts[-1] + step <= ts)


aggs = st.lists(st.builds(
    Aggregate.of, st.integers(0, 10**9), st.integers(-1000, 1000).map(float),
    st.integers(0, 1000).map(float), reset=st.booleans(), gap=st.booleans(),
    co2e_t=st.integers(0, 100).map(float)), max_size=30)


@given(items=aggs, cuts=st.lists(st.integers(0, 30), max_size=5))
def test_merged_partial_aggregates_equal_sequential(items, cuts):
    bounds = sorted({0, len(items), *[c for c in cuts if c <= len(items)]})
    parts = [merge_all(items[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)]
    assert merge_all(parts) == merge_all(items)  # integer-valued floats: exact


@given(a=aggs, b=aggs)
def test_merge_commutes(a, b):
    assert merge_all(a).merge(merge_all(b)) == merge_all(b).merge(merge_all(a))


def _model():
    return KpiModel("p", ("e",), {
        "c": MeterInfo("c", "e", "material", "input", "counter", "t"),
        "r": MeterInfo("r", "e", "material", "output", "rate", "t", max_gap_ms=10 * MIN),
    })


def _final(engine: WindowEngine, readings) -> dict:
    last: dict = {}
    for m, t, v in readings:
        for o in engine.ingest(m, t, v):
            if isinstance(o, WindowResult):
                last[(o.meter, o.window_start_ms)] = o
    for o in engine.advance(10**13):
        last[(o.meter, o.window_start_ms)] = o
    return last


readings_st = st.lists(
    st.tuples(st.sampled_from(["c", "r"]), st.integers(0, 30 * MIN), st.integers(0, 50)),
    min_size=1, max_size=80, unique_by=lambda r: (r[0], r[1]))


def _to_stream(raw):
    """Counter readings made cumulative in time order; rates as given."""
    raw = sorted(raw, key=lambda r: r[1])
    acc = 0.0
    out = []
    for m, t, v in raw:
        if m == "c":
            acc += v
            out.append((m, t, acc))
        else:
            out.append((m, t, float(v)))
    return out


@settings(max_examples=150, deadline=None)
@given(raw=readings_st, seed=st.integers(0, 2**32 - 1), grace=st.integers(0, 5 * MIN))
def test_shuffling_within_grace_does_not_change_results(raw, seed, grace):
    stream = _to_stream(raw)
    rnd = random.Random(seed)
    # each reading is delayed by at most `grace`: it arrives before its window is final
    shuffled = [r for _, _, r in sorted(
        (r[1] + rnd.randint(0, grace), i, r) for i, r in enumerate(stream))]
    ea, eb = WindowEngine(_model(), MIN, grace), WindowEngine(_model(), MIN, grace)
    a, b = _final(ea, stream), _final(eb, shuffled)
    assert ea.stats.late == eb.stats.late == 0
    assert a.keys() == b.keys()
    for k in a:
        assert b[k].quantity == pytest.approx(a[k].quantity, abs=1e-9)
        assert b[k].agg.count == a[k].agg.count


@settings(max_examples=100, deadline=None)
@given(raw=readings_st)
def test_counter_windows_sum_to_total_increase(raw):
    stream = _to_stream(raw)
    res = _final(WindowEngine(_model(), MIN, 2 * MIN), stream)
    cs = [v for m, _, v in stream if m == "c"]
    total = sum(r.quantity for (m, _), r in res.items() if m == "c")
    assert total == pytest.approx(cs[-1] - cs[0] if cs else 0.0)


@settings(max_examples=100, deadline=None)
@given(raw=readings_st, data=st.data())
def test_replaying_from_an_earlier_offset_changes_no_result(raw, data):
    """A crash after state was saved but before the offset commit replays a suffix."""
    stream = _to_stream(raw)
    k = data.draw(st.integers(0, len(stream)))
    j = data.draw(st.integers(0, k))
    a = _final(WindowEngine(_model(), MIN, 2 * MIN), stream)
    b = _final(WindowEngine(_model(), MIN, 2 * MIN), stream[:k] + stream[j:])
    assert {key: r.quantity for key, r in a.items()} == \
        pytest.approx({key: r.quantity for key, r in b.items()})
