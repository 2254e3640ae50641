"""The dev services are real and behave as the rest of parkmon expects (no fakes here)."""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from parkmon import devservices
from parkmon.devservices.mosquitto import mqtt_connack

pytestmark = pytest.mark.integration


# ---- small synchronous MQTT 5 client --------------------------------------------------------------
class Mqtt:
    def __init__(self, host: str, port: int, client_id: str, username: str | None = None,
                 password: str | None = None, clean_start: bool = True,
                 session_expiry_s: int = 0) -> None:
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.acks: dict[int, int] = {}  # mid -> reason code value
        self.subacks: queue.Queue[list[int]] = queue.Queue()
        self.connected = threading.Event()
        self.connect_rc: int | None = None
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=mqtt.MQTTv5)
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.on_connect = self._on_connect
        self.client.on_message = lambda c, u, m: self.messages.put((m.topic, m.payload))
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.subacks.put([rc.value for rc in rcs])
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = session_expiry_s
        self.client.connect(host, port, keepalive=30, clean_start=clean_start, properties=props)
        self.client.loop_start()
        assert self.connected.wait(10), "no CONNACK within 10 s"

    def _on_connect(self, c: Any, u: Any, flags: Any, rc: Any, props: Any) -> None:
        self.connect_rc = rc.value
        self.connected.set()

    def _on_publish(self, c: Any, u: Any, mid: int, rc: Any, props: Any) -> None:
        self.acks[mid] = rc.value

    def subscribe(self, topic: str, qos: int = 1) -> list[int]:
        self.client.subscribe(topic, qos)
        return self.subacks.get(timeout=10)

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> int:
        info = self.client.publish(topic, payload, qos=qos)
        info.wait_for_publish(10)
        deadline = time.monotonic() + 5
        while info.mid not in self.acks and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.acks.get(info.mid, -1)

    def receive(self, count: int, timeout_s: float = 10) -> list[tuple[str, bytes]]:
        got: list[tuple[str, bytes]] = []
        deadline = time.monotonic() + timeout_s
        while len(got) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                got.append(self.messages.get(timeout=left))
            except queue.Empty:
                break
        return got

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@contextmanager
def mqtt_client(*args: Any, **kwargs: Any) -> Iterator[Mqtt]:
    c = Mqtt(*args, **kwargs)
    try:
        yield c
    finally:
        c.close()


# ---- health and idempotence -----------------------------------------------------------------------
@pytest.mark.parametrize("fixture", ["mosquitto", "mosquitto_secure", "kafka", "influx"])
def test_each_service_is_healthy_and_has_a_recorded_pid(fixture: str,
                                                         request: pytest.FixtureRequest) -> None:
    svc = request.getfixturevalue(fixture)
    assert svc.healthy()
    assert svc.host == "127.0.0.1"
    assert svc.recorded_pid() is not None, "the running instance was not started by parkmon"


def test_ensure_twice_is_one_instance(mosquitto: Any) -> None:
    again = devservices.ensure("mosquitto", quiet=True)
    try:
        assert again.recorded_pid() == mosquitto.recorded_pid()
        assert not again.started_here
    finally:
        assert again.release() == "left running (not started here)"


# ---- Mosquitto --------------------------------------------------------------------------------------
def test_mqtt_qos1_round_trip(mosquitto: Any, unique_name: Any) -> None:
    topic = f"parkmon/{unique_name('park')}/ent/readings"
    with mqtt_client(mosquitto.host, mosquitto.port, unique_name("sub")) as sub, \
            mqtt_client(mosquitto.host, mosquitto.port, unique_name("pub")) as pub:
        assert sub.subscribe(topic) == [1]
        payloads = [f'{{"meter":"m","ts_ms":{i},"value":{i}}}'.encode() for i in range(20)]
        for p in payloads:
            assert pub.publish(topic, p) == 0
        got = sub.receive(len(payloads))
    assert [p for _, p in got] == payloads


def test_secure_broker_refuses_anonymous(mosquitto_secure: Any) -> None:
    # MQTT 3.1.1 CONNACK 5 = not authorised
    assert mqtt_connack(mosquitto_secure.host, mosquitto_secure.port) == 5
    assert mqtt_connack(mosquitto_secure.host, mosquitto_secure.port, username="gateway",
                        password="wrong") == 5
    gw = mosquitto_secure.gateway()
    assert mqtt_connack(mosquitto_secure.host, mosquitto_secure.port, username=gw.username,
                        password=gw.password) == 0


