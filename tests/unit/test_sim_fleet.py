"""The simulated fleet: determinism, mass-consistent exchanges, counters, realistic shapes."""

from __future__ import annotations

import itertools
from collections import defaultdict

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parkmon.park import Park, example_park_path, load_park
from parkmon.park.generator import generate_park
from simulators import Fleet, FleetOptions, SimReading, run_scenario
from simulators.scenarios import parse_scenario

pytestmark = pytest.mark.unit

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z (a Thursday)
HOUR = 3_600_000
DAY = 24 * HOUR


@pytest.fixture(scope="module")
def park() -> Park:
    return load_park(example_park_path("kalundborg"))


def canonical_rates(park: Park, readings: list[SimReading], step_h: float) -> dict[str, dict[int, float]]:
    """meter -> ts -> flow rate (canonical per hour): rate meters as reported, counters from
    consecutive register differences."""
    out: dict[str, dict[int, float]] = defaultdict(dict)
    last: dict[str, tuple[int, float]] = {}
    for r in sorted(readings, key=lambda r: (r.meter, r.ts_ms)):
        m = park.meter(r.meter)
        v = m.to_canonical(r.value)
        if m.kind == "rate":
            out[r.meter][r.ts_ms] = v
        else:
            if r.meter in last:
                t_prev, v_prev = last[r.meter]
                out[r.meter][r.ts_ms] = (v - v_prev) / ((r.ts_ms - t_prev) / HOUR)
            last[r.meter] = (r.ts_ms, v)
    return out


def test_same_seed_same_readings_and_chunking_does_not_matter(park: Park) -> None:
    a = list(Fleet(park, seed=5, start_ms=T0).readings(T0 + 6 * HOUR))
    fleet = Fleet(park, seed=5, start_ms=T0)
    b: list[SimReading] = []
    for until in (T0 + HOUR, T0 + HOUR + 7 * 60_000, T0 + 6 * HOUR):
        b.extend(fleet.readings(until))
    assert a == b
    c = list(Fleet(park, seed=6, start_ms=T0).readings(T0 + 6 * HOUR))
    assert [r.value for r in a] != [r.value for r in c]


def test_every_meter_reports_at_its_period_in_event_time_order(park: Park) -> None:
    readings = list(Fleet(park, seed=1, start_ms=T0).readings(T0 + HOUR))
    assert [r.ts_ms for r in readings] == sorted(r.ts_ms for r in readings)
    per_meter = defaultdict(list)
    for r in readings:
        per_meter[r.meter].append(r)
    assert set(per_meter) == {m.id for m in park.meters}
    for mid, rs in per_meter.items():
        m = park.meter(mid)
        assert len(rs) == HOUR // int(m.period_s * 1000)
        assert [r.seq for r in rs] == list(range(1, len(rs) + 1))
        assert all(r.unit == m.unit for r in rs)  # the meter's declared unit, not canonical


def test_exchanges_are_mass_consistent(park: Park) -> None:
    """Each step, consumers together receive the suppliers' output minus the allowed loss, also
    while a supply fault is active."""
    scenario = parse_scenario({"name": "t", "events": [
        {"kind": "step_drop", "exchange": "steam", "at": "2h", "duration": "3h", "magnitude": 0.5},
        {"kind": "trip", "exchange": "gypsum", "at": "1h", "duration": "2h"}]})
    fleet = Fleet(park, seed=3, start_ms=T0, scenario=scenario,
                  options=FleetOptions(counter_resets_per_day=0.0))
    readings = list(fleet.readings(T0 + 8 * HOUR))
    rates = canonical_rates(park, readings, fleet.step_ms / HOUR)
    checked = 0
    for x in park.exchanges:
        common = set.intersection(*(set(rates[m]) for m in (*x.suppliers, *x.consumers)))
        assert len(common) > 400
        for ts in common:
            supplied = sum(rates[s][ts] for s in x.suppliers)
            received = sum(rates[c][ts] for c in x.consumers)
            assert received == pytest.approx(supplied * (1 - x.loss_fraction), rel=1e-6, abs=1e-6)
            for c, share in zip(x.consumers, x.consumer_shares, strict=True):
                assert rates[c][ts] == pytest.approx(received * share, rel=1e-6, abs=1e-6)
            checked += 1
    assert checked > 12 * 400


