"""Publish simulated readings over MQTT (paho-mqtt 2.x), paced in event time.

    pub = MqttPublisher(park.id, host, port, qos=1, batch=500)
    pub.connect()
    stats = pub.run(fleet.batches(until_ms), speed=60.0)   # 60x real time; math.inf = as fast as possible
    pub.close()

Topic: `parkmon/<park>/<enterprise>/readings` (parkmon.contracts.mqtt_topic). Payload: one reading
object when batch == 1, else {"v": 1, "source": <client id>, "readings": [...]} with up to `batch`
readings of one enterprise (parkmon/schemas/reading.schema.json). Malformed readings of a scenario
are published alone, byte for byte.

Back-pressure: paho's own queue is bounded (`max_queued`); when publish() answers
MQTT_ERR_QUEUE_SIZE we wait for acknowledgements and retry, so nothing is dropped and memory stays
bounded. With QoS 1 every message is acknowledged by the broker before `close()` returns (or the
wait times out, reported in the stats).
"""

from __future__ import annotations

import json
import math
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TextIO

import paho.mqtt.client as mqtt

from parkmon.contracts import mqtt_topic
from parkmon.errors import ServiceError
from simulators.fleet import SimReading


@dataclass(slots=True)
class PublishStats:
    readings: int = 0  # readings published (malformed ones included)
    messages: int = 0
    acked: int = 0
    retries_queue_full: int = 0
    malformed: int = 0
    started_s: float = 0.0
    elapsed_s: float = 0.0
    last_event_ms: int | None = None
    unacked_at_close: int = 0
    per_enterprise: dict[str, int] = field(default_factory=dict)

    @property
    def readings_per_s(self) -> float:
        return self.readings / self.elapsed_s if self.elapsed_s > 0 else 0.0


