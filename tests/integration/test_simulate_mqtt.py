"""A Kalundborg-like simulated run received over the real Mosquitto (dev service fixture)."""

from __future__ import annotations

import json
import math
import threading
import time
import uuid
from collections import Counter
from typing import Any

import jsonschema
import paho.mqtt.client as mqtt
import pytest

from parkmon.contracts import mqtt_subscription, parse_mqtt_topic, reading_payload_schema
from parkmon.park import example_park_path, load_park
from simulators import Fleet, FleetOptions, SimReading
from simulators.publisher import MqttPublisher
from simulators.scenarios import parse_scenario

pytestmark = pytest.mark.integration

T0 = 1_767_225_600_000
HOUR = 3_600_000


class Collector:
    """A QoS 1 subscriber on one park's readings topics."""

    def __init__(self, host: str, port: int, park_id: str) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=f"it-sim-sub-{uuid.uuid4().hex[:8]}")
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.connect(host, port)
        self.client.subscribe(mqtt_subscription(park_id), qos=1)
        self.client.loop_start()
        assert self._subscribed.wait(10), "subscription not acknowledged"

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, msg.payload))

    def wait_for(self, n_messages: int, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.messages) >= n_messages:
                    return
            time.sleep(0.05)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _publish(mosquitto: Any, park_id: str, readings: list[list[SimReading]], batch: int,
             speed: float = math.inf) -> tuple[Collector, MqttPublisher]:
    col = Collector(mosquitto.host, mosquitto.port, park_id)
    pub = MqttPublisher(park_id, mosquitto.host, mosquitto.port, qos=1, batch=batch,
                        client_id=f"it-sim-pub-{uuid.uuid4().hex[:8]}")
    pub.connect()
    pub.run(readings, speed=speed)
    st = pub.close(ack_timeout_s=60)
    assert st.unacked_at_close == 0
    col.wait_for(st.messages)
    col.close()
    return col, pub


@pytest.mark.parametrize("batch", [1, 200])
def test_kalundborg_run_is_received_complete_and_valid(mosquitto: Any, batch: int) -> None:
    park = load_park(example_park_path("kalundborg"))
    fleet = Fleet(park, seed=3, start_ms=T0, options=FleetOptions(counter_resets_per_day=0.0))
    batches = list(fleet.batches(T0 + (HOUR if batch == 1 else 6 * HOUR)))
    sent = [r for b in batches for r in b]
    park_id = f"kbg{uuid.uuid4().hex[:8]}"
    col, pub = _publish(mosquitto, park_id, batches, batch)

    assert len(col.messages) == pub.stats.messages
    schema = jsonschema.Draft202012Validator(reading_payload_schema())
    received: list[dict[str, Any]] = []
    for topic, payload in col.messages:
        parsed = parse_mqtt_topic(topic)
        assert parsed is not None and parsed[0] == park_id
        doc = json.loads(payload)
        schema.validate(doc)
        items = doc["readings"] if "readings" in doc else [doc]
        if batch > 1:
            assert "readings" in doc and len(items) <= batch
        for item in items:  # every meter publishes on its own enterprise's topic
            assert park.meter(item["meter"]).enterprise == parsed[1]
        received.extend(items)
    # QoS 1 may deliver a message twice; every sent reading arrives, with identical content
    key = lambda d: (d["meter"], d["seq"])  # noqa: E731
    got = {key(d): d for d in received}
    assert set(got) == {(r.meter, r.seq) for r in sent}
    for r in sent:
        assert got[(r.meter, r.seq)] == r.payload()