def test_supply_faults_shape_the_supplier_output(park: Park) -> None:
    scenario = parse_scenario({"name": "t", "events": [
        {"kind": "step_drop", "exchange": "steam", "at": "4h", "duration": "4h", "magnitude": 0.4},
        {"kind": "trip", "exchange": "gypsum", "at": "4h", "duration": "2h"}]})
    readings, labels = run_scenario(park, scenario, seed=2, start_ms=T0, duration_ms=12 * HOUR,
                                    options=FleetOptions(counter_resets_per_day=0.0))
    rates = canonical_rates(park, list(readings), 1 / 60)
    steam = rates["asnaes.steam_out"]
    before = np.mean([v for t, v in steam.items() if T0 + 2 * HOUR <= t < T0 + 4 * HOUR])
    during = np.mean([v for t, v in steam.items() if T0 + 5 * HOUR <= t < T0 + 8 * HOUR])
    assert during / before == pytest.approx(0.6, abs=0.06)
    gyp = rates["asnaes.gypsum_out"]
    assert all(v == 0.0 for t, v in gyp.items() if T0 + 4 * HOUR < t < T0 + 6 * HOUR)
    assert all(v > 0.0 for t, v in gyp.items() if T0 + 7 * HOUR < t)
    # the plasterboard maker makes up the missing partner gypsum with virgin gypsum
    virgin = rates["gyproc.gypsum_virgin_in"]
    v_before = np.mean([v for t, v in virgin.items() if T0 + 2 * HOUR <= t < T0 + 4 * HOUR])
    v_during = np.mean([v for t, v in virgin.items() if T0 + 4 * HOUR + 60_000 < t < T0 + 6 * HOUR])
    assert v_during > v_before + 15.0  # nominal partner gypsum is ~22 t/h
    assert [lb.kind for lb in labels if lb.category == "supply"] == ["step_drop", "trip"]


def test_counters_count_up_and_resets_and_rollovers_are_labelled(park: Park) -> None:
    fleet = Fleet(park, seed=9, start_ms=T0, options=FleetOptions(counter_resets_per_day=2.0))
    readings = list(fleet.readings(T0 + 3 * DAY))
    events = {(lb.target, lb.start_ms) for lb in fleet.labels
              if lb.kind in ("counter_reset", "counter_rollover")}
    assert any(lb.kind == "counter_reset" for lb in fleet.labels)
    counters = {m.id for m in park.meters if m.kind == "counter"}
    by_meter = defaultdict(list)
    for r in readings:
        if r.meter in counters:
            by_meter[r.meter].append(r)
    for mid, rs in by_meter.items():
        for prev, cur in itertools.pairwise(rs):
            if cur.value < prev.value:  # only where a reset or a roll-over is labelled
                assert (mid, cur.ts_ms) in events, (mid, cur.ts_ms)


def test_rollover_wraps_the_register_and_is_labelled(park: Park) -> None:
    fleet = Fleet(park, seed=9, start_ms=T0, options=FleetOptions(counter_resets_per_day=0.0))
    rs = [r for r in fleet.readings(T0 + DAY) if r.meter == "asnaes.power_out"]
    rollovers = [lb for lb in fleet.labels if lb.kind == "counter_rollover"]
    assert [lb.target for lb in rollovers] == ["asnaes.power_out"]
    m = park.meter("asnaes.power_out")
    assert rollovers[0].magnitude == pytest.approx(m.rollover)  # in the meter's unit (MWh)
    drops = [(p, c) for p, c in itertools.pairwise(rs) if c.value < p.value]
    assert [c.ts_ms for _, c in drops] == [rollovers[0].start_ms]
    prev, cur = drops[0]
    # the flow across the wrap is continuous: register + rollover - previous = one step of output
    step = cur.value + m.rollover - prev.value
    assert 0 < step <= m.capacity / 60 + 1e-6
    assert all(0 <= r.value < m.rollover for r in rs)


def test_rates_stay_within_the_physical_range(park: Park) -> None:
    readings = list(Fleet(park, seed=4, start_ms=T0).readings(T0 + 2 * DAY))
    for r in readings:
        m = park.meter(r.meter)
        if m.kind == "rate":
            assert m.range_min - 1e-9 <= m.to_canonical(r.value) <= m.capacity + 1e-9


