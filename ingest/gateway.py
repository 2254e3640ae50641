"""The gateway: MQTT in -> validate -> dedup -> Kafka out, acknowledging MQTT after Kafka.

Per MQTT message (on paho's network thread):
  1. validate (ingest.validate) into accepted readings and rejections;
  2. drop accepted readings already seen (ingest.dedup), counted as duplicates;
  3. produce each remaining reading to the readings topic (key = meter id) and each rejection to
     the dead-letter topic;
  4. when Kafka has acknowledged every one of those records (delivery callbacks, on the Kafka
     poll thread), acknowledge the MQTT message. A message that produced nothing (all
     duplicates) is acknowledged at once.
An exception while handling a message becomes a `processing_error` dead-letter record: a bad
message never stops the gateway. librdkafka retries transient Kafka errors without a time limit;
a permanent or fatal producer error stops the gateway *without* acknowledging, so the broker
redelivers to the next run.

Start-up: create missing topics, rebuild the dedup memory and counter baselines from the last
`dedup_replay_s` seconds of the readings topic, then connect to MQTT.
Shutdown (SIGTERM/SIGINT): stop taking new messages (they stay unacknowledged in the session),
wait until every in-flight message is acknowledged (up to `drain_timeout_s`), disconnect.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ingest.dedup import Deduplicator
from ingest.kafka_out import (
    KafkaOut,
    deadletter_record,
    ensure_topics,
    producer_config,
    replay_recent,
)
from ingest.metrics import GatewayMetrics, HealthServer
from ingest.mqtt_in import MqttIn, subscription_topic
from ingest.validate import Limits, Rejection, ValidationResult, Validator
from parkmon.config import GatewaySettings, KafkaSettings, MqttSettings
from parkmon.contracts import (
    Quality,
    Reading,
    Reason,
    kafka_deadletter_topic,
    kafka_readings_topic,
)

log = logging.getLogger("parkmon.gateway")


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class _Pending:
    """One MQTT message waiting for the Kafka acknowledgement of its records."""

    __slots__ = ("mid", "qos", "generation", "events", "expected", "t0", "tracker")

    def __init__(self, tracker: _Tracker, mid: int, qos: int, generation: int) -> None:
        self.tracker = tracker
        self.mid = mid
        self.qos = qos
        self.generation = generation
        # Completion without a lock: every record delivered (or found a duplicate) and the final
        # `seal` each draw from this counter (atomic in CPython); the draw equal to `expected`
        # (records + 1 for the seal) completes the message, whichever thread makes it.
        self.events = itertools.count(1)
        self.expected = 1
        self.t0 = time.perf_counter()

    def delivered(self, err: Any, msg: Any) -> None:  # confluent-kafka on_delivery
        if err is not None:
            self.tracker.failed(self, err, msg)
        else:
            self.tracker.release(self)


class _Tracker:
    """Counts outstanding records per message and acknowledges when a message is complete."""

    def __init__(self, ack: Callable[[int, int, int], bool], metrics: GatewayMetrics,
                 on_failure: Callable[[_Pending, Any, Any], None]) -> None:
        self._ack = ack
        self._metrics = metrics
        self._on_failure = on_failure

    @property
    def inflight(self) -> int:
        """Messages begun and not completed (received, not yet acknowledged)."""
        return self._metrics.inflight

    def begin(self, mid: int, qos: int, generation: int) -> _Pending:
        """A message arrived (MQTT thread only)."""
        self._metrics.messages_received += 1
        return _Pending(self, mid, qos, generation)

    @staticmethod
    def expect(p: _Pending, records: int) -> None:
        """Announce how many records the message makes; call before producing the first one."""
        p.expected = records + 1

    def release(self, p: _Pending) -> None:
        """One record delivered or dropped as a duplicate, or (`seal`) producing finished."""
        if next(p.events) == p.expected:
            self._complete(p)

    seal = release

    def _complete(self, p: _Pending) -> None:
        acked = self._ack(p.mid, p.qos, p.generation)
        self._metrics.complete(acked, time.perf_counter() - p.t0)

    def failed(self, p: _Pending, err: Any, msg: Any) -> None:
        self._on_failure(p, err, msg)

    def wait_idle(self, timeout_s: float) -> bool:
        """Until nothing is in flight (polled: used at shutdown only)."""
        deadline = time.monotonic() + timeout_s
        while self.inflight > 0:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True


@dataclass(frozen=True, slots=True)
class Topics:
    readings: str
    deadletter: str


class _RateLimitedLog:
    """At most one log line per reason per second, with the count of the suppressed ones."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def rejection(self, rj: Rejection, topic: str) -> None:
        now = time.monotonic()
        key = rj.reason.value
        if now - self._last.get(key, -math.inf) < 1.0:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        self._last[key] = now
        suppressed = self._suppressed.pop(key, 0)
        log.warning("reading rejected", extra={
            "event": "rejected", "reason": key, "detail": rj.message, "mqtt_topic": topic,
            "index": rj.index, "meter": rj.meter, "suppressed_since_last": suppressed})