def test_secure_broker_acl_confines_devices_and_gateway(mosquitto_secure: Any,
                                                        unique_name: Any) -> None:
    park = unique_name("park").replace("-", "_")
    ent_a, ent_b = unique_name("a").replace("-", "_"), unique_name("b").replace("-", "_")
    gw = mosquitto_secure.gateway(park)
    dev_a = mosquitto_secure.device(ent_a, park)
    mosquitto_secure.device(ent_b, park)
    h, p = mosquitto_secure.host, mosquitto_secure.port
    with mqtt_client(h, p, unique_name("gw"), gw.username, gw.password) as g, \
            mqtt_client(h, p, unique_name("dev"), dev_a.username, dev_a.password) as d:
        assert g.subscribe(f"parkmon/{park}/#") == [1]
        d.publish(f"parkmon/{park}/{ent_b}/readings", b"spoofed")  # another enterprise: dropped
        assert d.publish(f"parkmon/{park}/{ent_a}/readings", b"own") == 0
        got = g.receive(2, timeout_s=3)
    assert got == [(f"parkmon/{park}/{ent_a}/readings", b"own")]


def test_mosquitto_restart_keeps_persistent_session_messages(private_service: Any,
                                                             unique_name: Any) -> None:
    broker = private_service("mosquitto")
    topic = f"parkmon/{unique_name('park')}/ent/readings"
    client_id = unique_name("durable")
    # clean_start=False from the first connect: Debian's mosquitto 2.0.11 does not restore, after a
    # restart, an MQTT 5 session that was created with clean_start=True (even with an expiry).
    with mqtt_client(broker.host, broker.port, client_id, clean_start=False,
                     session_expiry_s=3600) as sub:
        assert sub.subscribe(topic) == [1]
    with mqtt_client(broker.host, broker.port, unique_name("pub")) as pub:
        for i in range(5):
            assert pub.publish(topic, str(i).encode()) == 0
    pid_before = broker.recorded_pid()
    broker.restart()
    assert broker.recorded_pid() != pid_before
    with mqtt_client(broker.host, broker.port, client_id, clean_start=False,
                     session_expiry_s=3600) as sub:
        got = sub.receive(5)
    assert [p for _, p in got] == [b"0", b"1", b"2", b"3", b"4"]


# ---- Kafka ------------------------------------------------------------------------------------------
def test_kafka_round_trip_with_aiokafka(kafka: Any, unique_name: Any) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    topic = unique_name("svc-test")

    async def run() -> list[tuple[bytes | None, bytes | None]]:
        producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all",
                                    enable_idempotence=True)
        await producer.start()
        try:
            for i in range(10):
                await producer.send_and_wait(topic, f"v{i}".encode(), key=b"meter-1")
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=kafka.bootstrap,
                                    group_id=unique_name("grp"), auto_offset_reset="earliest")
        await consumer.start()
        got: list[tuple[bytes | None, bytes | None]] = []
        try:
            deadline = time.monotonic() + 30
            while len(got) < 10 and time.monotonic() < deadline:
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    got += [(r.key, r.value) for r in records]
        finally:
            await consumer.stop()
        return got

    got = asyncio.run(run())
    # one key -> one partition -> order kept
    assert got == [(b"meter-1", f"v{i}".encode()) for i in range(10)]


def test_kafka_auto_created_topics_have_four_partitions(kafka: Any, unique_name: Any) -> None:
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient

    topic = unique_name("autocreate")
    p = Producer({"bootstrap.servers": kafka.bootstrap})
    p.produce(topic, b"x")
    assert p.flush(30) == 0
    meta = AdminClient({"bootstrap.servers": kafka.bootstrap}).list_topics(topic, timeout=10)
    assert len(meta.topics[topic].partitions) == 4


FAUST_APP = """
import json, os, signal, sys

import faust

name, bootstrap, target, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
sys.argv[1:] = ["worker", "-l", "warn"]
app = faust.App(name, broker=f"kafka://{bootstrap}", store="memory://", topic_partitions=4,
                web_enabled=False, producer_acks=-1, broker_session_timeout=10,
                broker_heartbeat_interval=1)
src = app.topic(name + "-src", key_serializer="raw", value_serializer="raw")
counts = app.Table(name + "-counts", default=int, partitions=4)


@app.agent(src)
async def count(stream):
    async for key, _value in stream.items():
        counts[key.decode()] += 1
        if sum(counts.values()) >= target:
            with open(out, "w") as fh:
                json.dump(dict(counts.items()), fh)
            os.kill(os.getpid(), signal.SIGTERM)  # graceful: commits, flushes, leaves the group
            return


app.main()
"""


