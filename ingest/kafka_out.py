"""Kafka side of the gateway (confluent-kafka): the idempotent producer, topic creation, the
dead-letter record format and the re-read of the readings topic's recent tail after a restart.

Producer settings: `enable.idempotence=true` (implies acks=all, bounded in-flight requests and
ordered retries), `acks=all` stated explicitly, record key = meter id so one meter's readings stay
in one partition and in order. A delivery callback reports every record; the gateway acknowledges
the MQTT message only when all records made from it have been delivered.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from parkmon.contracts import Reading
from parkmon.errors import SinkError

log = logging.getLogger("parkmon.gateway.kafka")

DeliveryCallback = Callable[[Any, Any], None]

#: a dead-letter record keeps at most this much of the offending payload (Kafka's default
#: message.max.bytes is 1 MiB; the full size and a SHA-256 of the whole payload are recorded).
DEADLETTER_PAYLOAD_MAX = 64 * 1024


def producer_config(bootstrap: str, *, client_id: str, linger_ms: int = 5,
                    compression: str = "lz4", extra: dict[str, Any] | None = None
                    ) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "client.id": client_id,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": linger_ms,
        "compression.type": compression,
        "queue.buffering.max.messages": 500_000,
        "queue.buffering.max.kbytes": 1_048_576,
        "batch.num.messages": 10_000,
        # no time limit on retries, and no gap in a partition without a fatal error: the gateway
        # relies on in-order delivery reports per key (see Gateway._produce)
        "message.timeout.ms": 0,
        "enable.gapless.guarantee": True,
        "socket.keepalive.enable": True,
    }
    cfg.update(extra or {})
    return cfg


class KafkaOut:
    """The producer plus a thread that serves its delivery callbacks."""

    def __init__(self, config: dict[str, Any]) -> None:
        self._producer = Producer({**config, "error_cb": self._on_error,
                                   "logger": logging.getLogger("parkmon.gateway.librdkafka")})
        self._poller: threading.Thread | None = None
        self._running = False
        self.fatal: KafkaError | None = None
        self.on_fatal: Callable[[KafkaError], None] | None = None
        self.last_error: str | None = None

    # -- producing ----------------------------------------------------------------------------
    def produce(self, topic: str, value: bytes, key: bytes,
                on_delivery: DeliveryCallback | None) -> None:
        """Enqueue one record; blocks (serving callbacks) while the local queue is full."""
        p = self._producer
        while True:
            try:
                if on_delivery is None:
                    p.produce(topic, value, key)
                else:
                    p.produce(topic, value, key, on_delivery=on_delivery)
                return
            except BufferError:
                p.poll(0.05)  # local queue full: wait for deliveries (backpressure to MQTT)
            if self.fatal is not None:
                raise SinkError(f"Kafka producer failed fatally: {self.fatal}")

    def poll(self, timeout_s: float = 0.0) -> int:
        return int(self._producer.poll(timeout_s))

    def flush(self, timeout_s: float) -> int:
        """Wait for outstanding deliveries; returns how many records are still undelivered."""
        return int(self._producer.flush(timeout_s))

    def __len__(self) -> int:
        return len(self._producer)

    def _on_error(self, err: KafkaError) -> None:
        self.last_error = str(err)
        if err.fatal():
            self.fatal = err
            log.error("kafka fatal error", extra={"event": "kafka_fatal", "error": str(err)})
            if self.on_fatal is not None:
                self.on_fatal(err)
        else:
            log.warning("kafka error", extra={"event": "kafka_error", "error": str(err)})

    # -- the callback thread ------------------------------------------------------------------
    def start(self) -> None:
        self._running = True
        self._poller = threading.Thread(target=self._poll_loop, name="kafka-poll", daemon=True)
        self._poller.start()

    def _poll_loop(self) -> None:
        while self._running:
            self._producer.poll(0.05)

    def stop(self, flush_timeout_s: float = 10.0) -> int:
        left = self.flush(flush_timeout_s)
        self._running = False
        if self._poller is not None:
            self._poller.join(timeout=2.0)
        return left


def ensure_topics(bootstrap: str, topics: list[str], *, partitions: int, replication: int,
                  timeout_s: float = 15.0) -> None:
    """Create missing topics; existing ones are left alone."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    existing = admin.list_topics(timeout=timeout_s).topics
    missing = [t for t in topics if t not in existing]
    if not missing:
        return
    futures = admin.create_topics([NewTopic(t, partitions, replication) for t in missing],
                                  operation_timeout=timeout_s)
    for topic, fut in futures.items():
        try:
            fut.result(timeout_s)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise SinkError(f"cannot create Kafka topic {topic!r}: {exc}") from exc