class Gateway:
    def __init__(self, park: Any, *, gateway: GatewaySettings | None = None,
                 mqtt_settings: MqttSettings | None = None,
                 kafka: KafkaSettings | None = None,
                 now_ms: Callable[[], int] = wall_ms) -> None:
        self.park = park
        self.gw = gateway or GatewaySettings()
        self.mqtt_settings = mqtt_settings or MqttSettings()
        self.kafka_settings = kafka or KafkaSettings()
        self.now_ms = now_ms
        self.topics = Topics(self.gw.readings_topic or kafka_readings_topic(park.id),
                             self.gw.deadletter_topic or kafka_deadletter_topic(park.id))
        self.metrics = GatewayMetrics()
        self.validator = Validator(park, now_ms=now_ms, limits=Limits(
            max_payload_bytes=self.gw.max_payload_bytes, max_future_ms=self.gw.max_future_ms,
            max_past_ms=self.gw.max_past_ms,
            counter_reset_fraction=self.gw.counter_reset_fraction))
        self.dedup = Deduplicator(self.gw.dedup_per_meter)
        self.out = KafkaOut(producer_config(
            self.kafka_settings.bootstrap, client_id=f"{self.mqtt_settings.client_id}-producer",
            linger_ms=self.gw.kafka_linger_ms, compression=self.gw.kafka_compression))
        self.stop_event = threading.Event()
        self.out.on_fatal = lambda err: self.stop_event.set()
        self.mqtt = MqttIn(self.mqtt_settings, self.gw,
                           subscription_topic(park.id, self.mqtt_settings.share_group),
                           self.handle, self._on_connection)
        self.tracker = _Tracker(self.mqtt.ack, self.metrics, self._delivery_failed)
        self.draining = False
        self.health: HealthServer | None = None
        self._rlog = _RateLimitedLog()
        self._gateway_id = self.mqtt_settings.client_id
        self._keys: dict[str, bytes] = {}

    # -- one message --------------------------------------------------------------------------
    def handle(self, topic: str, payload: bytes, mid: int, qos: int, generation: int) -> None:
        if self.draining:
            return  # left unacknowledged: the broker redelivers it to the next session
        received_ms = self.now_ms()
        pending = self.tracker.begin(mid, qos, generation)
        try:
            res = self.validator.validate(topic, payload)
        except Exception as exc:  # a bug must not stop the gateway: dead-letter the message
            log.exception("validation failed", extra={"event": "processing_error",
                                                      "mqtt_topic": topic})
            res = ValidationResult(rejections=[Rejection(
                Reason.PROCESSING_ERROR, f"internal error while validating: {exc!r}")],
                readings_total=1)
        try:
            self._produce(res, topic, payload, received_ms, pending)
        except Exception:
            # Kafka refused synchronously (fatal producer error, record too large): the message
            # stays unacknowledged (the broker redelivers it to the next run) and we stop, since
            # nothing after it could be delivered with the promised guarantee either.
            log.exception("produce failed: stopping without acknowledging",
                          extra={"event": "produce_failed", "mqtt_topic": topic})
            self.stop_event.set()
            self.draining = True
            return
        self.tracker.seal(pending)

    def _produce(self, res: ValidationResult, topic: str, payload: bytes, received_ms: int,
                 pending: _Pending) -> None:
        """Produce the message's records. Delivery callbacks: one on the *last* record of each
        meter (same key, same partition; the idempotent producer with the gapless guarantee and
        no message timeout reports a partition's records in order and never skips one without a
        fatal error), and one on each dead-letter record. So the message is complete when those
        callbacks have fired."""
        m = self.metrics
        out = self.out
        cb = pending.delivered
        readings_topic = self.topics.readings
        dedup = self.dedup
        keys = self._keys
        to_send: list[tuple[bytes, bytes]] = []
        last: dict[bytes, int] = {}
        dups = 0
        uncertain = 0
        for rd in res.accepted:
            meter, seq = rd.meter, rd.seq
            if dedup.seen_or_add(meter, rd.ts_ms if seq is None else seq):
                dups += 1
                continue
            if rd.quality is not None:  # the validator sets it only for "uncertain"
                uncertain += 1
            key = keys.get(meter)
            if key is None:
                key = keys[meter] = meter.encode()
            last[key] = len(to_send)
            to_send.append((key, reading_json(rd)))
        self.tracker.expect(pending, len(last) + len(res.rejections))
        if len(last) == len(to_send):  # each meter once (e.g. single-reading messages)
            for key, value in to_send:
                out.produce(readings_topic, value, key, cb)
        else:
            with_cb = set(last.values())
            for i, (key, value) in enumerate(to_send):
                out.produce(readings_topic, value, key, cb if i in with_cb else None)
        batch_sha: str | None = None
        for rj in res.rejections:
            if res.items is not None and rj.index is not None:
                raw = _item_bytes(res.items, rj.index, payload)
                whole: bytes | None = payload
                if batch_sha is None:  # once per message, not once per bad reading
                    batch_sha = hashlib.sha256(payload).hexdigest()
            else:
                raw, whole = payload, None
            rec = deadletter_record(raw=raw, reason=rj.reason.value, message=rj.message,
                                    mqtt_topic=topic, received_ms=received_ms, index=rj.index,
                                    meter=rj.meter, whole_payload=whole, whole_sha256=batch_sha,
                                    gateway=self._gateway_id)
            out.produce(self.topics.deadletter, rec, (rj.meter or topic).encode(), cb)
            m.rejected[rj.reason.value] += 1
            self._rlog.rejection(rj, topic)
        m.readings_received += res.readings_total
        m.readings_accepted += len(to_send)
        m.duplicates += dups
        m.readings_uncertain += uncertain
        m.counter_resets += res.counter_resets

    def _delivery_failed(self, pending: _Pending, err: Any, msg: Any) -> None:
        """A record was not delivered. librdkafka retries transient errors by itself without a
        time limit, so this is permanent (or fatal): stop without acknowledging; the broker
        redelivers the message to the next run, which re-produces what is not in Kafka."""
        self.metrics.delivery_failed()
        log.error("record not delivered: stopping without acknowledging", extra={
            "event": "delivery_failed", "error": str(err),
            "topic": msg.topic() if msg is not None else None})
        self.draining = True
        self.stop_event.set()

    # -- health -------------------------------------------------------------------------------
    def _on_connection(self, up: bool) -> None:
        self.metrics.mqtt_connected = 1 if up else 0

    def health_status(self) -> tuple[bool, dict[str, Any]]:
        mq = self.mqtt.connected and self.mqtt.subscribed.is_set()
        kafka_ok = self.out.fatal is None
        ok = mq and kafka_ok and not self.draining
        return ok, {"mqtt_connected": self.mqtt.connected,
                    "mqtt_subscribed": self.mqtt.subscribed.is_set(),
                    "kafka_ok": kafka_ok, "draining": self.draining,
                    "inflight": self.tracker.inflight, "kafka_queue": len(self.out),
                    "park": self.park.id, "mqtt_error": self.mqtt.last_error,
                    "kafka_error": self.out.last_error}

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self, mqtt_thread: bool = True) -> None:
        """Prepare Kafka (topics, dedup memory), start metrics, connect MQTT. With
        `mqtt_thread=False` the caller runs the MQTT loop (`run` does, on the main thread)."""
        bootstrap = self.kafka_settings.bootstrap
        ensure_topics(bootstrap, [self.topics.readings, self.topics.deadletter],
                      partitions=self.gw.kafka_partitions, replication=self.gw.kafka_replication)
        t0 = time.monotonic()
        since = wall_ms() - self.gw.dedup_replay_s * 1000
        n = 0
        batch = []
        for rd in replay_recent(bootstrap, self.topics.readings, since):
            self.dedup.seen_or_add(rd.meter, rd.ts_ms if rd.seq is None else rd.seq)
            batch.append(rd)
            n += 1
        batch.sort(key=lambda r: r.ts_ms)
        self.validator.observe_accepted(batch)
        self.metrics.replayed += n
        log.info("dedup memory rebuilt", extra={"event": "replayed", "readings": n,
                                                "seconds": round(time.monotonic() - t0, 3),
                                                "topic": self.topics.readings})
        self.out.start()
        if self.gw.metrics_port >= 0:
            self.health = HealthServer(self.gw.metrics_host, self.gw.metrics_port,
                                       self.metrics.registry, self.health_status)
            self.health.start()
            log.info("metrics endpoint", extra={"event": "http", "host": self.gw.metrics_host,
                                                "port": self.health.port})
        if mqtt_thread:
            self.mqtt.start()
        log.info("gateway started", extra={
            "event": "started", "park": self.park.id, "subscription": self.mqtt.subscription,
            "readings_topic": self.topics.readings, "deadletter_topic": self.topics.deadletter,
            "mqtt": f"{self.mqtt_settings.host}:{self.mqtt_settings.port}",
            "kafka": bootstrap, "client_id": self.mqtt_settings.client_id})

    def run(self) -> int:
        """Start, serve MQTT on this thread until `stop_event` is set, drain, stop. Returns an
        exit code (0 clean, 1 after a fatal Kafka error)."""
        self.start(mqtt_thread=False)
        code: list[int] = []

        def supervise() -> None:
            while not self.stop_event.wait(1.0):
                pass
            code.append(self.shutdown())

        sup = threading.Thread(target=supervise, name="gateway-supervisor", daemon=True)
        sup.start()
        try:
            self.mqtt.run_forever()  # returns after shutdown() disconnects
        finally:
            self.stop_event.set()
            sup.join()
        return code[0] if code else 1

    def shutdown(self) -> int:
        self.draining = True
        fatal = self.out.fatal is not None
        log.info("draining", extra={"event": "draining", "inflight": self.tracker.inflight})
        drained = fatal or self.tracker.wait_idle(self.gw.drain_timeout_s)
        left = self.out.stop(flush_timeout_s=0 if fatal else 5.0)
        self.mqtt.stop()
        if self.health is not None:
            self.health.stop()
        log.info("gateway stopped", extra={"event": "stopped", "drained": drained,
                                           "undelivered": left,
                                           "inflight": self.tracker.inflight})
        return 1 if fatal else 0


