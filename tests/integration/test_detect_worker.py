"""`parkmon detect` as its own process on the real Kafka: readings topic in, detection events out.

Readings come from the simulator (Kalundborg park), normalised to canonical units exactly like the
gateway does (ingest.validate.Validator + deduplication), keyed by meter on a 3-partition topic.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from alerts.model import DetectionEvent, DetectionKind
from alerts.service import AlertService
from detect.core import load_checkpoint
from ingest.kafka_out import ensure_topics
from parkmon.contracts import Reading
from parkmon.park import example_park_path, load_park
from tests.support.alerts import FakeClock
from tests.support.detect import (
    DetectProcess,
    canonical_readings,
    produce_readings,
    read_events,
    scenario,
    simulate,
)
from tests.support.ingest import read_topic, topic_end_offsets

pytestmark = pytest.mark.integration

PARK = load_park(example_park_path("kalundborg"))
MIN = 60_000
SUPPLY = (DetectionKind.SUPPLY_DROP, DetectionKind.SUPPLY_DECLINE)


def wait_for(check: Any, timeout_s: float, what: str, proc: DetectProcess | None = None) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        if proc is not None and proc.proc is not None and proc.proc.poll() is not None:
            raise AssertionError(f"parkmon detect exited ({proc.proc.returncode}) while waiting "
                                 f"for {what}:\n{proc.log_tail()}")
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}"
                         + (f"\n{proc.log_tail()}" if proc else ""))


class Topics:
    def __init__(self, bootstrap: str, tag: str) -> None:
        self.bootstrap = bootstrap
        self.readings = f"parkmon.kalundborg.readings.{tag}"
        self.alerts = f"parkmon.kalundborg.alerts.{tag}"
        self.deadletter = f"parkmon.kalundborg.detect-deadletter.{tag}"
        self.group = f"parkmon-detect-{tag}"
        ensure_topics(bootstrap, [self.readings], partitions=3, replication=1)

    def env(self, **extra: str) -> dict[str, str]:
        return {"PARKMON_DETECT_READINGS_TOPIC": self.readings,
                "PARKMON_DETECT_ALERTS_TOPIC": self.alerts,
                "PARKMON_DETECT_DEADLETTER_TOPIC": self.deadletter,
                "PARKMON_DETECT_GROUP": self.group,
                "PARKMON_DETECT_IDLE_TICK_S": "0",  # event time only: results independent of timing
                "PARKMON_DETECT_POLL_TIMEOUT_S": "0.2", **extra}

    def events(self) -> list[DetectionEvent]:
        return read_events(self.bootstrap, self.alerts) if topic_end_offsets(
            self.bootstrap, self.alerts) else []


@pytest.fixture()
def procs() -> Iterator[list[DetectProcess]]:
    started: list[DetectProcess] = []
    yield started
    for p in started:
        p.kill9()


def stream(events: list[dict[str, Any]], duration: str) -> tuple[list[Reading], list[Any], int]:
    now = int(time.time() * 1000)
    start = now - 4 * 3_600_000  # all event times in the past, as a live fleet's would be
    sims, labels = simulate(PARK, scenario(events, duration), start)
    return canonical_readings(PARK, sims, lambda: now), labels, start


def supply(evs: list[DetectionEvent]) -> list[DetectionEvent]:
    return [e for e in evs if e.kind in SUPPLY]


def test_supply_trip_is_published_and_bad_records_are_dead_lettered(
        kafka: Any, unique_name: Any, tmp_path: Path, procs: list[DetectProcess]) -> None:
    t = Topics(kafka.bootstrap, unique_name("trip"))
    readings, labels, _ = stream([{"kind": "trip", "exchange": "gypsum", "at": "150m",
                                   "duration": "40m"}], "200m")
    trip = next(lb for lb in labels if lb.kind == "trip")
    garbage = [b"{not json", b'{"meter": "asnaes.gypsum_out"}']
    produce_readings(kafka.bootstrap, t.readings, readings, extra=garbage)

    p = DetectProcess(example_park_path("kalundborg"), kafka.bootstrap, tmp_path / "detect.log",
                      t.env())
    procs.append(p.start())
    drops = wait_for(lambda: [e for e in t.events() if e.kind == DetectionKind.SUPPLY_DROP],
                     90, "a supply_drop event", p)
    assert {e.exchange_id for e in drops} == {"gypsum"}
    d = drops[0]
    assert d.ts_ms >= trip.start_ms and d.ts_ms - trip.start_ms <= 5 * MIN
    assert d.start_ms is not None and abs(d.start_ms - trip.start_ms) <= 2 * MIN
    assert d.meter_id == "asnaes.gypsum_out" and d.magnitude >= 0.5

    dead = wait_for(lambda: read_topic(kafka.bootstrap, t.deadletter) if topic_end_offsets(
        kafka.bootstrap, t.deadletter) >= 2 else None, 30, "2 dead letters", p)
    recs = [json.loads(v) for _k, v in dead]
    assert sorted(r["reason"] for r in recs) == ["invalid_json", "schema"]
    assert {r["topic"] for r in recs} == {t.readings}
    assert p.alive(), "a bad record must not stop the worker"
    code, body = wait_for(lambda: (lambda r: r if json.loads(r[1]).get("records") == len(
        readings) + 2 else None)(p.get("/healthz")), 30, "healthz counting every record", p)
    health = json.loads(body)
    assert code == 200 and health["status"] == "ok" and health["dead"] == 2
    assert health["events"] >= 1 and health["lagging_partitions"] == []
    code, body = p.get("/metrics")
    assert code == 200 and b"parkmon_detect_dead_letters_total 2.0" in body
    assert p.stop() == 0
    lines = p.log_lines()
    assert all("raw" not in rec for rec in lines), "every log line is JSON"
    assert any(rec.get("event") == "stopped" for rec in lines)
    # the trip is the only supply finding (no false alarm on another exchange)
    assert {e.exchange_id for e in supply(t.events())} == {"gypsum"}


def test_data_quality_faults_raise_no_supply_event(
        kafka: Any, unique_name: Any, tmp_path: Path, procs: list[DetectProcess]) -> None:
    t = Topics(kafka.bootstrap, unique_name("dq"))
    readings, labels, _ = stream([
        {"kind": "meter_silence", "meter": "asnaes.gypsum_out", "at": "150m", "duration": "30m"},
        {"kind": "stuck_meter", "meter": "gyproc.gypsum_in", "at": "140m", "duration": "50m"},
        {"kind": "duplicates", "meter": "asnaes.gypsum_out", "at": "60m", "duration": "60m",
         "fraction": 0.3},
    ], "200m")
    assert not [lb for lb in labels if lb.category == "supply"]
    produce_readings(kafka.bootstrap, t.readings, readings)
    p = DetectProcess(example_park_path("kalundborg"), kafka.bootstrap, tmp_path / "detect.log",
                      t.env())
    procs.append(p.start())
    n = len(readings)
    t0 = time.monotonic()
    wait_for(lambda: _consumed(kafka.bootstrap, t) >= n, 90, "every reading consumed", p)
    print(f"\nparkmon detect: {n} readings consumed and committed {time.monotonic() - t0:.1f} s "
          "after the process was started (incl. start-up)")
    evs = t.events()
    assert not supply(evs), [e.to_dict() for e in supply(evs)]
    dq = {(e.meter_id, e.dq_kind) for e in evs if e.kind == DetectionKind.DATA_QUALITY}
    assert ("asnaes.gypsum_out", "silent") in dq, dq
    # the stuck consumer meter: its counter stops, which the cross-check calls a disagreement
    # with the supplier (or "stuck" once it has been flat long enough): a meter problem either way
    assert {k for m, k in dq if m == "gyproc.gypsum_in"} & {"stuck", "disagrees"}, dq
    silent = next(e for e in evs if e.meter_id == "asnaes.gypsum_out" and e.dq_kind == "silent")
    lab = next(lb for lb in labels if lb.kind == "meter_silence")
    assert lab.start_ms < silent.ts_ms <= lab.start_ms + 10 * MIN
    assert p.stop() == 0


def _consumed(bootstrap: str, t: Topics) -> int:
    """Sum of the offsets committed by the detect worker's group on the readings topic."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": t.group,
                  "enable.auto.commit": False})
    try:
        tps = c.committed([TopicPartition(t.readings, p) for p in range(3)], timeout=10)
        return sum(tp.offset for tp in tps if tp.offset >= 0)
    finally:
        c.close()