def test_shift_profile_follows_weekdays_and_hours(park: Park) -> None:
    # plasterboard production runs in shifts: weekday day > weekday night > weekend
    fleet = Fleet(park, seed=8, start_ms=T0, options=FleetOptions(counter_resets_per_day=0.0))
    rates = canonical_rates(park, list(fleet.readings(T0 + 7 * DAY)), 1 / 60)["gyproc.plasterboard_out"]

    def mean_where(pred) -> float:  # type: ignore[no-untyped-def]
        return float(np.mean([v for t, v in rates.items() if pred(t)]))

    # T0 is Thursday 00:00 UTC = 01:00 Copenhagen; Friday day shift, Friday night, Sunday
    fri_day = mean_where(lambda t: T0 + DAY + 8 * HOUR <= t < T0 + DAY + 18 * HOUR)
    fri_night = mean_where(lambda t: T0 + DAY - 2 * HOUR <= t < T0 + DAY + 3 * HOUR)
    sunday = mean_where(lambda t: T0 + 3 * DAY <= t < T0 + 4 * DAY)
    assert fri_day > 2 * fri_night
    assert fri_night > sunday * 0.9


def test_planned_maintenance_stops_the_enterprise_and_is_labelled(park: Park) -> None:
    w = park.maintenance[0]
    fleet = Fleet(park, seed=1, start_ms=w.start_ms - 6 * HOUR,
                  options=FleetOptions(counter_resets_per_day=0.0))
    readings = list(fleet.readings(w.start_ms + 12 * HOUR))
    rates = canonical_rates(park, readings, 1 / 60)
    steam = rates["asnaes.steam_out"]
    assert all(v == 0.0 for t, v in steam.items() if t > w.start_ms + 2 * HOUR)
    assert any(lb.kind == "maintenance" and lb.target == "asnaes" for lb in fleet.labels)


def test_meter_bias_makes_meters_disagree_but_only_by_the_bias(park: Park) -> None:
    exact = list(Fleet(park, seed=3, start_ms=T0, options=FleetOptions(counter_resets_per_day=0.0))
                 .readings(T0 + 2 * HOUR))
    biased_fleet = Fleet(park, seed=3, start_ms=T0,
                         options=FleetOptions(counter_resets_per_day=0.0, meter_bias=0.01))
    biased = list(biased_fleet.readings(T0 + 2 * HOUR))
    re, rb = canonical_rates(park, exact, 1 / 60), canonical_rates(park, biased, 1 / 60)
    x = park.exchange("steam")  # rate meters
    ts = sorted(rb[x.consumers[0]])[10]
    supplied = rb[x.suppliers[0]][ts]
    received = sum(rb[c][ts] for c in x.consumers)
    assert received != pytest.approx(supplied * (1 - x.loss_fraction), rel=1e-6)
    assert received == pytest.approx(supplied * (1 - x.loss_fraction), rel=0.1)
    # the same flows underneath: each meter differs from the exact run by a constant factor
    for mid in (x.suppliers[0], *x.consumers):
        ratios = {round(rb[mid][t] / re[mid][t], 9) for t in re[mid] if re[mid][t] > 0}
        assert len(ratios) == 1


@settings(max_examples=15, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=3 * HOUR), max_size=5),
       seed=st.integers(min_value=0, max_value=2**32 - 1))
def test_chunking_never_changes_the_readings(cuts: list[int], seed: int) -> None:
    """Property: generating [T0, T0+3h) in one call or cut anywhere gives the same readings,
    including held-back (late/out-of-order/duplicate) ones."""
    park = _SMALL_PARK
    scenario = parse_scenario({"name": "p", "events": [
        {"kind": "out_of_order", "meter": park.meters[5].id, "at": "30m", "duration": "1h"},
        {"kind": "duplicates", "meter": park.meters[6].id, "at": "1h", "duration": "1h"},
        {"kind": "late", "meter": park.meters[7].id, "at": "2h", "duration": "20m", "magnitude": 600}]})
    whole = Fleet(park, seed=seed, start_ms=T0, scenario=scenario)
    expected = list(whole.readings(T0 + 3 * HOUR)) + whole.drain()
    fleet = Fleet(park, seed=seed, start_ms=T0, scenario=scenario)
    got: list[SimReading] = []
    for cut in sorted(cuts):
        got.extend(fleet.readings(T0 + cut))
    got.extend(fleet.readings(T0 + 3 * HOUR))
    got.extend(fleet.drain())
    assert got == expected


_SMALL_PARK = generate_park(4, 20, seed=11)