class MqttPublisher:
    def __init__(self, park_id: str, host: str = "127.0.0.1", port: int = 18830, *, qos: int = 1,
                 batch: int = 1, client_id: str | None = None, username: str | None = None,
                 password: str | None = None, max_inflight: int = 1000, max_queued: int = 20000,
                 credentials_for: Callable[[str], tuple[str, str]] | None = None,
                 tls: bool = False, tls_ca: str | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        """`credentials_for(enterprise) -> (username, password)` switches to one MQTT connection
        per enterprise, as real devices have (needed with a per-enterprise ACL); otherwise one
        connection (optionally with `username`/`password`) publishes for every enterprise.
        `tls`: connect over TLS, verifying the broker's certificate against `tls_ca` (a CA file;
        None: the system's CAs)."""
        if batch < 1 or batch > 10000:
            raise ValueError(f"batch must be 1..10000 readings per message (payload schema), got {batch}")
        if qos not in (0, 1, 2):
            raise ValueError(f"qos must be 0, 1 or 2, got {qos}")
        self.park_id = park_id
        self.host, self.port, self.qos, self.batch = host, port, qos, batch
        self.client_id = client_id or f"parkmon-sim-{park_id}-{id(self) & 0xFFFFFF:x}"
        self._clock, self._sleep = clock, sleep
        self._username, self._password = username, password
        self._credentials_for = credentials_for
        self._tls, self._tls_ca = tls, tls_ca
        self._max_inflight, self._max_queued = max_inflight, max_queued
        self._clients: dict[str | None, mqtt.Client] = {}
        self._connected: dict[str | None, threading.Event] = {}
        self._refused: dict[str | None, str] = {}
        self._acked = 0
        self._ack_lock = threading.Lock()
        self._ack_cond = threading.Condition(self._ack_lock)
        self._topics: dict[str, str] = {}
        self._buffers: dict[str, list[dict[str, Any]]] = {}
        self.stats = PublishStats()
        self.disconnects = 0

    # -------------------------------------------------------------- connection

    def _new_client(self, key: str | None) -> mqtt.Client:
        cid = self.client_id if key is None else f"{self.client_id}-{key}"
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid,
                             protocol=mqtt.MQTTv311, clean_session=True)
        if key is None and self._username:
            client.username_pw_set(self._username, self._password)
        elif key is not None and self._credentials_for is not None:
            user, pw = self._credentials_for(key)
            client.username_pw_set(user, pw)
        if self._tls:
            client.tls_set(ca_certs=self._tls_ca)  # certificate and host name verified
        client.max_inflight_messages_set(self._max_inflight)
        client.max_queued_messages_set(self._max_queued)
        event = threading.Event()
        self._connected[key] = event

        def on_connect(c: mqtt.Client, userdata: Any, flags: Any, reason_code: Any,
                       properties: Any = None) -> None:
            if reason_code.is_failure:
                self._refused[key] = str(reason_code)
            else:
                event.set()

        def on_disconnect(c: mqtt.Client, userdata: Any, flags: Any, reason_code: Any,
                          properties: Any = None) -> None:
            event.clear()
            self.disconnects += 1

        client.on_connect = on_connect
        client.on_disconnect = on_disconnect
        client.on_publish = self._on_publish
        return client

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason_code: Any,
                    properties: Any = None) -> None:
        with self._ack_cond:
            self._acked += 1
            self._ack_cond.notify_all()

    def _connect_client(self, key: str | None, timeout_s: float = 10.0) -> mqtt.Client:
        client = self._new_client(key)
        who = "" if key is None else f" for enterprise {key!r}"
        try:
            client.connect(self.host, self.port, keepalive=30)
        except OSError as exc:
            raise ServiceError(f"cannot connect to MQTT broker {self.host}:{self.port}{who}: {exc}; "
                               "is it running (`parkmon services up`)?") from exc
        client.loop_start()
        deadline = time.monotonic() + timeout_s
        while not self._connected[key].wait(0.05):
            if key in self._refused or time.monotonic() > deadline:
                client.loop_stop()
                why = self._refused.get(key, f"no answer within {timeout_s:g}s")
                raise ServiceError(f"MQTT broker {self.host}:{self.port} refused the connection"
                                   f"{who}: {why}")
        self._clients[key] = client
        return client

    def connect(self, timeout_s: float = 10.0) -> None:
        """Connect (per-enterprise connections are opened on first use)."""
        if self._credentials_for is None:
            self._connect_client(None, timeout_s)

    def _client(self, enterprise: str) -> mqtt.Client:
        key = None if self._credentials_for is None else enterprise
        c = self._clients.get(key)
        return c if c is not None else self._connect_client(key)

    def close(self, ack_timeout_s: float = 30.0) -> PublishStats:
        self.flush()
        self.wait_acked(ack_timeout_s)
        for client in self._clients.values():
            client.disconnect()
            client.loop_stop()
        return self.stats

    def wait_acked(self, timeout_s: float) -> bool:
        if self.qos == 0:
            self.stats.acked = self.stats.messages
            return True
        deadline = time.monotonic() + timeout_s
        with self._ack_cond:
            while self._acked < self.stats.messages:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._ack_cond.wait(min(left, 0.5))
            self.stats.acked = self._acked
            self.stats.unacked_at_close = self.stats.messages - self._acked
            return self.stats.unacked_at_close == 0

    # -------------------------------------------------------------- publishing

    def _topic(self, enterprise: str) -> str:
        t = self._topics.get(enterprise)
        if t is None:
            t = self._topics[enterprise] = mqtt_topic(self.park_id, enterprise)
        return t

    def _send(self, enterprise: str, payload: bytes) -> None:
        topic = self._topic(enterprise)
        client = self._client(enterprise)
        while True:
            info = client.publish(topic, payload, qos=self.qos)
            if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
                # our own queue is full: wait for the broker to acknowledge some messages
                self.stats.retries_queue_full += 1
                with self._ack_cond:
                    self._ack_cond.wait(0.05)
                continue
            if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                raise ServiceError(f"MQTT publish failed: {mqtt.error_string(info.rc)}")
            # NO_CONN with QoS > 0: paho keeps the message and sends it after reconnecting
            if info.rc == mqtt.MQTT_ERR_NO_CONN and self.qos == 0:
                raise ServiceError("MQTT connection lost (QoS 0 messages would be dropped)")
            break
        self.stats.messages += 1

    def _send_batch(self, enterprise: str, items: list[dict[str, Any]]) -> None:
        if len(items) == 1 and self.batch == 1:
            body: Any = items[0]
        else:
            body = {"v": 1, "source": self.client_id, "readings": items}
        self._send(enterprise, json.dumps(body, separators=(",", ":")).encode())

    def add(self, r: SimReading) -> None:
        """Queue one reading; publishes when its enterprise's batch is full."""
        st = self.stats
        st.readings += 1
        st.per_enterprise[r.enterprise] = st.per_enterprise.get(r.enterprise, 0) + 1
        if r.raw is not None:
            st.malformed += 1
            self._send(r.enterprise, r.raw)
            return
        if self.batch == 1:
            self._send_batch(r.enterprise, [r.payload()])
            return
        buf = self._buffers.get(r.enterprise)
        if buf is None:
            buf = self._buffers[r.enterprise] = []
        buf.append(r.payload())
        if len(buf) >= self.batch:
            self._send_batch(r.enterprise, buf)
            self._buffers[r.enterprise] = []

    def flush(self) -> None:
        """Publish every partly filled batch."""
        for ent, buf in self._buffers.items():
            if buf:
                self._send_batch(ent, buf)
        self._buffers = {}

    def run(self, batches: Iterable[list[SimReading]], speed: float = 1.0,
            progress: Callable[[PublishStats, int], None] | None = None,
            progress_every_s: float = 1.0, stop: threading.Event | None = None) -> PublishStats:
        """Publish step batches paced so that `speed` simulated seconds pass per wall second
        (math.inf: as fast as possible; then batches fill up across steps)."""
        st = self.stats
        st.started_s = self._clock()
        wall0: float | None = None
        sim0 = 0
        next_progress = st.started_s + progress_every_s
        paced = math.isfinite(speed)
        for step in batches:
            if stop is not None and stop.is_set():
                break
            if not step:
                continue
            emit = step[-1].emit_ms
            if paced:
                if wall0 is None:
                    wall0, sim0 = self._clock(), step[0].emit_ms
                due = wall0 + (emit - sim0) / 1000.0 / speed
                delay = due - self._clock()
                if delay > 0:
                    self.flush()  # a device sends what it has before it waits
                    self._sleep(delay)
            for r in step:
                self.add(r)
            if paced:
                self.flush()
            st.last_event_ms = emit
            now = self._clock()
            st.elapsed_s = now - st.started_s
            if progress is not None and now >= next_progress:
                progress(st, self.inflight())
                next_progress = now + progress_every_s
        self.flush()
        st.elapsed_s = self._clock() - st.started_s
        return st

    def inflight(self) -> int:
        return self.stats.messages - self._acked if self.qos else 0


def progress_printer(out: TextIO = sys.stderr) -> Callable[[PublishStats, int], None]:
    """A progress line: simulated time, readings, messages, rate, unacknowledged messages."""
    import datetime as dt

    tty = out.isatty()

    def show(st: PublishStats, inflight: int) -> None:
        sim = "-" if st.last_event_ms is None else dt.datetime.fromtimestamp(
            st.last_event_ms / 1000, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        line = (f"sim {sim}  readings {st.readings:,}  messages {st.messages:,}  "
                f"{st.readings_per_s:,.0f} readings/s  unacked {inflight:,}")
        if tty:
            out.write("\r" + line + "   ")
        else:
            out.write(line + "\n")
        out.flush()

    return show
