"""Helpers for driving a real gateway in tests and benchmarks (shipped with the package, like
bytewax.testing): the gateway as a subprocess, a QoS 1 publisher with flow control, Kafka readers.

Nothing here is used by the gateway itself.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

REPO_ROOT = Path(__file__).resolve().parents[2]  # the checkout (not tests/)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@dataclass
class GatewayProcess:
    """`parkmon gateway` as its own process (python -m apps.cli gateway ...)."""

    park_file: Path
    mqtt_host: str
    mqtt_port: int
    bootstrap: str
    client_id: str
    log_file: Path
    env_extra: dict[str, str] = field(default_factory=dict)
    metrics_port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PARKMON_")}
        env.update({
            "PARKMON_MQTT_HOST": self.mqtt_host,
            "PARKMON_MQTT_PORT": str(self.mqtt_port),
            "PARKMON_MQTT_CLIENT_ID": self.client_id,
            "PARKMON_KAFKA_BOOTSTRAP": self.bootstrap,
            "PARKMON_GATEWAY_METRICS_PORT": str(self.metrics_port),
            "PYTHONPATH": str(REPO_ROOT),
        })
        env.update(self.env_extra)
        return env

    def start(self, wait_healthy_s: float = 60.0, profile_to: Path | None = None) -> None:
        if not self.metrics_port:
            self.metrics_port = free_port()
        cmd = [sys.executable]
        if profile_to is not None:
            cmd += ["-m", "pyinstrument", "-o", str(profile_to), "-r", "text",
                    "--show-all"]
        cmd += ["-m", "apps.cli", "gateway", "--park", str(self.park_file),
                "--metrics-port", str(self.metrics_port)]
        log = open(self.log_file, "ab")
        try:
            self.proc = subprocess.Popen(cmd, env=self.env(), stdout=log, stderr=log,
                                         cwd=str(REPO_ROOT))
        finally:
            log.close()
        if wait_healthy_s:
            self.wait_healthy(wait_healthy_s)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.metrics_port}{path}"

    def health(self) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(self.url("/healthz"), timeout=2) as r:
                return dict(json.loads(r.read()))
        except urllib.error.HTTPError as e:
            return dict(json.loads(e.read()))
        except (OSError, ValueError):
            return None

    def wait_healthy(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.proc.returncode}:\n"
                                   f"{self.log_tail()}")
            h = self.health()
            if h is not None and h.get("status") == "ok":
                return
            time.sleep(0.1)
        raise TimeoutError(f"gateway not healthy after {timeout_s} s:\n{self.log_tail()}")

    def metrics(self) -> dict[str, float]:
        """The gateway's Prometheus samples as {name{labels}: value}."""
        with urllib.request.urlopen(self.url("/metrics"), timeout=5) as r:
            text = r.read().decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout_s: float = 60.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout_s)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