def test_faulty_devices_over_mqtt_match_their_labels(mosquitto: Any) -> None:
    park = load_park(example_park_path("kalundborg"))
    scenario = parse_scenario({"name": "it", "events": [
        {"kind": "duplicates", "meter": "asnaes.gypsum_out", "at": "10m", "duration": "40m", "fraction": 0.5},
        {"kind": "malformed", "meter": "bioenergy.biogas_out", "at": "5m", "duration": "30m", "fraction": 0.5},
        {"kind": "meter_silence", "meter": "gyproc.power_in", "at": "20m", "duration": "15m"},
    ]})
    fleet = Fleet(park, seed=5, start_ms=T0, scenario=scenario,
                  options=FleetOptions(counter_resets_per_day=0.0))
    batches = list(fleet.batches(T0 + HOUR)) + [fleet.drain()]
    park_id = f"kbgf{uuid.uuid4().hex[:8]}"
    col, pub = _publish(mosquitto, park_id, [b for b in batches if b], batch=50)
    labels = {lb.kind: lb for lb in fleet.labels}

    raw_bad = 0
    readings: list[dict[str, Any]] = []
    for _topic, payload in col.messages:
        try:
            doc = json.loads(payload)
        except json.JSONDecodeError:
            raw_bad += 1
            continue
        if isinstance(doc, dict) and "readings" in doc:
            readings.extend(doc["readings"])
        else:  # a single (malformed) message
            raw_bad += 1
    assert raw_bad == sum(labels["malformed"].details["malformed"].values()) > 0
    seqs = Counter((d["meter"], d["seq"]) for d in readings if d["meter"] == "asnaes.gypsum_out")
    assert sum(n - 1 for n in seqs.values()) >= labels["duplicates"].details["duplicates"] > 0
    silent = labels["meter_silence"]
    assert not [d for d in readings if d["meter"] == "gyproc.power_in"
                and silent.start_ms <= d["ts_ms"] < silent.end_ms]
    assert pub.stats.malformed == raw_bad


def test_real_time_pacing(mosquitto: Any) -> None:
    """At speed 600 one simulated minute takes 0.1 s of wall time."""
    park = load_park(example_park_path("kalundborg"))
    fleet = Fleet(park, seed=1, start_ms=T0)
    batches = list(fleet.batches(T0 + 10 * 60_000))  # 10 steps
    t = time.monotonic()
    _publish(mosquitto, f"kbgp{uuid.uuid4().hex[:8]}", batches, batch=100, speed=600.0)
    elapsed = time.monotonic() - t
    assert elapsed >= 0.85  # 9 minutes between first and last step / 600


def test_one_connection_per_enterprise_on_the_secured_broker(mosquitto_secure: Any) -> None:
    """Each enterprise publishes with its own device user, which the ACL limits to its topic."""
    from parkmon.park.generator import generate_park

    tag = uuid.uuid4().hex[:6]
    park_id = f"sec{tag}"
    park = generate_park(3, 16, seed=2, park_id=park_id, enterprise_prefix=f"s{tag}x")
    creds = {e.id: mosquitto_secure.device(e.id, park=park_id) for e in park.enterprises}
    gw = mosquitto_secure.gateway(park=park_id)

    received: list[bytes] = []
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"it-sec-sub-{tag}")
    sub.username_pw_set(gw.username, gw.password)
    subscribed = threading.Event()
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.on_message = lambda c, u, m: received.append(m.payload)
    sub.connect(mosquitto_secure.host, mosquitto_secure.port)
    sub.subscribe(mqtt_subscription(park_id), qos=1)
    sub.loop_start()
    assert subscribed.wait(10)

    fleet = Fleet(park, seed=1, start_ms=T0)
    batches = list(fleet.batches(T0 + 30 * 60_000))
    pub = MqttPublisher(park_id, mosquitto_secure.host, mosquitto_secure.port, qos=1, batch=20,
                        client_id=f"it-sec-pub-{tag}",
                        credentials_for=lambda ent: (creds[ent].username, creds[ent].password))
    pub.connect()
    pub.run(batches, speed=math.inf)
    st = pub.close()
    deadline = time.monotonic() + 30
    while len(received) < st.messages and time.monotonic() < deadline:
        time.sleep(0.05)
    sub.loop_stop()
    sub.disconnect()
    got = {(d["meter"], d["seq"]) for p in received for d in json.loads(p)["readings"]}
    assert got == {(r.meter, r.seq) for b in batches for r in b}


