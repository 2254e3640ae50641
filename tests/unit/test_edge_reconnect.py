"""The edge service across an MQTT connection loss and at SIGTERM, without services: messages fed
on a lost connection come back from the broker (same packet id) and are not counted twice; the
idle clock never runs for a connection that is down; `checkpoint_seq` only shows durable
checkpoints and a stop always takes one. MQTT and InfluxDB are small fakes."""

from __future__ import annotations

import threading
import time

import pytest

from apps.edge.service import EdgeService
from apps.edge.settings import EdgeSettings
from parkmon.park import example_park_path, load_park
from simulators.scenarios import parse_scenario
from tests.support.edge import fleet_messages, reference_pipeline

pytestmark = pytest.mark.unit

MIN = 60_000
SCENARIO = {"name": "reconnect", "park": "kalundborg", "duration": "1h", "seed": 11,
            "events": [{"kind": "malformed", "meter": "bioenergy.biogas_out", "at": "0m",
                        "duration": "1h", "fraction": 0.5}]}


class Clock:
    def __init__(self, start: int) -> None:
        self.t = start

    def __call__(self) -> int:
        return self.t


class ReconnectingMqtt:
    """MqttIn's surface: a connection generation, and acks only on the live connection."""

    def __init__(self) -> None:
        self.acked: list[int] = []
        self.connected = True
        self.generation = 1
        self.subscribed = threading.Event()
        self.subscribed.set()
        self.last_error = None
        self.subscription = "fake"

    def ack(self, mid: int, qos: int, generation: int) -> bool:
        if not self.connected or generation != self.generation:
            return False
        self.acked.append(mid)
        return True

    def lose(self) -> None:
        self.connected = False
        self.subscribed.clear()

    def reconnect(self) -> None:
        self.generation += 1
        self.connected = True
        self.subscribed.set()

    def start(self) -> None:
        return None

    def stop(self) -> None:
        return None


class Writer:
    def write(self, points) -> None:
        return None


@pytest.fixture(scope="module")
def park():
    return load_park(example_park_path("kalundborg"))


@pytest.fixture(scope="module")
def messages(park):
    now = int(time.time() * 1000)
    start = (now - 2 * 3_600_000) // MIN * MIN
    msgs, _ = fleet_messages(park, parse_scenario(SCENARIO), start_ms=start,
                             duration_ms=3_600_000)
    return msgs


def make(park, tmp_path, clock, **kw):
    s = EdgeSettings(state_dir=str(tmp_path / "state"), influx_alerts=False, metrics_port=-1,
                     idle_after_s=5, idle_clock_rate=60, **kw)
    svc = EdgeService(park, s, point_writer=Writer(), now_ms=clock)
    svc.mqtt = ReconnectingMqtt()  # type: ignore[assignment]
    return svc


def test_messages_redelivered_after_a_connection_loss_are_not_counted_twice(park, messages,
                                                                           tmp_path):
    clock = Clock(int(time.time() * 1000))
    svc = make(park, tmp_path, clock)
    mqtt = svc.mqtt
    for i, m in enumerate(messages[:100]):
        svc._on_message(m.topic, m.payload, i + 1, 1, 1)
        clock.t += 5
        svc.step(0)
    # 30 more arrive, then the connection drops: some are fed, none can be acknowledged
    for i, m in enumerate(messages[100:130]):
        svc._on_message(m.topic, m.payload, 101 + i, 1, 1)
    mqtt.lose()
    for _ in range(5):
        clock.t += 300
        svc.step(0)
    assert svc.health_status()[1]["awaiting_redelivery"] > 0
    mqtt.reconnect()
    lost = sorted(set(range(1, 131)) - set(mqtt.acked))
    assert lost, "the scenario must leave messages unacknowledged"
    for mid in lost:  # the broker redelivers them first, same packet ids
        m = messages[mid - 1]
        svc._on_message(m.topic, m.payload, mid, 1, 2)
    for i, m in enumerate(messages[130:200]):
        svc._on_message(m.topic, m.payload, 1000 + i, 1, 2)
    for _ in range(30):
        clock.t += 100
        svc.step(0)
    assert svc.checkpoint("test")

    ref = reference_pipeline(park, messages[:200], final_ms=clock.t).counters
    c = svc.pipe.counters
    assert sum(ref.rejected.values()) > 0, "the scenario must contain rejected readings"
    assert (c.readings, c.duplicates, dict(c.rejected), c.accepted) == \
        (ref.readings, ref.duplicates, dict(ref.rejected), ref.accepted)
    assert svc.redelivered_skipped == len(lost)
    assert set(range(1, 131)) <= set(mqtt.acked) | set(range(1000, 1070))
    assert not svc._unconfirmed


