"""DetectCore (the pure part of `parkmon detect`): watermark over partitions, ticks on an
event-time grid inside a batch, idle ticks, dead letters, checkpoints."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alerts.model import DetectionKind
from detect.core import DetectCore, Record, load_checkpoint, save_checkpoint
from detect.events import DataQuality, SupplyDrop
from parkmon.contracts import Reading
from parkmon.park import example_park_path, load_park
from tests.support.alerts import toy_park
from tests.support.detect import canonical_readings, scenario, simulate

pytestmark = pytest.mark.unit

T0 = 1_790_000_000_000 - 1_790_000_000_000 % 60_000


@pytest.fixture(autouse=True)
def _fake_monitor_is_storable(monkeypatch: pytest.MonkeyPatch) -> None:
    """The state format restores only parkmon's own classes; this module's fake counts as one."""
    from parkmon import state

    monkeypatch.setattr(state, "OWN_PACKAGES", (*state.OWN_PACKAGES, __name__.split(".")[0]))


class FakeMonitor:
    """Records what it is fed; raises on meter "boom"; emits a drop when fed value < 0."""

    def __init__(self, park: Any = None) -> None:
        self.observed: list[tuple[str, int, float]] = []
        self.ticks: list[int] = []

    def observe(self, meter: str, ts: int, value: float) -> list[Any]:
        if meter == "boom":
            raise ZeroDivisionError("detector bug")
        self.observed.append((meter, ts, value))
        if value < 0:
            return [SupplyDrop("steam", ts - 10_000, ts, 0.5, 100.0, 50.0, None,
                               supplier_meters=("power.steam_out",))]
        return []

    def tick(self, now: int) -> list[Any]:
        self.ticks.append(now)
        return []


def rec(p: int, off: int, meter: str, ts: int, value: float = 1.0) -> Record:
    return Record(p, off, Reading(meter, ts, value).to_json(), meter.encode())


def core(**kw: Any) -> DetectCore:
    return DetectCore(toy_park(), monitor_factory=FakeMonitor, **kw)


def test_batch_is_fed_in_event_time_order_and_ticked_on_the_grid_up_to_the_watermark():
    c = core(tick_step_ms=10_000)
    res = c.process([rec(0, 0, "a", T0 + 25_000), rec(1, 0, "b", T0 + 5_000),
                     rec(0, 1, "a", T0 + 41_000)])
    assert [o[1] for o in c.monitor.observed] == [T0 + 5_000, T0 + 25_000, T0 + 41_000]
    assert c.monitor.ticks == [T0, T0 + 20_000, T0 + 40_000]
    assert res.ticked_to_ms == T0 + 40_000 and c.offsets == {0: 2, 1: 1}


def test_a_partition_behind_holds_the_watermark_back():
    c = core(tick_step_ms=1_000)
    c.process([rec(0, 0, "a", T0 + 60_000), rec(1, 0, "b", T0 + 5_000)], lagging=[1])
    assert max(c.monitor.ticks) == T0 + 5_000  # not 60 s: partition 1 has more to come
    assert c.watermark(lagging=[1]) == T0 + 5_000
    assert c.watermark(lagging=[2]) is None  # behind and never seen: no tick at all
    assert c.watermark() == T0 + 60_000


def test_ticks_never_go_back_in_time():
    c = core(tick_step_ms=1_000)
    c.process([rec(0, 0, "a", T0 + 30_000)])
    c.process([rec(0, 1, "a", T0 + 10_000)])  # late reading
    assert c.monitor.ticks == sorted(set(c.monitor.ticks))


def test_bad_records_and_a_raising_detector_become_dead_letters_and_the_rest_goes_on():
    c = core()
    res = c.process([Record(0, 0, b"{not json"), Record(0, 1, b'{"meter": "x"}'),
                     rec(0, 2, "boom", T0), rec(0, 3, "a", T0 + 1_000, -1.0)])
    assert [d.reason for d in res.dead] == ["invalid_json", "schema", "processing_error"]
    assert "ZeroDivisionError" in res.dead[2].message
    assert [e.kind for e in res.events] == [DetectionKind.SUPPLY_DROP]
    assert res.events[0].exchange_id == "steam" and c.offsets == {0: 4}
    assert (c.counters.dead, c.counters.readings, c.counters.events) == (3, 1, 1)


def test_idle_tick_advances_event_time_with_the_wall_clock_only_after_the_idle_time():
    c = core(idle_after_ms=30_000, tick_step_ms=10_000)
    wall = 5_000_000
    c.process([rec(0, 0, "a", T0)], wall_ms=wall)
    assert c.idle_tick(wall + 29_000).ticked_to_ms is None
    assert c.idle_tick(wall + 45_000).ticked_to_ms == T0 + 45_000
    off = core(idle_after_ms=0)
    off.process([rec(0, 0, "a", T0)], wall_ms=wall)
    assert off.idle_tick(wall + 10**9).ticked_to_ms is None


def test_checkpoint_round_trip_is_atomic_and_bound_to_park_and_topic(tmp_path: Path):
    c = core()
    c.process([rec(0, 0, "a", T0), rec(2, 6, "b", T0 + 1_000)])
    path = tmp_path / "d" / "detect.ckpt"
    save_checkpoint(path, c.checkpoint("readings"))
    assert [p.name for p in path.parent.iterdir()] == ["detect.ckpt"]  # no temporary left
    data = load_checkpoint(path)
    assert data is not None
    again = core()
    again.restore(data, "readings")
    assert again.offsets == {0: 1, 2: 7} and again.last_tick_ms == c.last_tick_ms
    assert again.monitor.observed == c.monitor.observed
    with pytest.raises(ValueError, match="topic"):
        core().restore(data, "other-topic")
    kb = DetectCore(load_park(example_park_path("kalundborg")), monitor_factory=FakeMonitor)
    with pytest.raises(ValueError, match="park"):
        kb.restore(data, "readings")
    assert load_checkpoint(tmp_path / "missing") is None


_KB = load_park(example_park_path("kalundborg"))
_NOW = int(time.time() * 1000)
_START = _NOW - 4 * 3_600_000
_SIMS, _LABELS = simulate(_KB, scenario(
    [{"kind": "trip", "exchange": "gypsum", "at": "130m", "duration": "30m"},
     {"kind": "meter_silence", "meter": "novo.steam_in", "at": "125m", "duration": "20m"}],
    "170m"), _START)
_READINGS = canonical_readings(_KB, _SIMS, lambda: _NOW)


def _partitioned(readings: list[Reading]) -> list[Record]:
    """Records as three partitions keyed by meter would hold them (per-partition offsets)."""
    parts = {m.id: i % 3 for i, m in enumerate(_KB.meters)}
    nxt = [0, 0, 0]
    out = []
    for r in readings:
        p = parts[r.meter]
        out.append(Record(p, nxt[p], r.to_json()))
        nxt[p] += 1
    return out


_RECORDS = _partitioned(_READINGS)


def _run(batch_sizes: list[int]) -> list[tuple[str, str | None, str | None, int]]:
    c = DetectCore(_KB, idle_after_ms=0)
    out = []
    i = 0
    k = 0
    while i < len(_RECORDS):
        n = batch_sizes[k % len(batch_sizes)]
        k += 1
        for e in c.process(_RECORDS[i:i + n]).events:
            out.append((e.kind.value, e.exchange_id, e.meter_id, e.ts_ms))
        i += n
    return out


_REFERENCE = _run([len(_RECORDS)])


def test_the_reference_run_finds_the_trip_and_the_silent_meter():
    trip = next(lb for lb in _LABELS if lb.kind == "trip")
    drops = [e for e in _REFERENCE if e[0] == "supply_drop"]
    assert [e[1] for e in drops] == ["gypsum"] and drops[0][3] >= trip.start_ms
    silent = next(lb for lb in _LABELS if lb.kind == "meter_silence")
    assert any(e[0] == "data_quality" and e[2] == "novo.steam_in"
               and silent.start_ms < e[3] < silent.end_ms for e in _REFERENCE)


@settings(max_examples=8, deadline=None)
@given(st.lists(st.integers(1, 4000), min_size=1, max_size=5))
def test_events_do_not_depend_on_how_the_log_is_cut_into_batches(sizes: list[int]):
    assert _run(sizes) == _REFERENCE


def test_checkpoint_in_the_middle_then_replay_gives_the_same_events(tmp_path: Path):
    half = len(_RECORDS) // 2
    c = DetectCore(_KB, idle_after_ms=0)
    first = [e for i in range(0, half, 700) for e in c.process(_RECORDS[i:min(i + 700, half)]).events]
    save_checkpoint(tmp_path / "c", c.checkpoint("t"))
    d = DetectCore(_KB, idle_after_ms=0)
    data = load_checkpoint(tmp_path / "c")
    assert data is not None
    d.restore(data, "t")
    assert sum(d.offsets.values()) == half
    rest = [e for i in range(half, len(_RECORDS), 900) for e in d.process(_RECORDS[i:i + 900]).events]
    assert [(e.kind.value, e.exchange_id, e.meter_id, e.ts_ms) for e in first + rest] == _REFERENCE


def test_detection_events_convert_data_quality_too():
    c = core()
    c.monitor.observe = lambda m, t, v: [DataQuality("power.steam_out", "silent", t, t - 60_000)]
    res = c.process([rec(0, 0, "a", T0)])
    assert res.events[0].kind == DetectionKind.DATA_QUALITY
    assert res.events[0].meter_id == "power.steam_out"


def test_live_rates_of_rate_and_counter_meters():
    from detect.core import LiveRates

    lr = LiveRates({"c": "counter", "r": "rate"}, max_gap_ms=600_000)
    lr.observe("r", T0, 7.0)
    lr.observe("c", T0, 100.0)
    assert lr.rates == {"r": 7.0}
    lr.observe("c", T0 + 60_000, 100.5)  # 0.5 in a minute = 30 per hour
    assert lr.rates["c"] == pytest.approx(30.0)
    lr.observe("c", T0 + 30_000, 999.0)  # older than the last: ignored
    assert lr.rates["c"] == pytest.approx(30.0)
    lr.observe("c", T0 + 120_000, 1.0)  # reset: no rate until the next interval
    assert "c" not in lr.rates
    lr.observe("c", T0 + 120_000 + 700_000, 2.0)  # after a gap: none either
    assert "c" not in lr.rates
    lr.observe("x", T0, 1.0)  # not a meter of interest
    assert set(lr.rates) == {"r"}


def test_supply_events_carry_the_live_output_of_in_park_alternatives(tmp_path: Path):
    """District heat trips: the utility's heat pump output (an in-park alternative) is live, so
    the alert service ranks it by its live spare capacity, not the park file's figure alone."""
    from alerts.service import AlertService
    from tests.support.alerts import FakeClock

    sims, labels = simulate(_KB, scenario(
        [{"kind": "trip", "exchange": "district_heat", "at": "150m", "duration": "30m"}],
        "170m"), _START)
    recs = _partitioned(canonical_readings(_KB, sims, lambda: _NOW))
    drops = [e for e in DetectCore(_KB, idle_after_ms=0).process(recs).events
             if e.kind == DetectionKind.SUPPLY_DROP]
    assert [e.exchange_id for e in drops] == ["district_heat"]
    live = drops[0].live_rates
    heat_out = _KB.meter("utility.heat_out")
    assert set(live) == {"utility.heat_out"} and 0 < live["utility.heat_out"] <= heat_out.capacity
    clock = FakeClock(drops[0].ts_ms)
    svc = AlertService.create(_KB, tmp_path / "a.sqlite", [], now_ms=clock)
    svc.handle(drops[0].to_json())  # through JSON, as on the alerts topic
    clock.advance(60_000)
    alerts = [a for n in svc.tick() for a in n.alerts if a.impact]
    alt = {o["enterprise"]: o for o in alerts[0].impact["alternatives"]}  # type: ignore[index]
    assert alt["utility"]["source"] == "live"
    assert alt["utility"]["spare_capacity"] <= heat_out.capacity - live["utility.heat_out"] + 1e-9
    svc.close()


