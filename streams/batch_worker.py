"""`parkmon streams worker --engine batch`: the same core and guarantees as the Faust app
(`streams/app.py`), in one synchronous loop over confluent-kafka batches.

Why a second engine: Faust's per-event path (a `Message`, an `Event`, a queue hand-off between two
tasks and several await layers per reading) costs about 2.5x the per-reading time of a plain
consumer loop (docs/streams-worker.md, "Throughput"); here a batch of up to `batch_max` readings
is fetched with one `Consumer.consume` call and goes straight through the pure core.

Loop, per batch (one thread, nothing runs concurrently, so no locks):
  1. `consume(batch_max, flush_interval_s)` from the readings topic (partitions of this worker);
  2. each reading goes through its partition's `WindowEngine`; decode errors, unknown meters,
     non-finite values and readings later than the grace period become dead letters with a reason;
  3. closed / corrected meter windows are written to InfluxDB, retried until accepted (while
     retrying, the consumer is paused and polled so the group keeps it: an outage stalls the
     worker, it loses nothing);
  4. in one Kafka transaction: the window results to `parkmon.<park>.meter-windows`, the dead
     letters to the streams dead-letter topic, the changed engine state (dirty meters + partition
     meta with the last processed offset) to the compacted topic `<group>-batch-meter-state`
     (partition = the readings partition), and the consumed offsets
     (`send_offsets_to_transaction` with the consumer's group metadata);
  5. the transaction commits: state, outputs and offsets become visible together or not at all.
A crash anywhere replays from the last committed offset; the engine restored from the changelog
skips readings at or below its saved offset and deduplicates the rest by (meter, ts_ms); points
are re-written under the same window-start timestamp, so InfluxDB ends equal to a recount.

Fencing (why the transaction): a worker that stops polling while holding a batch (SIGSTOP, a long
pause) leaves the group, another worker takes its partitions and moves on; when the first one
comes back it finishes that batch. With a plain producer its stale engine state landed in the
changelog after the new owner's, the next restore took it, and the readings processed in between
were missing from their windows (found by the chaos soak; regression test
tests/e2e/test_streams_batch_zombie.py). In a transaction the offsets are checked against the
group's current generation (KIP-447): the zombie's transaction fails and is aborted, its records
are never visible to the `read_committed` readers (restore, the KPI consumer); the worker then
restores the batch's partitions from their committed state and reads them again. Its InfluxDB
writes (done before the transaction) are of the same deterministic window results the owner
writes. Every reader of the changelog and of meter-windows uses `isolation.level=read_committed`.

Indicators: a second consumer (group `<group>-kpis`) reads the single-partition meter-windows
topic into a `KpiAggregator` whose base windows live in `<group>-batch-kpi-state`, with the
same write -> changelog -> commit order. With several workers exactly one owns that partition.

Rebalances: confluent-kafka runs the assign/revoke callbacks inside `consume`, i.e. between two
batches, when everything processed is already committed. Revoked partitions drop their engine;
assigned ones restore it from the changelog before the first reading is processed. This engine
does not have faust-streaming's "partition never fetched after rebalance" problem (#629).

Idle close (`idle_close_ms`): a partition's event time follows the wall clock only when it is
caught up (its last processed offset + 1 reaches the partition's high watermark, nothing of it
waits in the stash) and nothing arrived for `idle_close_ms`; a backlog, a replay after a restart
or a stall on InfluxDB never counts as idle.

No `enable.partition.eof`: with it, librdkafka >= 2.2 (2.12 here) moves the consumer position one
past the end-of-partition pseudo-message, and a pause/resume while a partition is at its end
(every InfluxDB outage pauses all partitions) then resumes one record too far: the next reading
is skipped, never processed, its window missing (librdkafka #4844; found by the chaos soak,
regression test tests/integration/test_streams_batch_pause.py).
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)

from parkmon.contracts import Reason, kafka_readings_topic, kafka_streams_deadletter_topic
from parkmon.errors import SinkError
from streams.app import WorkerOptions, WorkerStats, _dlq_value, ingest_message, meter_windows_topic
from streams.core.engine import KpiAggregator
from streams.core.model import KpiModel
from streams.core.points import PointSpec, to_points
from streams.core.windows import WindowEngine, WindowResult
from streams.influx_sink import InfluxSink
from streams.metrics import LoopHealth, StreamsCollector, make_registry

log = logging.getLogger("parkmon.streams")

META_KEY = "__partition__"  # changelog key of a partition's engine meta (meter ids are not this)
KPI_META_KEY = "meta"


#: a transaction of a killed worker is aborted by the broker after this (restores of its
#: partitions wait for it); a transaction here only produces and commits, the InfluxDB write is
#: before it
TXN_TIMEOUT_S = 15.0


class TransactionAborted(Exception):
    """The batch's transaction failed and was aborted (fenced by a newer group generation, or a
    Kafka error that needs an abort): its partitions are restored from the committed state."""


WINDOWS_PER_MESSAGE = 1_000  # closed windows per message on the meter-windows topic (~300 B each)


def group_id(opts: WorkerOptions) -> str:
    return opts.app_id or f"parkmon-streams-batch-{opts.park_id}"


def changelog_topics(opts: WorkerOptions) -> tuple[str, str]:
    g = group_id(opts)
    # not Faust's `<app id>-meter-state-changelog`: a group switched between engines must not
    # read the other engine's state format
    return f"{g}-batch-meter-state", f"{g}-batch-kpi-state"


def ensure_changelogs(opts: WorkerOptions, partitions: int, timeout_s: float = 15.0) -> None:
    """Create the compacted state topics if missing (partitions like the readings topic)."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": opts.bootstrap})
    meters, kpis = changelog_topics(opts)
    have = admin.list_topics(timeout=timeout_s).topics
    cfg = {"cleanup.policy": "compact"}
    new = [NewTopic(t, n, 1, config=cfg) for t, n in ((meters, partitions), (kpis, 1))
           if t not in have]
    if not new:
        return
    for t, fut in admin.create_topics(new, operation_timeout=timeout_s).items():
        try:
            fut.result()
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise SinkError(f"cannot create Kafka topic {t}: {exc}") from exc