def replay_recent(bootstrap: str, topic: str, since_ms: int, *, timeout_s: float = 60.0
                  ) -> Iterator[Reading]:
    """Readings appended to `topic` at or after broker time `since_ms` (all partitions), read up to
    the end offsets current when the call starts. Nothing when the topic does not exist."""
    consumer = Consumer({"bootstrap.servers": bootstrap,
                         "group.id": f"parkmon-gateway-replay-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, "enable.partition.eof": False,
                         "auto.offset.reset": "earliest"})
    try:
        md = consumer.list_topics(topic, timeout=10.0).topics.get(topic)
        if md is None or md.error is not None or not md.partitions:
            return
        tps = [TopicPartition(topic, p, since_ms) for p in md.partitions]
        starts = _retrying(lambda: consumer.offsets_for_times(tps, timeout=10.0))
        assign, ends = [], {}
        def watermarks(partition: int) -> tuple[int, int]:
            return _retrying(lambda: consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=10.0))

        for tp in starts:
            _low, high = watermarks(tp.partition)
            if tp.offset < 0 or tp.offset >= high:
                continue
            assign.append(TopicPartition(topic, tp.partition, tp.offset))
            ends[tp.partition] = high
        if not assign:
            return
        consumer.assign(assign)
        deadline = time.monotonic() + timeout_s
        while ends and time.monotonic() < deadline:
            for msg in consumer.consume(10_000, 0.5):
                if msg.error() is not None:
                    continue
                part = msg.partition()
                if part not in ends or msg.offset() >= ends[part]:
                    continue
                value = msg.value()
                try:
                    yield Reading.from_json(value)
                except (ValueError, KeyError, TypeError):
                    pass  # not a reading: nothing to remember
                if msg.offset() >= ends[part] - 1:
                    del ends[part]
        if ends:
            raise SinkError(f"re-reading {topic!r} did not reach the end offsets in {timeout_s} s "
                            f"(partitions {sorted(ends)})")
    finally:
        consumer.close()


def _retrying(call: Callable[[], Any], timeout_s: float = 30.0) -> Any:
    """Retry a metadata call while the cluster settles (a just-created topic has no leader yet)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return call()
        except KafkaException as exc:
            err = exc.args[0]
            if time.monotonic() > deadline or not (err.retriable() or err.code() in (
                    KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
                    KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._TIMED_OUT)):
                raise SinkError(f"Kafka metadata request failed: {err}") from exc
            time.sleep(0.2)


def deadletter_record(*, raw: bytes, reason: str, message: str, mqtt_topic: str, received_ms: int,
                      index: int | None = None, meter: str | None = None,
                      whole_payload: bytes | None = None, whole_sha256: str | None = None,
                      gateway: str = "") -> bytes:
    """JSON of one dead-letter record.

    `raw` is what was refused: the whole MQTT payload, or for one reading of a batch that reading
    re-serialised (then `index` is its position and `batch_sha256`/`batch_bytes` identify the batch).
    The payload is kept as text when it is UTF-8, otherwise base64 (`payload_encoding`), and cut to
    DEADLETTER_PAYLOAD_MAX bytes (`payload_truncated`); `payload_sha256` is of the full bytes, so a
    consumer can recognise the same refusal delivered twice (MQTT redelivery). `whole_sha256`, when
    given, is the SHA-256 (hex) of `whole_payload`, computed once per message by the caller: a 1 MiB
    batch with 10,000 bad readings would otherwise be hashed 10,000 times (about 20 s).
    """
    cut = raw[:DEADLETTER_PAYLOAD_MAX]
    try:
        text, encoding = cut.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(cut).decode("ascii"), "base64"
    rec: dict[str, Any] = {
        "reason": reason,
        "message": message,
        "mqtt_topic": mqtt_topic,
        "received_ms": received_ms,
        "index": index,
        "meter": meter,
        "payload": text,
        "payload_encoding": encoding,
        "payload_bytes": len(raw),
        "payload_truncated": len(raw) > len(cut),
        "payload_sha256": hashlib.sha256(raw).hexdigest(),
        "gateway": gateway,
    }
    if whole_payload is not None:
        rec["batch_sha256"] = whole_sha256 or hashlib.sha256(whole_payload).hexdigest()
        rec["batch_bytes"] = len(whole_payload)
    return json.dumps(rec, separators=(",", ":")).encode("ascii")


def decode_deadletter_payload(rec: dict[str, Any]) -> bytes:
    """The payload bytes stored in a dead-letter record (inverse of the encoding above)."""
    if rec["payload_encoding"] == "base64":
        return base64.b64decode(rec["payload"])
    return str(rec["payload"]).encode("utf-8")