def test_lagging_may_be_a_function_called_after_the_batch_offsets_are_taken():
    c = core(tick_step_ms=1_000)
    seen: list[dict[int, int]] = []

    def lagging() -> list[int]:
        seen.append(dict(c.offsets))
        return [1]

    c.process([rec(0, 0, "a", T0 + 60_000), rec(1, 4, "b", T0 + 5_000)], lagging=lagging)
    assert seen == [{0: 1, 1: 5}] and max(c.monitor.ticks) == T0 + 5_000


def test_readings_past_the_watermark_wait_until_the_lagging_partition_catches_up():
    """Partition 0 is read first, up to 60 s; partition 1 (lagging) has reached 5 s. Feeding
    partition 0's later readings before the watermark gets there would let a meter that fell
    silent come back before any tick saw the silence (the intermittent missed `silent`)."""
    c = core(tick_step_ms=1_000)
    c.process([rec(0, 0, "a", T0 + 1_000), rec(0, 1, "a", T0 + 60_000),
               rec(1, 0, "b", T0 + 5_000)], lagging=[1])
    assert [o[1] for o in c.monitor.observed] == [T0 + 1_000, T0 + 5_000]
    assert [p[0] for p in c.pending] == [T0 + 60_000]
    c.process([rec(1, 1, "b", T0 + 70_000)], lagging=[])
    assert [o[1] for o in c.monitor.observed] == [T0 + 1_000, T0 + 5_000, T0 + 60_000,
                                                   T0 + 70_000]
    assert not c.pending
    assert c.monitor.ticks == [T0 + 1_000, T0 + 5_000, T0 + 60_000, T0 + 70_000]