class Publisher:
    """A QoS 1 publisher with a persistent session that survives broker restarts: unacknowledged
    messages are resent by paho after reconnecting; `publish` waits while too many are
    outstanding (paho's packet ids are 16-bit)."""

    def __init__(self, host: str, port: int, client_id: str | None = None,
                 username: str | None = None, password: str | None = None,
                 max_outstanding: int = 20_000, max_inflight: int = 1_000,
                 tls_ca: str | None = None) -> None:
        self.client_id = client_id or unique("pub")
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id,
                        protocol=mqtt.MQTTv5)
        if username:
            c.username_pw_set(username, password)
        if tls_ca:
            c.tls_set(ca_certs=tls_ca)
        c.max_inflight_messages_set(max_inflight)
        c.max_queued_messages_set(0)
        c.reconnect_delay_set(1, 2)
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self.outstanding: set[int] = set()
        self._early: set[int] = set()
        self.acked = 0
        self.failed: list[tuple[int, str]] = []
        self.connected = threading.Event()
        self.connect_rc: Any = None
        c.on_publish = self._on_publish
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        self.client = c
        self.max_outstanding = max_outstanding
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        c.connect_async(host, port, keepalive=30, clean_start=False, properties=props)
        c.loop_start()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        self.connect_rc = rc
        if not rc.is_failure:
            self.connected.set()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        self.connected.clear()

    def _on_publish(self, client: Any, userdata: Any, mid: int, rc: Any, props: Any) -> None:
        with self._cond:
            if mid in self.outstanding:
                self.outstanding.discard(mid)
            else:
                self._early.add(mid)
            if rc.is_failure:
                self.failed.append((mid, str(rc)))
            else:
                self.acked += 1
            self._cond.notify_all()

    def wait_connected(self, timeout_s: float = 10.0) -> bool:
        return self.connected.wait(timeout_s)

    def publish(self, topic: str, payload: bytes) -> int:
        with self._cond:
            while len(self.outstanding) >= self.max_outstanding:
                self._cond.wait(1.0)
        while True:
            # not under our lock: paho calls on_publish holding its own message lock
            info = self.client.publish(topic, payload, qos=1)
            if info.rc != mqtt.MQTT_ERR_QUEUE_SIZE:
                with self._cond:
                    if info.mid in self._early:  # the PUBACK beat us here
                        self._early.discard(info.mid)
                    else:
                        self.outstanding.add(info.mid)
                return int(info.mid)
            time.sleep(0.01)

    def publish_many(self, topic: str, payloads: Iterable[bytes]) -> int:
        n = 0
        for p in payloads:
            self.publish(topic, p)
            n += 1
        return n

    def wait_all(self, timeout_s: float = 120.0) -> bool:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self.outstanding:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 1.0))
        return True

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def topic_end_offsets(bootstrap: str, topic: str) -> int:
    """Sum of the end offsets of all partitions of `topic` (0 if it does not exist)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("offsets")})
    try:
        md = c.list_topics(topic, timeout=10).topics.get(topic)
        if md is None or md.error is not None:
            return 0
        total = 0
        for p in md.partitions:
            _lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            total += hi
        return total
    finally:
        c.close()


def read_topic(bootstrap: str, topic: str, *, timeout_s: float = 60.0) -> list[tuple[bytes, bytes]]:
    """Every record of `topic` (all partitions, from the beginning up to the end offsets taken at
    the call) as (key, value)."""
    # read_committed, and done by the consumer position rather than the last record's offset:
    # a transactional topic (the batch engine's outputs) ends with a commit marker, and an aborted
    # transaction's records are never returned
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("read"),
                  "enable.auto.commit": False, "auto.offset.reset": "earliest",
                  "isolation.level": "read_committed"})
    q = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("read"),
                  "isolation.level": "read_uncommitted"})  # the high watermark, not the LSO
    out: list[tuple[bytes, bytes]] = []
    try:
        md = c.list_topics(topic, timeout=10).topics.get(topic)
        if md is None or md.error is not None:
            return out
        ends = {}
        for p in md.partitions:
            lo, hi = q.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if hi > lo:
                ends[p] = hi
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        deadline = time.monotonic() + timeout_s
        while ends and time.monotonic() < deadline:
            for m in c.consume(10_000, 0.5):
                if m.error() is not None:
                    continue
                out.append((m.key() or b"", m.value() or b""))
            for tp in c.position([TopicPartition(topic, p) for p in ends]):
                if tp.offset >= ends[tp.partition]:
                    del ends[tp.partition]
        if ends:
            raise TimeoutError(f"reading {topic} did not reach the end of partitions {list(ends)}")
        return out
    finally:
        c.close()
        q.close()


def wait_for_offsets(bootstrap: str, topic: str, at_least: int, timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    n = topic_end_offsets(bootstrap, topic)
    while n < at_least and time.monotonic() < deadline:
        time.sleep(0.25)
        n = topic_end_offsets(bootstrap, topic)
    return n


def park_yaml(park_id: str, enterprises: tuple[str, str] = ("powerco", "boardco")) -> str:
    """A small park (the same meters as tests/unit/data/gateway_park.yaml) with chosen ids, so a
    test gets its own MQTT and Kafka topics."""
    a, b = enterprises
    return f"""
park: {{id: {park_id}, name: Gateway test park}}
enterprises:
  - {{id: {a}, name: Power Co, sector: energy}}
  - {{id: {b}, name: Board Co, sector: building materials}}
meters:
  - {{id: {a}.steam_out, enterprise: {a}, carrier: steam, direction: output, kind: counter,
     unit: MWh, range: [0, 100000000], capacity: 400 MWh/h, period_s: 10}}
  - {{id: {a}.gypsum_out, enterprise: {a}, carrier: material, material: gypsum,
     direction: output, kind: counter, unit: t, range: [0, 100000], rollover: 100000,
     capacity: 50 t/h, period_s: 10}}
  - {{id: {a}.power_rate, enterprise: {a}, carrier: electricity, direction: output,
     kind: rate, unit: MW, range: [0, 1500], capacity: 1500 MWh/h, period_s: 10}}
  - {{id: {b}.gypsum_in, enterprise: {b}, carrier: material, material: gypsum,
     direction: input, origin: partner, kind: counter, unit: t, range: [0, 1000000],
     capacity: 50 t/h, period_s: 10}}
  - {{id: {b}.water_in, enterprise: {b}, carrier: water, direction: input, origin: grid,
     kind: rate, unit: m3/h, range: [0, 500], capacity: 500 m3/h, period_s: 10}}
"""