def test_wrong_password_is_a_clear_error(mosquitto_secure: Any) -> None:
    from parkmon.errors import ServiceError

    pub = MqttPublisher("secx", mosquitto_secure.host, mosquitto_secure.port,
                        client_id=f"it-sec-bad-{uuid.uuid4().hex[:6]}",
                        username="dev_nobody", password="wrong")
    with pytest.raises(ServiceError, match="refused the connection"):
        pub.connect(timeout_s=5)


def test_full_client_queue_is_waited_out_not_dropped(mosquitto: Any) -> None:
    """With a tiny paho queue publish() answers MQTT_ERR_QUEUE_SIZE; the publisher waits for
    acknowledgements and retries, so every reading still arrives."""
    park = load_park(example_park_path("kalundborg"))
    fleet = Fleet(park, seed=2, start_ms=T0)
    batches = list(fleet.batches(T0 + 20 * 60_000))  # 980 readings, one message each
    park_id = f"kbgq{uuid.uuid4().hex[:8]}"
    col = Collector(mosquitto.host, mosquitto.port, park_id)
    pub = MqttPublisher(park_id, mosquitto.host, mosquitto.port, qos=1, batch=1,
                        client_id=f"it-simq-{uuid.uuid4().hex[:8]}", max_inflight=5, max_queued=5)
    pub.connect()
    pub.run(batches, speed=math.inf)
    st = pub.close()
    col.wait_for(st.messages)
    col.close()
    assert st.retries_queue_full > 0
    assert st.unacked_at_close == 0
    got = {(d["meter"], d["seq"]) for _, p in col.messages for d in [json.loads(p)]}
    assert got == {(r.meter, r.seq) for b in batches for r in b}


@pytest.mark.e2e
def test_broker_restart_during_a_run_loses_nothing(private_service: Any) -> None:
    """QoS 1: messages sent while the broker restarts are kept by paho and re-sent after the
    automatic reconnect; a persistent-session subscriber ends up with every reading."""
    broker = private_service("mosquitto")
    park = load_park(example_park_path("kalundborg"))
    fleet = Fleet(park, seed=4, start_ms=T0)
    batches = list(fleet.batches(T0 + 40 * 60_000))  # 40 steps
    park_id = f"kbgr{uuid.uuid4().hex[:8]}"

    received: list[bytes] = []
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"it-simr-sub-{park_id}",
                      clean_session=False)
    sub.reconnect_delay_set(0.1, 0.5)
    subscribed = threading.Event()
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.on_message = lambda c, u, m: received.append(m.payload)
    sub.connect(broker.host, broker.port)
    sub.subscribe(mqtt_subscription(park_id), qos=1)
    sub.loop_start()
    assert subscribed.wait(10)

    pub = MqttPublisher(park_id, broker.host, broker.port, qos=1, batch=10,
                        client_id=f"it-simr-pub-{park_id}")
    pub.connect()
    pub._client("x").reconnect_delay_set(0.1, 0.5)  # noqa: SLF001 - shorten the test

    def restart_later() -> None:
        time.sleep(1.0)
        broker.restart()

    t = threading.Thread(target=restart_later)
    t.start()
    pub.run(batches, speed=600.0)  # 40 simulated minutes in 4 s
    t.join()
    st = pub.close(ack_timeout_s=60)
    assert pub.disconnects >= 1
    assert st.unacked_at_close == 0
    deadline = time.monotonic() + 30
    want = {(r.meter, r.seq) for b in batches for r in b}
    got: set[tuple[str, int]] = set()
    while time.monotonic() < deadline:
        got = {(d["meter"], d["seq"]) for p in list(received) for d in json.loads(p)["readings"]}
        if got >= want:
            break
        time.sleep(0.1)
    sub.loop_stop()
    sub.disconnect()
    assert got == want