def test_a_meter_silent_in_a_partition_read_ahead_is_still_seen_silent():
    """The real detectors: asnaes' gypsum meter silent for 30 min in a partition delivered in full
    before the partition of every other meter."""
    sims, labels = simulate(_KB, scenario(
        [{"kind": "meter_silence", "meter": "asnaes.gypsum_out", "at": "150m", "duration": "30m"}],
        "200m"), _START)
    readings = canonical_readings(_KB, sims, lambda: _NOW)
    ahead = [r for r in readings if r.meter == "asnaes.gypsum_out"]
    rest = [r for r in readings if r.meter != "asnaes.gypsum_out"]
    c = DetectCore(_KB, idle_after_ms=0)
    evs = c.process([Record(0, i, r.to_json()) for i, r in enumerate(ahead)], lagging=[1]).events
    assert c.pending  # held: partition 1 has not delivered anything yet
    evs += c.process([Record(1, i, r.to_json()) for i, r in enumerate(rest)], lagging=[]).events
    lab = next(lb for lb in labels if lb.kind == "meter_silence")
    assert any(e.kind == DetectionKind.DATA_QUALITY and e.meter_id == "asnaes.gypsum_out"
               and lab.start_ms < e.ts_ms <= lab.start_ms + 10 * 60_000 for e in evs)