def reading_json(rd: Reading) -> bytes:
    """The same bytes as `Reading.to_json` (the readings topic contract), about 4x faster: meter
    ids match [A-Za-z0-9_.-] (schema) so need no escaping, and repr of a finite float is JSON.
    A quality flag ("uncertain", "bad") is appended after seq, as `to_json` does; "good" and no
    flag are left out; any other string goes through `to_json` (json escaping)."""
    q = rd.quality
    if q is None or q == "good":
        if rd.seq is None:
            return f'{{"meter":"{rd.meter}","ts_ms":{rd.ts_ms},"value":{rd.value!r}}}'.encode()
        return (f'{{"meter":"{rd.meter}","ts_ms":{rd.ts_ms},"value":{rd.value!r},'
                f'"seq":{rd.seq}}}').encode()
    if q not in _PLAIN_QUALITIES:
        return rd.to_json()
    if rd.seq is None:
        return (f'{{"meter":"{rd.meter}","ts_ms":{rd.ts_ms},"value":{rd.value!r},'
                f'"quality":"{q}"}}').encode()
    return (f'{{"meter":"{rd.meter}","ts_ms":{rd.ts_ms},"value":{rd.value!r},'
            f'"seq":{rd.seq},"quality":"{q}"}}').encode()


#: quality values written by the f-string above (no JSON escaping needed)
_PLAIN_QUALITIES = frozenset({Quality.UNCERTAIN.value, Quality.BAD.value})


def _item_bytes(items: list[Any], index: int, payload: bytes) -> bytes:
    """The index-th reading of a batch, re-serialised (NaN kept as the NaN literal)."""
    try:
        return json.dumps(items[index], separators=(",", ":")).encode()
    except Exception:
        return payload
