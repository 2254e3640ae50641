"""`parkmon detect --park FILE`: the detectors on the readings topic, detection events to the alerts
topic. Runs until SIGTERM/SIGINT.

    parkmon.<park>.readings  --(ParkMonitor, detect/core.py)-->  parkmon.<park>.alerts
                                                                   \\-> parkmon.<park>.detect-deadletter

Per poll batch: readings are fed to the detectors in event-time order, the detectors are ticked with
the watermark, every detection event is produced (key: exchange, else meter; idempotent producer,
acks=all) and flushed, and only then are the consumed offsets committed: at-least-once. An event
produced again after a crash has the same `event_id` and is dropped by `parkmon alerts`.

One process per park reads **all** partitions of the readings topic (the cross-check of an exchange
needs its supplier's and its consumers' meters in the same process): partitions are `assign`ed,
not shared through a consumer group; the group id (default `parkmon-detect-<park>`) is only where
offsets are committed. Run exactly one per park (a second one would emit the same events twice;
they are deduplicated by event id, but it doubles the work).

Detector state: with PARKMON_DETECT_CHECKPOINT=FILE the detectors are written (versioned JSON, parkmon/state.py) to FILE every
PARKMON_DETECT_CHECKPOINT_INTERVAL_S together with the offsets they cover (atomic write), and a
restart resumes from there (seeking to those offsets). Without a checkpoint (or with one written for
another park file) the worker starts from the group's committed offsets with fresh detectors, which
re-learn their baselines (warm-up: 2 h of event time) before they can alarm again.

Configuration (environment): PARKMON_KAFKA_BOOTSTRAP, PARKMON_DETECT_* (see DetectSettings).
Logs are JSON lines on stderr; GET /metrics (Prometheus) and /healthz (JSON, 503 when the loop
stalls) on PARKMON_DETECT_METRICS_PORT (default 9111, -1 off).
Exit codes: 0 clean stop, 1 Kafka failure, 2 bad configuration.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from detect.core import (
    BatchResult,
    DeadLetter,
    DetectCore,
    Record,
    event_key,
    load_checkpoint,
    save_checkpoint,
)
from parkmon.contracts import kafka_alerts_topic, kafka_readings_topic
from parkmon.errors import ConfigError, ParkmonError, SinkError

log = logging.getLogger("parkmon.detect")


class DetectSettings(BaseSettings):
    """Settings of `parkmon detect` (env prefix PARKMON_DETECT_; Kafka bootstrap in KafkaSettings)."""

    model_config = SettingsConfigDict(env_prefix="PARKMON_DETECT_", frozen=True, extra="ignore")

    park_file: str | None = None
    readings_topic: str | None = None  # default parkmon.<park>.readings
    alerts_topic: str | None = None  # default parkmon.<park>.alerts
    deadletter_topic: str | None = None  # default parkmon.<park>.detect-deadletter
    group: str | None = None  # default parkmon-detect-<park> (offsets only, see module doc)
    checkpoint: str | None = None  # file of the detectors' state; unset: re-learn after restart
    checkpoint_interval_s: float = 30.0
    idle_tick_s: float = 60.0  # tick with the wall clock after this long without records; 0: off
    tick_step_ms: int = 10_000  # event-time grid of the detectors' ticks inside a batch
    batch_size: int = 5_000
    poll_timeout_s: float = 0.5
    topic_partitions: int = 1  # partitions of the alerts / dead-letter topics when created here
    topic_replication: int = 1
    metadata_refresh_s: float = 60.0  # look for new partitions of the readings topic
    flush_timeout_s: float = 30.0
    stats_interval_s: float = 30.0
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9111  # GET /metrics and /healthz; 0 picks a free port, -1 disables
    healthy_within_s: float = 60.0  # /healthz is 503 when the loop has not turned for this long
    log_level: str = "INFO"


def detect_deadletter_topic(park_id: str) -> str:
    return f"parkmon.{park_id}.detect-deadletter"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def deadletter_value(d: DeadLetter, topic: str, received_ms: int) -> bytes:
    try:
        payload, enc = d.record.value.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        import base64

        payload, enc = base64.b64encode(d.record.value).decode(), "base64"
    return json.dumps({
        "reason": d.reason, "message": d.message[:2000], "source": "parkmon-detect",
        "topic": topic, "partition": d.record.partition, "offset": d.record.offset,
        "received_ms": received_ms, "payload": payload[:65536], "payload_encoding": enc,
    }).encode()


class DetectWorker:
    """The Kafka shell around DetectCore. `stop` ends the loop after the current batch."""

    def __init__(self, park: Any, settings: DetectSettings, bootstrap: str, *,
                 clock: Callable[[], int] = now_ms, stop: threading.Event | None = None) -> None:
        from confluent_kafka import Consumer, Producer

        self.park = park
        self.s = settings
        self.bootstrap = bootstrap
        self.clock = clock
        self.stop = stop or threading.Event()
        self.readings_topic = settings.readings_topic or kafka_readings_topic(park.id)
        self.alerts_topic = settings.alerts_topic or kafka_alerts_topic(park.id)
        self.deadletter_topic = settings.deadletter_topic or detect_deadletter_topic(park.id)
        self.group = settings.group or f"parkmon-detect-{park.id}"
        self.core = DetectCore(park, idle_after_ms=int(settings.idle_tick_s * 1000),
                               tick_step_ms=settings.tick_step_ms)
        client_id = f"{self.group}-{os.getpid()}"
        kafka_log = logging.getLogger("parkmon.detect.librdkafka")  # librdkafka's lines as JSON
        self.consumer = Consumer({
            "bootstrap.servers": bootstrap, "group.id": self.group, "client.id": client_id,
            "enable.auto.commit": False, "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest", "enable.partition.eof": False, "logger": kafka_log,
        })
        self.producer = Producer({
            "bootstrap.servers": bootstrap, "client.id": client_id, "enable.idempotence": True,
            "acks": "all", "linger.ms": 5, "message.timeout.ms": 0, "logger": kafka_log,
        })
        self._delivery_errors: list[str] = []
        self._partitions: list[int] = []
        self._committed: dict[int, int] = {}
        self._last_ckpt_wall = self.clock()
        self._last_meta_wall = self.clock()
        self._last_stats_wall = self.clock()
        self.produced = 0
        self.lagging: list[int] = []
        self.last_step_wall: int | None = None
        self.health_server: Any = None

    # -- start ----------------------------------------------------------------------------------
    def _on_delivery(self, err: Any, msg: Any) -> None:
        if err is not None:
            self._delivery_errors.append(f"{msg.topic()}: {err}")

    def _ensure_output_topics(self, timeout_s: float = 15.0) -> None:
        """Create the alerts and dead-letter topics when missing (existing ones are left alone)."""
        from confluent_kafka import KafkaError, KafkaException
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"bootstrap.servers": self.bootstrap,
                             "logger": logging.getLogger("parkmon.detect.librdkafka")})
        existing = admin.list_topics(timeout=timeout_s).topics
        missing = [t for t in (self.alerts_topic, self.deadletter_topic) if t not in existing]
        if not missing:
            return
        futures = admin.create_topics([NewTopic(t, self.s.topic_partitions,
                                                self.s.topic_replication) for t in missing],
                                      operation_timeout=timeout_s)
        for topic, fut in futures.items():
            try:
                fut.result(timeout_s)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise SinkError(f"cannot create Kafka topic {topic!r}: {exc}") from exc
        log.info("created topics", extra={"event": "topics_created", "topics": missing})

    def _readings_partitions(self, timeout_s: float = 10.0) -> list[int]:
        md = self.consumer.list_topics(self.readings_topic, timeout=timeout_s)
        t = md.topics.get(self.readings_topic)
        if t is None or t.error is not None or not t.partitions:
            return []
        return sorted(t.partitions)

    def start(self) -> None:
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition

        self._ensure_output_topics()
        restored = self._restore()
        parts = self._readings_partitions()
        while not parts and not self.stop.is_set():
            log.info("waiting for the readings topic", extra={"event": "waiting",
                                                              "topic": self.readings_topic})
            self.stop.wait(2.0)
            parts = self._readings_partitions()
        committed = {tp.partition: tp.offset for tp in self.consumer.committed(
            [TopicPartition(self.readings_topic, p) for p in parts], timeout=30)
            if tp.offset >= 0}
        assign = []
        for p in parts:
            if restored and p in self.core.offsets:
                off = self.core.offsets[p]
            elif not restored and p in committed:
                off = committed[p]
                self.core.offsets[p] = off  # where this run's reading starts (lag is from here)
            else:
                off = OFFSET_BEGINNING
            assign.append(TopicPartition(self.readings_topic, p, off))
        self.consumer.assign(assign)
        self._partitions = parts
        log.info("started", extra={
            "event": "started", "park": self.park.id, "readings_topic": self.readings_topic,
            "alerts_topic": self.alerts_topic, "group": self.group, "partitions": parts,
            "from_checkpoint": restored,
            "start_offsets": {tp.partition: tp.offset for tp in assign}})

    def _restore(self) -> bool:
        path = self.s.checkpoint
        if not path:
            log.info("no checkpoint configured: detectors start fresh after every restart",
                     extra={"event": "no_checkpoint"})
            return False
        try:
            ckpt = load_checkpoint(path)
            if ckpt is None:
                return False
            self.core.restore(ckpt, self.readings_topic)
        except Exception as exc:  # noqa: BLE001 - a bad checkpoint means re-learning, not a crash
            log.warning("checkpoint not usable, detectors re-learn", extra={
                "event": "checkpoint_discarded", "path": path, "error": repr(exc)})
            return False
        log.info("restored checkpoint", extra={"event": "restored", "path": path,
                                               "offsets": self.core.offsets,
                                               "watermark_ms": self.core.last_tick_ms})
        return True

    # -- loop -----------------------------------------------------------------------------------
    def run(self) -> int:
        self.start_health_server()
        self.start()
        try:
            while not self.stop.is_set():
                self.step()
            self._checkpoint()
            return 0
        except SinkError as exc:
            log.error("stopping without committing", extra={"event": "failed", "error": str(exc)})
            return 1
        finally:
            self.consumer.close()
            self.producer.flush(5)
            if self.health_server is not None:
                self.health_server.stop()

    def step(self) -> BatchResult:
        msgs = self.consumer.consume(num_messages=self.s.batch_size, timeout=self.s.poll_timeout_s)
        records = []
        for m in msgs:
            if m.error() is not None:
                log.warning("kafka consume error", extra={"event": "consume_error",
                                                          "error": str(m.error())})
                continue
            records.append(Record(m.partition(), m.offset(), m.value() or b"", m.key()))
        wall = self.clock()
        if records:
            res = self.core.process(records, self._refresh_lagging, wall_ms=wall)
        else:  # held readings the watermark now passes go in, then the idle clock may tick
            res = self.core.process((), self._refresh_lagging)
            idle = self.core.idle_tick(wall)
            res.events += idle.events
            res.dead += idle.dead
            res.readings += idle.readings
            res.ticked_to_ms = idle.ticked_to_ms or res.ticked_to_ms
        self._publish(res, wall)
        self._commit()  # a no-op unless an offset moved
        self._housekeeping(wall)
        self.last_step_wall = wall
        return res

    # -- health and metrics ---------------------------------------------------------------------
    def health(self) -> tuple[bool, dict[str, Any]]:
        c = self.core.counters
        age = None if self.last_step_wall is None else (self.clock() - self.last_step_wall) / 1000
        ok = age is not None and age <= self.s.healthy_within_s
        return ok, {"park": self.park.id, "loop_age_s": age, "watermark_ms": self.core.last_tick_ms,
                    "records": c.records, "events": c.events, "dead": c.dead,
                    "lagging_partitions": list(self.lagging), "partitions": self._partitions}

    def start_health_server(self) -> int | None:
        if self.s.metrics_port < 0:
            return None
        from prometheus_client import CollectorRegistry

        from ingest.metrics import HealthServer

        registry = CollectorRegistry()
        registry.register(_DetectCollector(self))  # type: ignore[arg-type]
        self.health_server = HealthServer(self.s.metrics_host, self.s.metrics_port, registry,
                                          self.health)
        self.health_server.start()
        port = int(self.health_server.port)
        log.info("metrics endpoint", extra={"event": "http", "host": self.s.metrics_host,
                                            "port": port})
        return port

    def _refresh_lagging(self) -> list[int]:
        self.lagging = self._lagging()
        return self.lagging

    def _lagging(self) -> list[int]:
        """Partitions with records still to read (their cached high watermark is beyond what we
        have read), so their event time holds the watermark back."""
        from confluent_kafka import TopicPartition

        out = []
        for p in self._partitions:
            tp = TopicPartition(self.readings_topic, p)
            try:
                lo, hi = self.consumer.get_watermark_offsets(tp, cached=True)
                if hi is None or hi < 0:  # not fetched from yet: ask the broker
                    lo, hi = self.consumer.get_watermark_offsets(tp, timeout=5, cached=False)
            except Exception:  # noqa: BLE001 - unknown: hold the watermark (no false silences)
                out.append(p)
                continue
            nxt = self.core.offsets.get(p)
            position = nxt if nxt is not None else max(lo or 0, 0)
            if hi is not None and hi > position:
                out.append(p)
        return out

    def _publish(self, res: BatchResult, wall: int) -> None:
        n = 0
        for ev in res.events:
            self.producer.produce(self.alerts_topic, key=event_key(ev), value=ev.to_json(),
                                  on_delivery=self._on_delivery)
            n += 1
            log.info("detection event", extra={
                "event": "detection", "kind": ev.kind.value, "exchange": ev.exchange_id,
                "meter": ev.meter_id, "ts_ms": ev.ts_ms, "event_id": ev.event_id})
        for d in res.dead:
            self.producer.produce(self.deadletter_topic, key=d.record.key,
                                  value=deadletter_value(d, self.readings_topic, wall),
                                  headers={"reason": d.reason}, on_delivery=self._on_delivery)
            n += 1
            log.warning("dead-lettered record", extra={
                "event": "deadletter", "reason": d.reason, "partition": d.record.partition,
                "offset": d.record.offset, "error": d.message.splitlines()[0][:300]})
        if not n:
            return
        self.produced += n
        deadline = time.monotonic() + self.s.flush_timeout_s
        while self.producer.flush(1.0) > 0:  # no commit before every record is acknowledged
            if self.stop.is_set() or time.monotonic() > deadline:
                raise SinkError(f"{len(self.producer)} detection/dead-letter records not "
                                "acknowledged by Kafka")
        if self._delivery_errors:
            errs, self._delivery_errors = self._delivery_errors, []
            raise SinkError(f"Kafka refused {len(errs)} record(s): {errs[:3]}")

    def _commit(self) -> None:
        from confluent_kafka import TopicPartition

        offs = [TopicPartition(self.readings_topic, p, o)
                for p, o in self.core.committable_offsets().items() if self._committed.get(p) != o]
        if not offs:
            return
        self.consumer.commit(offsets=offs, asynchronous=False)
        for tp in offs:
            self._committed[tp.partition] = tp.offset

    def _checkpoint(self) -> None:
        if not self.s.checkpoint:
            return
        t0 = time.monotonic()
        size = save_checkpoint(self.s.checkpoint, self.core.checkpoint(self.readings_topic))
        log.debug("checkpoint written", extra={"event": "checkpoint", "bytes": size,
                                               "ms": round((time.monotonic() - t0) * 1000, 1)})

    def _housekeeping(self, wall: int) -> None:
        if wall - self._last_ckpt_wall >= self.s.checkpoint_interval_s * 1000:
            self._last_ckpt_wall = wall
            self._checkpoint()
        if wall - self._last_meta_wall >= self.s.metadata_refresh_s * 1000:
            self._last_meta_wall = wall
            self._add_new_partitions()
        if wall - self._last_stats_wall >= self.s.stats_interval_s * 1000:
            self._last_stats_wall = wall
            c = self.core.counters
            log.info("stats", extra={"event": "stats", "records": c.records, "readings": c.readings,
                                     "dead": c.dead, "events": c.events, "ticks": c.ticks,
                                     "idle_ticks": c.idle_ticks,
                                     "watermark_ms": self.core.last_tick_ms})

    def _add_new_partitions(self) -> None:
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition

        try:
            parts = self._readings_partitions(timeout_s=5.0)
        except Exception:  # noqa: BLE001 - try again next time
            return
        new = [p for p in parts if p not in self._partitions]
        if new:
            self.consumer.incremental_assign(
                [TopicPartition(self.readings_topic, p, OFFSET_BEGINNING) for p in new])
            self._partitions = sorted([*self._partitions, *new])
            log.info("new partitions assigned", extra={"event": "partitions_added", "new": new})


class _DetectCollector:
    """Prometheus view of the worker's counters (read at scrape time, no locks on the hot path)."""

    def __init__(self, worker: DetectWorker) -> None:
        self.w = worker

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        c = self.w.core.counters
        p = "parkmon_detect_"
        yield CounterMetricFamily(p + "records", "records read from the readings topic",
                                  value=c.records)
        yield CounterMetricFamily(p + "readings", "readings fed to the detectors", value=c.readings)
        yield CounterMetricFamily(p + "dead_letters", "records sent to the dead-letter topic",
                                  value=c.dead)
        yield CounterMetricFamily(p + "events", "detection events published", value=c.events)
        yield CounterMetricFamily(p + "ticks", "detector ticks (event time)", value=c.ticks)
        yield CounterMetricFamily(p + "idle_ticks", "detector ticks from the wall clock while idle",
                                  value=c.idle_ticks)
        wm = self.w.core.last_tick_ms
        yield GaugeMetricFamily(p + "watermark_seconds", "event time the detectors have reached",
                                value=(wm or 0) / 1000)
        yield GaugeMetricFamily(p + "lagging_partitions",
                                "partitions with records still to read", value=len(self.w.lagging))


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="parkmon detect", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--park", help="park file (YAML); default PARKMON_DETECT_PARK_FILE")
    ap.add_argument("--checkpoint", help="detector state file; default PARKMON_DETECT_CHECKPOINT")
    ap.add_argument("--log-level", help="DEBUG, INFO, WARNING (default INFO)")
    args = ap.parse_args(argv)

    from ingest.cli import setup_logging
    from parkmon.config import KafkaSettings

    try:
        settings = DetectSettings()
        kafka = KafkaSettings()
    except ValidationError as exc:
        print(f"parkmon detect: bad setting in the environment:\n{exc}", file=sys.stderr)
        return 2
    over: dict[str, Any] = {}
    if args.park:
        over["park_file"] = args.park
    if args.checkpoint:
        over["checkpoint"] = args.checkpoint
    if args.log_level:
        over["log_level"] = args.log_level
    settings = settings.model_copy(update=over)
    setup_logging(settings.log_level)
    from parkmon.cliutil import load_park_or_explain

    park = load_park_or_explain("detect", settings.park_file, "PARKMON_DETECT_PARK_FILE")
    if park is None:
        return 2

    stop = threading.Event()

    def _stop(signum: int, _frame: Any) -> None:
        log.info("signal received", extra={"event": "signal", "signal": signal.Signals(signum).name})
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        worker = DetectWorker(park, settings, kafka.bootstrap, stop=stop)
        code = worker.run()
    except (ConfigError, ParkmonError) as exc:
        log.error("detect failed", extra={"event": "failed", "error": str(exc)})
        return 1
    except Exception as exc:  # noqa: BLE001 - e.g. Kafka unreachable at start: one clear line
        log.error("detect failed", extra={"event": "failed", "error": repr(exc)})
        return 1
    c = worker.core.counters
    log.info("stopped", extra={"event": "stopped", "records": c.records, "readings": c.readings,
                               "events": c.events, "dead": c.dead, "exit_code": code})
    return code