def test_held_readings_survive_a_checkpoint_and_a_full_buffer_feeds_the_oldest(tmp_path: Path):
    c = core(tick_step_ms=1_000)
    c.process([rec(0, 0, "a", T0 + 60_000), rec(1, 0, "b", T0 + 5_000)], lagging=[1])
    save_checkpoint(tmp_path / "c", c.checkpoint("t"))
    d = core(tick_step_ms=1_000)
    data = load_checkpoint(tmp_path / "c")
    assert data is not None
    d.restore(data, "t")
    assert [(p[0], p[1], p[4].offset) for p in d.pending] == [(T0 + 60_000, "a", 0)]
    d.process([], lagging=[])
    assert d.monitor.observed[-1] == ("a", T0 + 60_000, 1.0) and not d.pending
    small = core(tick_step_ms=1_000, max_pending=1)
    small.process([rec(0, 0, "a", T0 + 60_000), rec(0, 1, "a", T0 + 61_000)], lagging=[1])
    assert [o[1] for o in small.monitor.observed] == [T0 + 60_000]
    assert small.counters.forced == 1 and len(small.pending) == 1


def test_kafka_commits_stop_at_the_first_held_reading():
    c = core(tick_step_ms=1_000)
    c.process([rec(0, 0, "a", T0 + 1_000), rec(0, 1, "a", T0 + 60_000), rec(0, 2, "a", T0 + 61_000),
               rec(1, 0, "b", T0 + 5_000)], lagging=[1])
    assert c.offsets == {0: 3, 1: 1} and c.committable_offsets() == {0: 1, 1: 1}
    c.process([rec(1, 1, "b", T0 + 90_000)], lagging=[])
    assert c.committable_offsets() == {0: 3, 1: 2}