def read_changelog(bootstrap: str, topic: str, partition: int,
                   timeout_s: float = 60.0) -> dict[str, Any]:
    """Last value per key of one changelog partition (tombstones remove the key)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{topic}-restore",
                  "enable.auto.commit": False, "enable.partition.eof": False,
                  "isolation.level": "read_committed"})
    state: dict[str, Any] = {}
    tp = TopicPartition(topic, partition)
    try:
        lo, hi = _high_watermark(bootstrap, tp, timeout_s)
        if hi <= lo:
            return state
        c.assign([TopicPartition(topic, partition, OFFSET_BEGINNING)])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for m in c.consume(10_000, 0.5):
                if m.error():
                    raise SinkError(f"reading changelog {topic}[{partition}]: {m.error()}")
                key = (m.key() or b"").decode()
                val = m.value()
                if val is None:
                    state.pop(key, None)
                else:
                    state[key] = json.loads(val)
            # read to the high watermark of the start, past commit markers and aborted records
            # (an open transaction of a killed worker holds this back until it times out)
            if c.position([tp])[0].offset >= hi:
                return state
        raise SinkError(f"changelog {topic}[{partition}] not read to its end in {timeout_s} s")
    finally:
        c.close()


def _high_watermark(bootstrap: str, tp: TopicPartition, timeout_s: float) -> tuple[int, int]:
    """(low, high) watermark including uncommitted records (a read_committed consumer would
    give the last stable offset)."""
    q = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{tp.topic}-restore",
                  "isolation.level": "read_uncommitted"})
    try:
        lo, hi = q.get_watermark_offsets(tp, timeout=timeout_s)
        return int(lo), int(hi)
    finally:
        q.close()


def consumer_config(opts: WorkerOptions, group: str) -> dict[str, Any]:
    """The worker's consumers: manual commits of processed offsets only, and no
    `enable.partition.eof` (librdkafka #4844, see the module docstring)."""
    return {"bootstrap.servers": opts.bootstrap, "group.id": group, "enable.auto.commit": False,
            "enable.auto.offset.store": False, "auto.offset.reset": "earliest",
            "session.timeout.ms": int(opts.session_timeout_s * 1000),
            "heartbeat.interval.ms": int(max(1.0, opts.session_timeout_s / 10) * 1000),
            "max.poll.interval.ms": int(max(opts.max_poll_interval_s,
                                            opts.session_timeout_s) * 1000),
            "isolation.level": "read_committed", "enable.partition.eof": False}


class BatchWorker:
    def __init__(self, opts: WorkerOptions, model: KpiModel, sink: InfluxSink,
                 now_ms: Callable[[], int] = lambda: int(time.time() * 1000),
                 metrics_port: int = -1, metrics_host: str = "127.0.0.1") -> None:
        self.opts = opts
        self.metrics_port = metrics_port
        self.metrics_host = metrics_host
        self.health = LoopHealth()
        self.health_server: Any = None
        self.model = model
        self.sink = sink
        self.now_ms = now_ms
        self.stats = WorkerStats()
        self.stop_event = threading.Event()
        self.readings_topic = kafka_readings_topic(opts.park_id)
        self.windows_topic = meter_windows_topic(opts.park_id)
        self.dlq_topic = kafka_streams_deadletter_topic(opts.park_id)
        self.meter_cl, self.kpi_cl = changelog_topics(opts)
        self.engines: dict[int, WindowEngine] = {}
        self.done_offset: dict[int, int] = {}  # partition -> last offset whose effect is saved
        self.last_seen: dict[int, int] = {}  # partition -> wall clock of last reading / advance
        self.agg: KpiAggregator | None = None  # while we own the meter-windows partition
        self.kpi_windows_saved: set[int] = set()
        g = group_id(opts)
        self.consumer = Consumer(consumer_config(opts, g))
        self.kpi_consumer = Consumer(consumer_config(opts, f"{g}-kpis")) if opts.kpis else None
        # transactional (see the module docstring: fencing of a worker that lost its group);
        # one id per process: the group generation fences, not the id
        self.producer = Producer({"bootstrap.servers": opts.bootstrap, "acks": "all",
                                  "enable.idempotence": True, "linger.ms": 5,
                                  "compression.type": "lz4",
                                  "transactional.id": f"{g}-{uuid.uuid4().hex[:16]}",
                                  "transaction.timeout.ms": int(TXN_TIMEOUT_S * 1000)})
        self._txn_call(lambda: self.producer.init_transactions(30))
        self._last_stats = time.monotonic()
        self._stash: list[Any] = []  # messages received while holding a batch (keepalive)
        self._kpi_stash: list[Any] = []

    # -- rebalance ---------------------------------------------------------------------------
    def _on_assign(self, consumer: Any, tps: list[TopicPartition]) -> None:
        for tp in tps:
            self._restore(tp.partition)

    def _on_revoke(self, consumer: Any, tps: list[TopicPartition]) -> None:
        for tp in tps:
            if self.engines.pop(tp.partition, None) is not None:
                log.info("partition %d: engine dropped on rebalance", tp.partition)

    def _restore(self, p: int) -> None:
        state = read_changelog(self.opts.bootstrap, self.meter_cl, p)
        meta = state.pop(META_KEY, None)
        if meta is None:
            eng = WindowEngine(self.model, self.opts.base_window_ms, self.opts.grace_ms)
            self.done_offset[p] = -1
        else:
            self.done_offset[p] = int(meta.get("kafka_offset", -1))
            eng = WindowEngine.from_parts(self.model, meta,
                                          {k: v for k, v in state.items() if v is not None})
        log.info("partition %d: restored %d meters, watermark %s, offset %d", p,
                 len(state), eng.watermark_ms, self.done_offset[p])
        self.engines[p] = eng
        self.last_seen[p] = self.now_ms()

    def _on_kpi_assign(self, consumer: Any, tps: list[TopicPartition]) -> None:
        if not tps:
            return
        state = read_changelog(self.opts.bootstrap, self.kpi_cl, 0)
        a = KpiAggregator(self.model, self.opts.base_window_ms)
        wins = {int(k[1:]): v for k, v in state.items() if k.startswith("w") and v is not None}
        a.load(state.get(KPI_META_KEY), wins)
        self.agg = a
        self.kpi_windows_saved = set(wins)
        log.info("kpis: restored %d base windows", len(wins))

    def _on_kpi_revoke(self, consumer: Any, tps: list[TopicPartition]) -> None:
        if tps:
            self.agg = None

    # -- output ------------------------------------------------------------------------------
    def _write_until_accepted(self, points: list[PointSpec]) -> None:
        """Write to InfluxDB, retrying until it accepts; keep the group membership meanwhile."""
        while True:
            try:
                self.sink.write(points)
                return
            except SinkError as exc:
                self.stats.sink_failures += 1
                wait = getattr(exc, "retry_after_s", None) or self.opts.retry_sleep_s
                log.error("InfluxDB not accepting writes (%s); holding offsets, retry in "
                          "%.1f s", exc, wait)
                self._keepalive(wait)

    def _pause_all(self, pause: bool) -> None:
        for c in (self.consumer, self.kpi_consumer):
            if c is None:
                continue
            try:
                asg = c.assignment()
                if asg:
                    (c.pause if pause else c.resume)(asg)
            except KafkaException as exc:
                log.warning("pause/resume: %s", exc)

    def _keepalive(self, seconds: float) -> None:
        """Serve the consumers' group protocol while holding a batch (max.poll.interval): poll
        with every partition paused, resume them at the end. A rebalance meanwhile may assign
        new (unpaused) partitions; their messages are kept for the next batch, never dropped."""
        end = time.monotonic() + seconds
        try:
            while True:
                self._pause_all(True)
                for m in self.consumer.consume(100, 0):
                    if not m.error():
                        self._stash.append(m)
                if self.kpi_consumer is not None:
                    for m in self.kpi_consumer.consume(100, 0):
                        if not m.error():
                            self._kpi_stash.append(m)
                left = end - time.monotonic()
                if left <= 0:
                    return
                time.sleep(min(0.5, left))
        finally:
            self._pause_all(False)

    def _save_partition(self, p: int) -> None:
        eng = self.engines[p]
        for mid in eng.take_dirty():
            st = eng.meter_state(mid)
            self.producer.produce(self.meter_cl, key=mid.encode(), partition=p,
                                  value=None if st is None else json.dumps(st).encode())
        meta = eng.meta_state()
        meta["kafka_offset"] = self.done_offset.get(p, -1)
        self.producer.produce(self.meter_cl, key=META_KEY.encode(), partition=p,
                              value=json.dumps(meta).encode())

    def _txn_call(self, fn: Callable[[], Any]) -> Any:
        """One transactional producer call: retried while Kafka says retriable (restart, broker
        not yet coordinator), `TransactionAborted` when the transaction must be aborted, a
        `SinkError` (the worker exits, its supervisor restarts it) when the producer is fatally
        broken."""
        while True:
            try:
                return fn()
            except KafkaException as exc:
                err = exc.args[0]
                if err.fatal():
                    raise SinkError(f"Kafka transactional producer failed: {err}") from exc
                if err.txn_requires_abort():
                    raise TransactionAborted(str(err)) from exc
                if not err.retriable():
                    raise TransactionAborted(str(err)) from exc
                log.error("Kafka transaction call failed (%s); retrying, holding offsets", err)
                self._keepalive(1.0)

    def _transact(self, produce: Callable[[], None], consumer: Any,
                  offsets: list[TopicPartition]) -> bool:
        """`produce()` and `offsets` (of `consumer`'s group) in one transaction. False when it
        was aborted: nothing of it is visible, the caller restores its state."""
        try:
            self._txn_call(self.producer.begin_transaction)
            produce()
            if offsets:
                meta = consumer.consumer_group_metadata()
                self._txn_call(lambda: self.producer.send_offsets_to_transaction(
                    offsets, meta, 30))
            self._txn_call(lambda: self.producer.commit_transaction(30))
            return True
        except TransactionAborted as exc:
            self.stats.txn_aborts += 1
            log.warning("transaction aborted (%s): this batch is not saved; its partitions are "
                        "restored from the committed state and read again", exc)
            self._txn_call(lambda: self.producer.abort_transaction(30))
            return False

    def _reset_partitions(self, parts: list[int]) -> None:
        """After an aborted transaction: the engines of `parts` are ahead of what is committed.
        Restore them from the changelog and read them again from the saved offset (a partition
        this worker lost meanwhile is dropped at the next poll anyway)."""
        for p in parts:
            if p not in self.engines:
                continue
            self._stash = [m for m in self._stash if m.partition() != p]
            while True:
                try:
                    self._restore(p)
                    break
                except (SinkError, KafkaException) as exc:
                    log.error("partition %d: restore failed (%s); retrying", p, exc)
                    self._keepalive(2.0)
            off = self.done_offset[p] + 1 if self.done_offset[p] >= 0 else OFFSET_BEGINNING
            try:
                self.consumer.seek(TopicPartition(self.readings_topic, p, off))
            except KafkaException as exc:
                log.warning("partition %d: seek to %s failed (%s)", p, off, exc)

    def _write_windows(self, outs: list[tuple[int, WindowResult]],
                       closed_at: list[float]) -> list[WindowResult]:
        """The closed / corrected windows of partitions still ours, written to InfluxDB (retried
        until accepted; before the transaction, idempotent)."""
        live = [o for p, o in outs if p in self.engines]
        if live:
            self._write_until_accepted(to_points(self.opts.park_id, live))
            self.stats.windows_written += len(live)
            done = time.monotonic()
            self.stats.close_to_stored_s.extend(done - t for t in closed_at)
        return live

    def _produce_outputs(self, live: list[WindowResult],
                         dead: list[tuple[bytes | None, bytes]]) -> None:
        # in chunks: a backlog closes many windows in one batch, and one message holding
        # all of them outgrew Kafka's message.max.bytes (1 MB) at 200 meters (issue 12)
        for i in range(0, len(live), WINDOWS_PER_MESSAGE):
            chunk = live[i:i + WINDOWS_PER_MESSAGE]
            self.producer.produce(self.windows_topic, key=self.opts.park_id.encode(),
                                  value=json.dumps([o.to_dict() for o in chunk]).encode())
            self.producer.poll(0)
        for key, val in dead:
            self.producer.produce(self.dlq_topic, key=key, value=val)

    def _count_dead(self, dead: list[tuple[bytes | None, bytes]]) -> None:
        for _key, val in dead:
            self.stats.deadlettered += 1
            reason = json.loads(val)["reason"]
            self.stats.by_reason[reason] = self.stats.by_reason.get(reason, 0) + 1

    # -- the loop ----------------------------------------------------------------------------
    def process(self, msgs: list[Any]) -> None:
        if self._stash:
            msgs, self._stash = self._stash + msgs, []
        used: dict[int, WindowEngine] = {}  # the engine each partition's readings went into
        outs: list[tuple[int, WindowResult]] = []
        dead: list[tuple[bytes | None, bytes]] = []
        closed_at: list[float] = []
        commit: dict[int, int] = {}
        now = self.now_ms()
        grace = self.opts.grace_ms
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                log.warning("consumer: %s", err)
                continue
            p = m.partition()
            eng = self.engines.get(p)
            if eng is None:  # revoked between fetch and now: the next owner has it
                continue
            used[p] = eng
            self.stats.readings += 1
            self.last_seen[p] = now
            off = m.offset()
            commit[p] = off
            if off <= self.done_offset[p]:
                self.stats.replayed += 1
                continue
            self.done_offset[p] = off
            raw = m.value()
            ingest_message(eng, raw, m.key(), p, off, grace, self.stats, outs, dead, closed_at)
        if not commit:
            return
        live = self._write_windows(outs, closed_at)

        def owned(p: int) -> bool:  # still ours, and not re-assigned (= restored) meanwhile
            return self.engines.get(p) is used[p]

        mine = [p for p in commit if owned(p)]

        def produce() -> None:
            self._produce_outputs(live, dead)
            for p in mine:
                self._save_partition(p)

        if self._transact(produce, self.consumer,
                          [TopicPartition(self.readings_topic, p, commit[p] + 1) for p in mine]):
            self._count_dead(dead)
            self.stats.flushes += 1
        else:
            self._reset_partitions(mine)

    def caught_up(self, p: int) -> bool:
        """Every record partition `p` holds is processed: the last processed offset + 1 reaches
        the high watermark (librdkafka's cached value, refreshed by every fetch response, also
        the empty ones at the tail), and none of its records waits in the stash."""
        if any(m.partition() == p for m in self._stash):
            return False
        tp = TopicPartition(self.readings_topic, p)
        try:
            _lo, hi = self.consumer.get_watermark_offsets(tp, cached=True)
            if hi < 0:  # nothing fetched yet: ask the broker
                _lo, hi = self.consumer.get_watermark_offsets(tp, timeout=2.0)
        except KafkaException:
            return False
        return self.done_offset.get(p, -1) + 1 >= hi

    def idle_close(self) -> None:
        idle = self.opts.idle_close_ms
        if idle is None:
            return
        now = self.now_ms()
        outs: list[tuple[int, WindowResult]] = []
        touched = []
        for p, eng in self.engines.items():
            since = self.last_seen.get(p)
            if (eng.watermark_ms is None or since is None or now - since < idle
                    or not self.caught_up(p)):
                continue
            for o in eng.advance(eng.watermark_ms + (now - since)):
                if isinstance(o, WindowResult):
                    outs.append((p, o))
            self.last_seen[p] = now
            touched.append(p)
        if not touched:
            return
        live = self._write_windows(outs, [])

        def produce() -> None:
            self._produce_outputs(live, [])
            for p in touched:
                self._save_partition(p)

        # the offsets (unchanged) go with it so that a worker that lost the group is fenced
        offsets = [TopicPartition(self.readings_topic, p, self.done_offset[p] + 1)
                   for p in touched if self.done_offset.get(p, -1) >= 0]
        if not self._transact(produce, self.consumer, offsets):
            self._reset_partitions(touched)

    def process_kpis(self, msgs: list[Any]) -> None:
        assert self.kpi_consumer is not None
        if self._kpi_stash:
            msgs, self._kpi_stash = self._kpi_stash + msgs, []
        last: int | None = None
        results: list[WindowResult] = []
        for m in msgs:
            if m.error() is not None:
                if m.error().code() != KafkaError._PARTITION_EOF:
                    log.warning("kpi consumer: %s", m.error())
                continue
            last = m.offset()
            try:
                results.extend(WindowResult.from_dict(d) for d in json.loads(m.value()))
            except Exception as exc:
                self.producer.produce(self.dlq_topic, key=m.key(), value=_dlq_value(
                    m.value(), Reason.PROCESSING_ERROR, f"{type(exc).__name__}: {exc}"))
        if last is None or self.agg is None:
            return
        a = self.agg
        pts = to_points(self.opts.park_id, a.update(results))
        if pts:
            self._write_until_accepted(pts)
            self.stats.kpi_points_written += len(pts)
        if self.agg is not a:  # lost (or re-restored) the partition while writing
            return
        saved = set(self.kpi_windows_saved)

        def produce() -> None:
            for w in a.take_dirty():
                val = a.window_state(w)
                self.producer.produce(self.kpi_cl, key=f"w{w}".encode(), partition=0,
                                      value=None if val is None else json.dumps(val).encode())
                saved.add(w)
            for w in [w for w in saved if w not in a.base]:
                self.producer.produce(self.kpi_cl, key=f"w{w}".encode(), partition=0,
                                      value=None)
                saved.discard(w)
            self.producer.produce(self.kpi_cl, key=KPI_META_KEY.encode(), partition=0,
                                  value=json.dumps(a.meta_state()).encode())

        if self._transact(produce, self.kpi_consumer,
                          [TopicPartition(self.windows_topic, 0, last + 1)]):
            self.kpi_windows_saved = saved
        else:
            self._reset_kpis()

    def _reset_kpis(self) -> None:
        """After an aborted KPI transaction: the aggregator from the changelog, the windows
        topic read again from the committed offset."""
        assert self.kpi_consumer is not None
        if self.agg is None:
            return
        self._kpi_stash = []
        tp = TopicPartition(self.windows_topic, 0)
        while True:
            try:
                self._on_kpi_assign(self.kpi_consumer, [tp])
                committed = self.kpi_consumer.committed([tp], timeout=30)[0].offset
                break
            except (SinkError, KafkaException) as exc:
                log.error("kpis: restore failed (%s); retrying", exc)
                self._keepalive(2.0)
        try:
            self.kpi_consumer.seek(TopicPartition(self.windows_topic, 0,
                                                  committed if committed >= 0
                                                  else OFFSET_BEGINNING))
        except KafkaException as exc:
            log.warning("kpis: seek failed (%s)", exc)

    def engine_stats(self) -> dict[str, int]:
        eng_stats: dict[str, int] = {}
        for eng in list(self.engines.values()):
            for k, v in eng.stats.to_dict().items():
                eng_stats[k] = eng_stats.get(k, 0) + v
        return eng_stats

    def start_metrics(self) -> int | None:
        """GET /metrics and /healthz (503 when the loop has not completed a batch for 120 s,
        e.g. while InfluxDB is down); None when disabled (port < 0)."""
        if self.metrics_port < 0:
            return None
        from ingest.metrics import HealthServer

        reg = make_registry(StreamsCollector(
            self.stats, self.engine_stats, lambda: dict(self.sink.stats.__dict__),
            lambda: {p: e.watermark_ms for p, e in list(self.engines.items())}))
        self.health_server = HealthServer(self.metrics_host, self.metrics_port, reg,
                                          self.health)
        self.health_server.start()
        port = int(self.health_server.port)
        log.info("metrics endpoint on http://%s:%d/metrics", self.metrics_host, port)
        return port

    def log_stats(self, force: bool = False) -> None:
        if not force and time.monotonic() - self._last_stats < 10.0:
            return
        self._last_stats = time.monotonic()
        eng_stats = self.engine_stats()
        log.info("streams stats: %s", json.dumps({**self.stats.summary(), "engine": eng_stats,
                                                  "sink": self.sink.stats.__dict__},
                                                 default=str))

    def run(self) -> int:
        self.consumer.subscribe([self.readings_topic], on_assign=self._on_assign,
                                on_revoke=self._on_revoke, on_lost=self._on_revoke)
        if self.kpi_consumer is not None:
            self.kpi_consumer.subscribe([self.windows_topic], on_assign=self._on_kpi_assign,
                                        on_revoke=self._on_kpi_revoke,
                                        on_lost=self._on_kpi_revoke)
        log.info("streams worker (batch engine) started: group %s, topic %s",
                 group_id(self.opts), self.readings_topic)
        self.start_metrics()
        try:
            while not self.stop_event.is_set():
                msgs = self.consumer.consume(self.opts.batch_max, self.opts.flush_interval_s)
                self.process(msgs)
                self.idle_close()
                if self.kpi_consumer is not None:
                    self.process_kpis(self.kpi_consumer.consume(self.opts.batch_max, 0))
                self.log_stats()
                self.health.beat(partitions=sorted(self.engines), kpis=self.agg is not None)
        finally:
            if self.health_server is not None:
                self.health_server.stop()
            self.log_stats(force=True)
            self._flush_producer_quietly()
            for c in (self.consumer, self.kpi_consumer):
                if c is not None:
                    c.close()  # leaves the group: the partitions move at once
            log.info("streams worker stopped")
        return 0

    def _flush_producer_quietly(self) -> None:
        try:
            self.producer.flush(10)
        except KafkaException as exc:
            log.warning("final producer flush: %s", exc)

    def install_signal_handlers(self) -> None:
        def stop(signum: int, frame: Any) -> None:
            log.info("signal %d: stopping after the current batch", signum)
            self.stop_event.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
