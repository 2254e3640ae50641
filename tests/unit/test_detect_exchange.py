"""ExchangeMonitor end to end on seeded synthetic series (no simulator, no services)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from detect import (
    DataQuality,
    DetectorConfig,
    ExchangeMonitor,
    MeterSpec,
    PlannedWindow,
    Resolved,
    SupplyDecline,
    SupplyDrop,
)
from detect.events import Event, to_detection_event
from parkmon import state

pytestmark = pytest.mark.unit

S = 10_000
H = 3_600_000
T0 = 1_767_225_600_000
SUP, CON = "sup.out", "con.in"


def monitor(buffer_h: float = 2.0, windows=(), kind: str = "rate") -> ExchangeMonitor:
    rmax = 500.0 if kind == "rate" else None  # a counter's range is its register's
    return ExchangeMonitor("x1", [MeterSpec(SUP, kind=kind, period_s=10, range_max=rmax)],
                           [MeterSpec(CON, kind=kind, period_s=10, range_max=rmax)],
                           buffer_h=buffer_h, cfg=DetectorConfig(season="none"),
                           windows=windows)


def run(mon: ExchangeMonitor, hours: float, factor: Callable[[np.ndarray], np.ndarray],
        seed: int = 0, sup_fault: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
        silent: tuple[int, int] | None = None, kind: str = "rate") -> list[Event]:
    """Flow 100/h x factor(t) with 2 % AR(1) process noise and 1 % meter noise on both sides."""
    rng = np.random.default_rng(seed)
    n = int(hours * H / S)
    t = T0 + np.arange(n, dtype=np.int64) * S
    ar = np.zeros(n)
    e = rng.standard_normal(n) * 0.02 * np.sqrt(1 - 0.97**2)
    for i in range(1, n):
        ar[i] = 0.97 * ar[i - 1] + e[i]
    flow = 100.0 * factor(t) * (1 + ar)
    sup = flow * (1 + 0.01 * rng.standard_normal(n))
    con = 0.95 * flow * (1 + 0.01 * rng.standard_normal(n))
    if sup_fault is not None:
        sup = sup_fault(t, sup)
    if kind == "counter":
        sup = 1000 + np.cumsum(sup * S / H)
        con = 1000 + np.cumsum(con * S / H)
    out: list[Event] = []
    for i in range(n):
        ts = int(t[i])
        if silent is None or not (silent[0] <= ts < silent[1]):
            out += mon.observe(SUP, ts, float(sup[i]))
        out += mon.observe(CON, ts + 2000, float(con[i]))
        if i % 6 == 0:
            out += mon.tick(ts)
    return out


def between(t: np.ndarray, a_h: float, b_h: float) -> np.ndarray:
    return (t >= T0 + a_h * H) & (t < T0 + b_h * H)


def test_normal_operation_with_glitches_is_quiet():
    def glitchy(t, v):
        v = v.copy()
        v[::997] *= 0.3  # single-sample dropouts
        return v
    events = run(monitor(), 24, lambda t: np.ones(len(t)), seed=1, sup_fault=glitchy)
    assert [e for e in events if not isinstance(e, DataQuality | Resolved)] == []


@pytest.mark.parametrize("kind", ["rate", "counter"])
def test_supplier_trip_fires_one_drop_within_a_minute_then_resolves(kind):
    mon = monitor(buffer_h=2.0, kind=kind)
    events = run(mon, 8, lambda t: np.where(between(t, 6, 6.5), 0.6, 1.0), seed=2, kind=kind)
    drops = [e for e in events if isinstance(e, SupplyDrop)]
    assert len(drops) == 1
    d = drops[0]
    assert d.confirmed_by == "both"
    assert 0 <= d.detected_ms - (T0 + 6 * H) <= 60_000
    assert abs(d.start_ms - (T0 + 6 * H)) <= 60_000
    assert d.magnitude == pytest.approx(0.4, abs=0.08)
    # 2 h buffer at 40 % short: runs out after about 5 h
    assert d.buffer_exhausted_at_ms is not None
    assert abs(d.buffer_exhausted_at_ms - (T0 + 11 * H)) < 0.75 * H
    res = [e for e in events if isinstance(e, Resolved) and e.key == d.key]
    assert len(res) == 1 and T0 + 6.5 * H <= res[0].resolved_ms <= T0 + 6.5 * H + 5 * 60_000
    assert not [e for e in events if isinstance(e, DataQuality)]


def test_dead_supplier_meter_is_data_quality_not_supply():
    def dead(t, v):
        return np.where(between(t, 6, 7), 0.0, v)
    events = run(monitor(), 8, lambda t: np.ones(len(t)), seed=3, sup_fault=dead)
    assert not [e for e in events if isinstance(e, SupplyDrop | SupplyDecline)]
    dq = [e for e in events if isinstance(e, DataQuality)]
    assert [(e.meter, e.dq_kind) for e in dq] == [(SUP, "disagrees")]
    assert [e.key for e in events if isinstance(e, Resolved)] == [dq[0].key]


def test_silent_supplier_meter_is_data_quality_and_a_real_drop_meanwhile_still_fires():
    mon = monitor()
    silent = (T0 + 6 * H, T0 + 8 * H)
    events = run(mon, 9, lambda t: np.where(between(t, 7, 7.5), 0.5, 1.0), seed=4, silent=silent)
    dq = [e for e in events if isinstance(e, DataQuality)]
    assert [(e.meter, e.dq_kind) for e in dq] == [(SUP, "silent")]
    drops = [e for e in events if isinstance(e, SupplyDrop)]
    assert len(drops) == 1 and drops[0].confirmed_by == "consumers"
    assert drops[0].detected_ms - (T0 + 7 * H) <= 60_000


def test_stuck_supplier_meter_is_data_quality():
    def stuck(t, v):
        v = v.copy()
        m = between(t, 6, 7)
        v[m] = v[np.argmax(m) - 1]
        return v
    events = run(monitor(), 8, lambda t: np.ones(len(t)), seed=5, sup_fault=stuck)
    assert [(e.meter, e.dq_kind) for e in events if isinstance(e, DataQuality)] == [(SUP, "stuck")]
    assert not [e for e in events if isinstance(e, SupplyDrop | SupplyDecline)]


def test_declared_maintenance_does_not_fire_but_a_planned_cut_is_judged_against_its_plan():
    w = PlannedWindow(frozenset({SUP, CON}), T0 + 6 * H, T0 + 8 * H)
    events = run(monitor(windows=[w]), 11, lambda t: np.where(between(t, 6, 8), 0.0, 1.0), seed=6)
    assert not [e for e in events if isinstance(e, SupplyDrop | SupplyDecline)]

    plan = PlannedWindow(frozenset({SUP, CON}), T0 + 6 * H, T0 + 10 * H, expected_factor=0.6)

    def shape(t):
        f = np.where(between(t, 6, 10), 0.6, 1.0)
        return np.where(between(t, 8, 8.5), 0.3, f)  # an unplanned drop within the plan
    events = run(monitor(windows=[plan]), 11, shape, seed=7)
    drops = [e for e in events if isinstance(e, SupplyDrop)]
    assert len(drops) == 1 and 0 <= drops[0].detected_ms - (T0 + 8 * H) <= 60_000


def test_gradual_decline_warns_long_before_the_buffer_runs_out():
    # supply declines linearly to 20 % over 3 h from 6 h; a 2 h buffer then runs out at
    # t0 + 6 h + tau with 0.8 tau^2 / (2 * 3) = 2 -> tau = 3.87 h
    def shape(t):
        x = np.clip((t - (T0 + 6 * H)) / (3 * H), 0, 1)
        return 1.0 - 0.8 * x
    events = run(monitor(buffer_h=2.0), 10, shape, seed=8)
    warn = [e for e in events if isinstance(e, SupplyDecline | SupplyDrop)]
    assert len(warn) == 1 and isinstance(warn[0], SupplyDecline)
    true_exhaustion = T0 + 6 * H + 3.87 * H
    assert true_exhaustion - warn[0].detected_ms >= 0.5 * H
    assert warn[0].slope_per_h < 0
    assert warn[0].buffer_exhausted_at_ms is not None
    assert abs(warn[0].buffer_exhausted_at_ms - true_exhaustion) < 1.0 * H


def test_events_convert_to_the_alert_service_contract():
    d = SupplyDrop("x1", 1, 2, 0.5, 10.0, 5.0, 3, "both", (SUP,))
    de = to_detection_event(d)
    assert de.kind == "supply_drop" and de.exchange_id == "x1" and de.start_ms == 1
    q = to_detection_event(DataQuality(SUP, "silent", 5, 4, "x1"))
    assert q.kind == "data_quality" and q.dq_kind == "silent" and q.meter_id == SUP
    r = to_detection_event(Resolved(d.key, "supply_drop", 9, "x1"))
    assert r.kind == "resolved" and r.resolves == "supply_drop"


def test_park_monitor_round_trips_through_the_state_format_and_carries_on_identically():
    from detect import ParkMonitor
    from parkmon.park import example_park_path, load_park

    park = load_park(example_park_path("kalundborg"))
    mon = ParkMonitor(park)
    rng = np.random.default_rng(9)
    meters = [m for m in park.meters if m.kind == "rate"]

    def feed(m: ParkMonitor, i0: int, i1: int, seed: int) -> list:
        r = np.random.default_rng(seed)
        out = []
        for i in range(i0, i1):
            for meter in meters:
                v = (meter.nominal or meter.capacity * 0.6) * (1 + 0.01 * r.standard_normal())
                out += m.observe(meter.id, T0 + i * 60_000, float(v))
            out += m.tick(T0 + i * 60_000)
        return out

    feed(mon, 0, 200, int(rng.integers(1000)))
    blob = state.dumps(mon, "park-monitor")
    assert b"pickle" not in blob and blob.startswith(b'{"format":"parkmon-state","version":1')
    copy = state.loads(blob, "park-monitor")
    assert feed(copy, 200, 400, 5) == feed(mon, 200, 400, 5)
    assert copy.exchanges["steam"].status() == mon.exchanges["steam"].status()


def test_window_rates_of_counter_meters_feed_the_same_detection():
    """Per-window results from the streams stage (rates) instead of raw counter registers."""
    mon = ExchangeMonitor("x1", [MeterSpec(SUP, kind="counter", period_s=60)],
                          [MeterSpec(CON, kind="counter", period_s=60)], buffer_h=1.0,
                          cfg=DetectorConfig(season="none"))
    rng = np.random.default_rng(12)
    out: list[Event] = []
    for i in range(6 * 60):  # 6 h of one-minute windows, the supply halves from 4 h
        ts = T0 + i * 60_000
        f = 0.5 if ts >= T0 + 4 * H else 1.0
        out += mon.observe_rate(SUP, ts, 100.0 * f * (1 + 0.01 * rng.standard_normal()))
        out += mon.observe_rate(CON, ts + 1000, 95.0 * f * (1 + 0.01 * rng.standard_normal()))
        out += mon.tick(ts)
    drops = [e for e in out if isinstance(e, SupplyDrop)]
    assert len(drops) == 1 and 0 <= drops[0].detected_ms - (T0 + 4 * H) <= 3 * 60_000
    assert drops[0].magnitude == pytest.approx(0.5, abs=0.05)
    assert not [e for e in out if isinstance(e, DataQuality)]


def test_a_freshly_frozen_consumer_meter_cannot_refute_a_real_drop():
    """The consumer meter freezes two minutes before the supplier trips (not yet 'stuck'): the
    trip is still a supply drop, not a supplier-meter fault."""
    mon = monitor()
    rng = np.random.default_rng(13)
    out: list[Event] = []
    frozen = None
    for i in range(int(7 * H / S)):
        ts = T0 + i * S
        f = 0.3 if ts >= T0 + 6 * H else 1.0
        out += mon.observe(SUP, ts, 100.0 * f * (1 + 0.01 * rng.standard_normal()))
        c = 95.0 * f * (1 + 0.01 * rng.standard_normal())
        if ts >= T0 + 6 * H - 120_000:
            frozen = c if frozen is None else frozen
            c = frozen
        out += mon.observe(CON, ts + 2000, c)
        if i % 6 == 0:
            out += mon.tick(ts)
    drops = [e for e in out if isinstance(e, SupplyDrop)]
    assert len(drops) == 1 and drops[0].detected_ms - (T0 + 6 * H) <= 60_000
    assert drops[0].confirmed_by == "suppliers"
    assert [(e.meter, e.dq_kind) for e in out if isinstance(e, DataQuality)] == [(CON, "stuck")]
