"""The edge service's durability logic without services: checkpoints (points first, then state,
then acknowledgements), restart from a checkpoint with redelivery, the broker in-flight limit, the
watermark. MQTT and InfluxDB are replaced by small fakes that record what they are given."""

from __future__ import annotations

import json
import threading
import time

import pytest

from apps.edge.intake import Watermark
from apps.edge.pipeline import EdgePipeline
from apps.edge.service import EdgeService
from apps.edge.settings import EdgeSettings
from apps.edge.sinks import BufferSink
from parkmon.errors import SinkError
from parkmon.park import example_park_path, load_park
from simulators.scenarios import parse_scenario
from tests.support.edge import fleet_messages, reference_pipeline, reference_points

pytestmark = pytest.mark.unit

MIN = 60_000
SCENARIO = {"name": "unit", "park": "kalundborg", "duration": "2h", "seed": 5,
            "events": [{"kind": "duplicates", "meter": "asnaes.flyash_out", "at": "30m",
                        "duration": "30m", "fraction": 0.3}]}


class Clock:
    def __init__(self, start: int) -> None:
        self.t = start

    def __call__(self) -> int:
        return self.t


class FakeMqtt:
    """What the service needs of ingest.mqtt_in.MqttIn; records acknowledgements."""

    def __init__(self) -> None:
        self.acked: list[int] = []
        self.connected = True
        self.subscribed = threading.Event()
        self.subscribed.set()
        self.last_error = None
        self.subscription = "fake"

    def ack(self, mid: int, qos: int, generation: int) -> bool:
        self.acked.append(mid)
        return True

    def start(self) -> None:
        return None

    def stop(self) -> None:
        return None


class RecordingWriter:
    def __init__(self) -> None:
        self.points: dict = {}
        self.fail = False
        self.calls = 0

    def write(self, points) -> None:
        self.calls += 1
        if self.fail:
            raise SinkError("InfluxDB down (fake)")
        for p in points:
            self.points[p.series_key] = dict(p.fields)


@pytest.fixture(scope="module")
def park():
    return load_park(example_park_path("kalundborg"))


@pytest.fixture(scope="module")
def run(park):
    now = int(time.time() * 1000)
    start = (now - 3 * 3_600_000) // MIN * MIN
    messages, _ = fleet_messages(park, parse_scenario(SCENARIO), start_ms=start,
                                 duration_ms=2 * 3_600_000)
    return start, messages


def make_service(park, tmp_path, clock, writer, **kw):
    s = EdgeSettings(state_dir=str(tmp_path / "state"), influx_alerts=False, metrics_port=-1,
                     idle_after_s=5, idle_clock_rate=60, **kw)
    svc = EdgeService(park, s, point_writer=writer, now_ms=clock)
    svc.mqtt = FakeMqtt()  # type: ignore[assignment]
    return svc


def feed(svc, clock, messages, first_mid):
    for i, m in enumerate(messages):
        svc._on_message(m.topic, m.payload, first_mid + i, 1, 1)
        clock.t += 5
        svc.step(0)


def settle(svc, clock, seconds):
    """Let wall time pass with no traffic (idle clock closes the last windows)."""
    for _ in range(int(seconds * 10)):
        clock.t += 100
        svc.step(0)


def test_snapshot_restore_continues_exactly_like_an_uninterrupted_run(park, run):
    start, messages = run
    cut, replay_from = int(len(messages) * 0.6), int(len(messages) * 0.5)
    ref = reference_pipeline(park, messages, final_ms=start + 3 * 3_600_000)

    def now() -> int:
        return int(time.time() * 1000)

    sink_a, sink_b = BufferSink(), BufferSink()
    a = EdgePipeline(park, now_ms=now, sink=sink_a)
    for m in messages[:cut]:
        a.feed(m.topic, m.payload)
    snap = json.loads(json.dumps(a.snapshot()))  # plain data only
    b = EdgePipeline(park, now_ms=now, sink=sink_b)
    b.restore(snap)
    b.monitor = a.monitor
    for m in messages[replay_from:]:  # an overlap, as a broker redelivery would send
        b.feed(m.topic, m.payload)
    b.advance(start + 3 * 3_600_000, force_kpis=True)
    got = {p.series_key: dict(p.fields) for p in sink_a.take()}
    got.update({p.series_key: dict(p.fields) for p in sink_b.take()})
    assert got == reference_points(park, ref)
    overlap = sum(len(m.readings) for m in messages[replay_from:cut])
    assert b.counters.duplicates == ref.counters.duplicates + overlap
    assert b.counters.accepted == ref.counters.accepted