def test_a_different_message_under_a_remembered_packet_id_is_fed(park, messages, tmp_path):
    clock = Clock(int(time.time() * 1000))
    svc = make(park, tmp_path, clock)
    svc._on_message(messages[0].topic, messages[0].payload, 7, 1, 1)
    svc.step(0)
    svc.mqtt.lose()
    clock.t += 1_000
    svc.step(0)
    svc.mqtt.reconnect()
    before = svc.pipe.counters.readings
    svc._on_message(messages[1].topic, messages[1].payload, 7, 1, 2)  # same id, other message
    svc.step(0)
    assert svc.pipe.counters.readings == before + len(messages[1].readings)
    assert svc.redelivered_skipped == 0


def test_the_idle_clock_does_not_run_for_a_lost_connection(park, messages, tmp_path):
    clock = Clock(int(time.time() * 1000))
    svc = make(park, tmp_path, clock)
    for i, m in enumerate(messages[:20]):
        svc._on_message(m.topic, m.payload, i + 1, 1, 1)
        svc.step(0)
    clock.t += 1_000
    svc.step(0)
    wm0 = svc.wm.value
    # lost and back within one step (a long checkpoint): the idle timer restarts all the same
    clock.t += 4_000
    svc.mqtt.lose()
    svc.mqtt.reconnect()
    for _ in range(40):  # 4 s after the reconnect: below IDLE_AFTER_S counted from it
        clock.t += 100
        svc.step(0)
    assert svc.wm.value == wm0
    svc.mqtt.lose()
    for _ in range(100):  # disconnected for 10 s: event time stays
        clock.t += 100
        svc.step(0)
    assert svc.wm.value == wm0
    svc.mqtt.reconnect()
    for _ in range(70):  # subscribed and silent for 7 s: now it is the devices' silence
        clock.t += 100
        svc.step(0)
    assert svc.wm.value is not None and wm0 is not None and svc.wm.value > wm0


def test_checkpoint_seq_is_durable_and_a_stop_always_checkpoints(park, messages, tmp_path):
    clock = Clock(int(time.time() * 1000))
    svc = make(park, tmp_path, clock)
    seen = []
    save = svc.store.save

    def watching_save(parts):
        seen.append((parts.meta["seq"], svc.health_status()[1]["checkpoint_seq"]))
        return save(parts)

    svc.store.save = watching_save  # type: ignore[method-assign]
    for i, m in enumerate(messages[:5]):
        svc._on_message(m.topic, m.payload, i + 1, 1, 1)
    svc.step(0)
    assert svc.checkpoint("test")
    # while checkpoint n is being written, health still shows n - 1
    assert seen == [(1, 0)]
    assert svc.cp.seq == 1
    assert svc.shutdown() == 0  # nothing new since: a final checkpoint all the same
    assert seen[-1] == (2, 1) and svc.cp.seq == 2
    svc2 = make(park, tmp_path, clock)
    svc2.restore()
    assert svc2.cp.restored_seq == 2


def test_after_kill9_the_acks_of_the_last_checkpoint_may_be_lost_and_nothing_counts_twice(
        park, messages, tmp_path):
    clock = Clock(int(time.time() * 1000))
    svc = make(park, tmp_path, clock)
    for i, m in enumerate(messages[:150]):
        svc._on_message(m.topic, m.payload, i + 1, 1, 1)
        clock.t += 5
        svc.step(0)
    svc._on_message(messages[150].topic, messages[150].payload, 151, 1, 1)
    svc.step(0)
    assert svc.checkpoint("test")  # state durable, PUBACKs handed to paho ... then kill -9
    last_acked = list(svc._recent_acked)
    del svc  # no shutdown: the process is gone

    clock.t += 2_000
    svc2 = make(park, tmp_path, clock)
    assert svc2.restore()
    # the PUBACKs never left the dead process: the broker redelivers the latest messages (the
    # restored state holds them), then sends the rest; it reuses an id only once acknowledged
    for mid in last_acked[-40:]:
        m = messages[mid - 1]
        svc2._on_message(m.topic, m.payload, mid, 1, 1)
    for i, m in enumerate(messages[151:200]):
        svc2._on_message(m.topic, m.payload, 5000 + i, 1, 1)
    for _ in range(30):
        clock.t += 100
        svc2.step(0)
    assert svc2.checkpoint("test")
    ref = reference_pipeline(park, messages[:200], final_ms=clock.t).counters
    c = svc2.pipe.counters
    assert sum(ref.rejected.values()) > 0
    assert (c.readings, c.duplicates, dict(c.rejected), c.accepted) == \
        (ref.readings, ref.duplicates, dict(ref.rejected), ref.accepted)
    assert svc2.redelivered_skipped == 40
    assert set(last_acked[-40:]) <= set(svc2.mqtt.acked)
