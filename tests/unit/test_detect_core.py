"""DetectCore (the pure part of `parkmon detect`): watermark over partitions, ticks on an
event-time grid inside a batch, idle ticks, dead letters, checkpoints."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alerts.detect.events import DataQuality, SupplyDrop
from alerts.detect_core import DetectCore, Record, load_checkpoint, save_checkpoint
from alerts.detect_testing import canonical_readings, scenario, simulate
from alerts.model import DetectionKind
from alerts.testing import toy_park
from parkmon.contracts import Reading
from parkmon.park import example_park_path, load_park

pytestmark = pytest.mark.unit

T0 = 1_790_000_000_000 - 1_790_000_000_000 % 60_000


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