def test_faust_table_recovers_from_its_changelog_on_this_kafka(kafka: Any, unique_name: Any,
                                                               tmp_path: Any) -> None:
    import json
    import subprocess
    import sys

    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    name = unique_name("faustprobe")
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap})
    admin.create_topics([NewTopic(name + "-src", 4, 1)])[name + "-src"].result(30)
    app = tmp_path / "probe_app.py"
    app.write_text(FAUST_APP)
    producer = Producer({"bootstrap.servers": kafka.bootstrap})

    def produce(n: int) -> None:
        for i in range(n):
            producer.produce(name + "-src", key=f"k{i % 3}".encode(), value=b"x")
        assert producer.flush(30) == 0

    def run_worker(target: int) -> dict[str, int]:
        out = tmp_path / f"counts-{target}.json"
        log = tmp_path / f"worker-{target}.log"
        with open(log, "wb") as fh:
            proc = subprocess.Popen([sys.executable, str(app), name, kafka.bootstrap, str(target),
                                     str(out)], cwd=tmp_path, stdout=fh, stderr=subprocess.STDOUT)
            try:
                code = proc.wait(timeout=150)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
        assert out.exists(), f"worker exit {code}; log:\n{log.read_text()[-6000:]}"
        counts: dict[str, int] = json.loads(out.read_text())
        return counts

    produce(20)
    assert run_worker(20) == {"k0": 7, "k1": 7, "k2": 6}
    produce(20)
    # the second worker restores 20 counts from the changelog and adds the 20 new readings
    assert run_worker(40) == {"k0": 14, "k1": 14, "k2": 12}

# ---- InfluxDB ---------------------------------------------------------------------------------------
def test_influx_write_and_flux_query_round_trip(influx_bucket: Any) -> None:
    from influxdb_client import InfluxDBClient, Point, WritePrecision
    from influxdb_client.client.write_api import SYNCHRONOUS

    t0 = int(time.time() * 1000) - 60_000
    values = [1.5, 2.5, 4.0]
    with InfluxDBClient(url=influx_bucket.url, token=influx_bucket.token,
                        org=influx_bucket.org) as client:
        client.write_api(write_options=SYNCHRONOUS).write(
            bucket=influx_bucket.name,
            record=[Point("flow").tag("meter", "m1").field("value", v)
                    .time(t0 + i * 1000, WritePrecision.MS) for i, v in enumerate(values)],
        )
        tables = client.query_api().query(
            f'from(bucket: "{influx_bucket.name}") |> range(start: -1h) '
            '|> filter(fn: (r) => r._measurement == "flow" and r.meter == "m1") '
            '|> sort(columns: ["_time"])'
        )
    rows = [(int(r.get_time().timestamp() * 1000), r.get_value()) for t in tables for r in t.records]
    assert rows == [(t0 + i * 1000, v) for i, v in enumerate(values)]


def test_influx_bucket_is_fresh_and_deleted_afterwards(influx: Any, unique_name: Any) -> None:
    import httpx

    name = unique_name("tmp")
    b = influx.create_bucket(name)
    headers = {"Authorization": f"Token {influx.token}"}
    found = httpx.get(f"{influx.url}/api/v2/buckets", params={"name": name}, headers=headers).json()
    assert [x["id"] for x in found["buckets"]] == [b["id"]]
    influx.delete_bucket(b["id"])
    found = httpx.get(f"{influx.url}/api/v2/buckets", params={"name": name}, headers=headers).json()
    assert found["buckets"] == []


def test_private_influx_stop_and_start_keeps_data_and_token(private_service: Any) -> None:
    from influxdb_client import InfluxDBClient, Point
    from influxdb_client.client.write_api import SYNCHRONOUS

    db = private_service("influxdb")
    assert db.port != 18086 and db.started_here
    with InfluxDBClient(url=db.url, token=db.token, org=db.org) as client:
        client.write_api(write_options=SYNCHRONOUS).write(
            bucket=db.bucket, record=Point("flow").tag("meter", "m1").field("value", 7.0))
    db.stop()
    assert not db.healthy()
    db.start()
    with InfluxDBClient(url=db.url, token=db.token, org=db.org) as client:
        tables = client.query_api().query(
            f'from(bucket: "{db.bucket}") |> range(start: -1h) |> filter(fn: (r) => r.meter == "m1")')
    assert [r.get_value() for t in tables for r in t.records] == [7.0]