def test_acks_follow_a_durable_checkpoint_and_a_restart_redelivers_the_rest(park, run, tmp_path):
    start, messages = run
    clock = Clock(int(time.time() * 1000))
    writer = RecordingWriter()
    svc = make_service(park, tmp_path, clock, writer, checkpoint_messages=50)
    svc.restore()
    half = len(messages) // 2
    feed(svc, clock, messages[:half], 1)
    acked = list(svc.mqtt.acked)
    assert acked == list(range(1, len(acked) + 1)), "acknowledged in order, none skipped"
    assert half - 50 < len(acked) <= half
    seq = svc.cp.seq
    # InfluxDB fails: nothing more is acknowledged, no checkpoint is written
    writer.fail = True
    feed(svc, clock, messages[half:half + 60], half + 1)
    assert svc.mqtt.acked == acked and svc.cp.seq == seq
    assert svc.health_status()[1]["influx_ok"] is False
    # "kill -9": the process is gone; the broker redelivers everything not acknowledged
    svc.store.close()
    writer.fail = False
    svc2 = make_service(park, tmp_path, clock, writer, checkpoint_messages=50)
    assert svc2.restore() and svc2.cp.restored_seq == seq and svc2.cp.restored_detectors
    redelivered = messages[len(acked):]
    feed(svc2, clock, redelivered, 10_000)
    settle(svc2, clock, 12)
    assert svc2.unacked == [] and svc2.mqtt.acked
    ref = reference_pipeline(park, messages, final_ms=start + 3 * 3_600_000)
    expected = reference_points(park, ref)
    assert set(writer.points) == set(expected)
    assert writer.points == expected
    assert svc2.pipe.counters.accepted == ref.counters.accepted
    assert svc2.pipe.counters.duplicates == ref.counters.duplicates


def test_a_pause_at_the_same_unacked_count_twice_learns_the_broker_limit(park, run, tmp_path):
    _start, messages = run
    clock = Clock(int(time.time() * 1000))
    svc = make_service(park, tmp_path, clock, RecordingWriter(), checkpoint_messages=80,
                       stall_s=0.2)
    svc.restore()
    for k in range(2):  # the broker stops sending at 20 unacknowledged messages
        feed(svc, clock, messages[k * 20:(k + 1) * 20], 1 + k * 20)
        assert len(svc.mqtt.acked) == 20 * k
        clock.t += 300
        svc.step(0)
        assert len(svc.mqtt.acked) == 20 * (k + 1)
    assert svc.cp.learned_inflight == 20
    feed(svc, clock, messages[40:60], 41)
    assert len(svc.mqtt.acked) == 60  # checkpointed at 20 without waiting for a pause
    # more than 20 unacknowledged messages arrive: the pauses were the devices', not the broker's
    for i, m in enumerate(messages[60:100]):
        svc._on_message(m.topic, m.payload, 61 + i, 1, 1)
    svc.step(0)
    assert svc.cp.learned_inflight is None


def test_watermark_follows_readings_then_the_wall_clock_when_idle():
    t0 = 1_800_000_000_000
    wm = Watermark(lag_ms=10_000, idle_after_ms=30_000, idle_rate=1.0, progress_wall_ms=t0)
    assert wm.at(t0) is None
    wm.observe(t0, wall=t0 + 5_000)
    assert wm.at(t0 + 6_000) == t0 - 10_000
    assert wm.at(t0 + 30_000) == t0 - 10_000  # idle for 25 s only
    assert wm.at(t0 + 40_000) == t0 - 10_000 + 35_000  # idle 35 s: moves on with the clock
    wm.observe(t0 - 1_000, wall=t0 + 41_000)  # an older reading: no step back, still idle
    assert wm.at(t0 + 41_000) == t0 + 26_000
    fast = Watermark(lag_ms=0, idle_after_ms=1_000, idle_rate=60.0, progress_wall_ms=t0)
    fast.observe(t0 - 3_600_000, wall=t0)  # replaying an hour-old backlog
    assert fast.at(t0 + 2_000, may_idle=False) == t0 - 3_600_000  # backlog still queued
    assert fast.at(t0 + 2_000) == t0 - 3_600_000 + 120_000
    assert fast.at(t0 + 100_000) == t0 + 100_000  # idling never passes the wall clock