def _checkpoint_offsets(path: Path) -> int:
    try:
        ck = load_checkpoint(path)
    except (OSError, EOFError, ValueError):
        return -1
    return -1 if ck is None else sum(ck["offsets"].values())


def test_kill9_and_restart_mid_stream_keep_the_events_and_one_notification_per_incident(
        kafka: Any, unique_name: Any, tmp_path: Path, procs: list[DetectProcess]) -> None:
    t = Topics(kafka.bootstrap, unique_name("crash"))
    readings, labels, start = stream([{"kind": "trip", "exchange": "gypsum", "at": "150m",
                                       "duration": "30m"}], "210m")
    trip = next(lb for lb in labels if lb.kind == "trip")
    part_a = [r for r in readings if r.ts_ms < start + 140 * MIN]  # warm-up, before the trip
    part_b = [r for r in readings if start + 140 * MIN <= r.ts_ms < start + 170 * MIN]
    part_c = [r for r in readings if r.ts_ms >= start + 170 * MIN]  # the recovery
    ckpt = tmp_path / "detect.ckpt"
    det = DetectProcess(example_park_path("kalundborg"), kafka.bootstrap,
                        tmp_path / "detect.log", t.env(PARKMON_DETECT_CHECKPOINT=str(ckpt)))

    # 1. warm-up, graceful stop: the checkpoint covers exactly part A
    produce_readings(kafka.bootstrap, t.readings, part_a)
    procs.append(det.start({"PARKMON_DETECT_CHECKPOINT_INTERVAL_S": "1"}))
    wait_for(lambda: _checkpoint_offsets(ckpt) == len(part_a), 90, "checkpoint of part A", det)
    assert det.stop() == 0
    assert _checkpoint_offsets(ckpt) == len(part_a)

    # 2. the trip, then kill -9 after the event is out but before any new checkpoint
    produce_readings(kafka.bootstrap, t.readings, part_b)
    det.start({"PARKMON_DETECT_CHECKPOINT_INTERVAL_S": "3600"})
    wait_for(lambda: [e for e in t.events() if e.kind == DetectionKind.SUPPLY_DROP], 90,
             "the supply_drop before the crash", det)
    wait_for(lambda: _consumed(kafka.bootstrap, t) == len(part_a) + len(part_b), 30,
             "part B committed", det)
    det.kill9()
    assert _checkpoint_offsets(ckpt) == len(part_a), "the crash test needs a stale checkpoint"
    before = t.events()

    # 3. restart: resumes from the checkpoint (part A), replays part B, then part C; small
    #    batches, so the backlog of the three partitions is read unevenly (the watermark must wait
    #    for the partition behind, or its meters would look silent)
    det.start({"PARKMON_DETECT_CHECKPOINT_INTERVAL_S": "1", "PARKMON_DETECT_BATCH_SIZE": "300"})
    produce_readings(kafka.bootstrap, t.readings, part_c)
    total = len(readings)
    wait_for(lambda: _checkpoint_offsets(ckpt) == total, 90, "checkpoint of everything", det)
    restored = [rec for rec in det.log_lines() if rec.get("event") == "restored"]
    assert len(restored) == 2 and sum(restored[-1]["offsets"].values()) == len(part_a)
    after = t.events()
    assert det.stop() == 0

    silent = [e for e in after if e.kind == DetectionKind.DATA_QUALITY and e.dq_kind == "silent"]
    assert not silent, [e.to_dict() for e in silent]
    drops = [e for e in after if e.kind == DetectionKind.SUPPLY_DROP]
    assert {e.exchange_id for e in drops} == {"gypsum"}
    assert all(e.ts_ms >= trip.start_ms for e in drops)
    replayed = after[len(before):]
    before_ids = {e.event_id for e in before}
    assert any(e.event_id in before_ids for e in replayed), \
        "the replay of part B re-published the events of before the crash"
    assert any(e.kind == DetectionKind.RESOLVED and e.exchange_id == "gypsum" for e in after), \
        "the trip's end is found after the restart (detector state survived the crash)"

    # 4. the alert service sees every record on the topic: one notification per incident
    clock = FakeClock(after[0].ts_ms)
    svc = AlertService.create(PARK, tmp_path / "alerts.sqlite", [], now_ms=clock)
    notes = []
    for e in after:
        clock.now = max(clock.now, e.ts_ms)
        notes += svc.handle(e.to_json())
        notes += svc.tick()
    clock.advance(3_600_000)
    notes += svc.tick()
    dup = len(after) - len({e.event_id for e in after})
    assert dup > 0 and svc.counters.duplicates == dup
    new_gypsum = [n for n in notes if n.reason == "new" and any(
        a.labels.get("exchange") == "gypsum" and a.name.value == "supply_drop" for a in n.alerts)]
    assert len(new_gypsum) == 1, [(n.reason, n.status, n.group_key) for n in notes]
    consumers = {c for n in new_gypsum for a in n.alerts if a.impact
                 for c in _consumers(a.impact)}
    assert "gyproc" in consumers or "gyproc.gypsum_in" in consumers, consumers
    svc.close()


def _consumers(impact: dict[str, Any]) -> list[str]:
    out = []
    for c in impact.get("consumers", []) or impact.get("affected", []):
        if isinstance(c, dict):
            out += [str(c.get(k)) for k in ("enterprise", "meter") if c.get(k)]
        else:
            out.append(str(c))
    return out
