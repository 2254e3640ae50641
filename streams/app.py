"""The Faust app of `parkmon streams worker`, built by `create_app(...)` (nothing at import time).

Two agents, both with concurrency 1 and manual acknowledgement (`stream.noack_take`):

1. `meter-windows` reads `parkmon.<park>.readings` (key meter id, value `Reading.to_json()`),
   keeps one `WindowEngine` per assigned partition and, every flush (`flush_interval_s` or
   `batch_max` readings), in this order:
   a. writes the closed / corrected meter windows to InfluxDB synchronously (retrying until it
      accepts them, never skipping: an outage stalls the worker, it loses nothing);
   b. sends the window results to `parkmon.<park>.meter-windows` and every failed or
      late-beyond-grace reading, with its reason, to `parkmon.<park>.streams-deadletter`;
   c. writes the changed engine state to the changelog-backed table `meter-state`;
   d. only then acks the readings, so the offsets Faust commits (after flushing the producer,
      hence after the changelog) never get ahead of InfluxDB or of the saved state.
   A crash anywhere replays readings from the last committed offset; the engine counts readings
   it already holds as duplicates and windows are re-written under the same timestamp, so the
   stored results equal a recount of the input.
2. `kpis` reads the meter windows (one partition) into a `KpiAggregator` and writes indicator
   points the same way (state per base window in the table `kpi-state`).

Two safety nets around Faust's consumer, both in the `supervise` task:
- the wall-clock idle close (`idle_close_ms`) only advances event time of a partition that is
  caught up (the broker's end offset is not above the last offset the agent took) and got
  nothing for idle_close_ms since its last reading or its (re)assignment, so a replay or a
  backlog is never finalised by the wall clock;
- a stall watchdog (`stall_timeout_s`): an assigned input partition with unread input, no
  progress for that long while its agent waits for input, is resumed and re-seeked to its
  committed offset (faust-streaming #629: after a rebalance a partition can stay assigned but
  never be fetched again). Nothing is skipped; re-read readings are skipped as replayed or
  deduplicated, and Faust's commits go on (no gap in front of its acked offsets).
  After `stall_max_attempts` seeks that did not help, the worker exits (crash-only; state and
  offsets are consistent at any point, as after kill -9) for its supervisor to restart it.

Why not Faust's own windowed tables: their expiry runs on wall-clock time and they have no
grace period (PITFALLS.md); why not concurrency > 1: faust-streaming #606; why catch per message:
#527 (an exception skips the message); why not exactly_once: its history of duplicates.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import faust
from faust.types import TP

from parkmon.contracts import Reading, Reason, kafka_readings_topic, kafka_streams_deadletter_topic
from parkmon.errors import PayloadError, SinkError
from streams.core.engine import KpiAggregator
from streams.core.model import KpiModel
from streams.core.points import PointSpec, to_points
from streams.core.windows import LateReading, WindowEngine, WindowResult
from streams.influx_sink import InfluxSink

log = logging.getLogger("parkmon.streams")


def meter_windows_topic(park_id: str) -> str:
    return f"parkmon.{park_id}.meter-windows"


@dataclass(frozen=True)
class WorkerOptions:
    park_id: str
    bootstrap: str = "127.0.0.1:19092"
    app_id: str | None = None  # consumer group; default parkmon-streams-<park>
    partitions: int = 1  # partitions of the readings topic (the state table matches it)
    base_window_ms: int = 60_000
    grace_ms: int = 120_000
    batch_max: int = 5000
    flush_interval_s: float = 1.0
    idle_close_ms: int | None = None  # close windows by wall clock when a partition is idle
    retry_sleep_s: float = 2.0
    data_dir: str = "/tmp/parkmon-streams"
    kpis: bool = True
    web_port: int | None = None
    session_timeout_s: float = 30.0  # how soon a dead worker's partitions move to another
    #: batch engine: a worker whose loop does not poll for this long leaves the group (its
    #: partitions move); at least the session timeout
    max_poll_interval_s: float = 300.0
    #: an assigned input partition with unread input and no progress for this long (while its
    #: agent waits for input) is resumed and re-seeked; None disables the watchdog
    stall_timeout_s: float | None = 15.0
    stall_max_attempts: int = 3  # then exit (EXIT_STALLED) for the supervisor to restart us


#: exit status of a worker whose watchdog could not get a stalled partition fetched again
EXIT_STALLED = 75
#: fault injection for tests: "1" makes the worker stop fetching its input partitions once,
#: right after its first assignment (Faust keeps them assigned but no longer fetches them, the
#: state of faust-streaming #629), so that the stall watchdog can be tested end to end
FAULT_STALL_ENV = "PARKMON_STREAMS_FAULT_STALL_ONCE"
#: fault injection for tests: "P:OFFSET[,P:OFFSET...]" makes the agent drop these readings once,
#: unprocessed but acked, as Faust did once (the watchdog must notice and read them again)
FAULT_DROP_ENV = "PARKMON_STREAMS_FAULT_DROP_ONCE"


def _parse_drop_env(value: str) -> set[tuple[int, int]]:
    out = set()
    for item in filter(None, (x.strip() for x in value.split(","))):
        p, _, off = item.partition(":")
        out.add((int(p), int(off)))
    return out


@dataclass
class WorkerStats:
    readings: int = 0
    replayed: int = 0  # skipped: already in the saved state (redelivered after a crash)
    deadlettered: int = 0
    late: int = 0
    windows_written: int = 0
    kpi_points_written: int = 0
    flushes: int = 0
    sink_failures: int = 0
    txn_aborts: int = 0  # batch engine: transactions aborted (fenced after losing the group)
    stalls_resumed: int = 0  # watchdog: stalled partitions resumed + re-seeked
    out_of_order: int = 0  # readings handed over after a higher offset (processed, not skipped)
    holes_reread: int = 0  # watchdog: offsets never handed over, read again
    idle_closes: int = 0  # partitions whose event time followed the wall clock (idle close)
    idle_close_deferred: int = 0  # idle by the clock but with unread input: not closed
    by_reason: dict[str, int] = field(default_factory=dict)
    #: seconds from a window closing (the reading that closed it was processed) to InfluxDB
    #: having accepted its point, last 10 000 windows
    close_to_stored_s: deque[float] = field(default_factory=lambda: deque(maxlen=10_000))

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.close_to_stored_s)

        def pct(q: float) -> float | None:
            return None if not lat else round(lat[min(len(lat) - 1, int(q * len(lat)))], 4)

        d = {k: v for k, v in self.__dict__.items() if k != "close_to_stored_s"}
        d.update(close_to_stored_p50_s=pct(0.5), close_to_stored_p99_s=pct(0.99))
        return d


class OffsetLedger:
    """Which offsets of one input partition the engine state already holds.

    Every offset <= `floor` is in it, and every offset in (floor, top] except the `missing` ones.
    Faust does not always hand an agent a partition's messages in offset order (seen after a
    restart under load: an offset arrived after a higher one, or never), so "skip what is at or
    below the highest offset processed" would drop such a reading. Here a reading is skipped as
    replayed only if the ledger holds it; the state is saved with `floor`, so after a crash
    everything above it is read again (and deduplicated by the engine), and a missing offset
    that does not arrive is noticed (`missing_since`) and read again by the watchdog.
    """

    MAX_JUMP = 10_000  # a forward jump larger than this is a gap in the log, not missing input

    def __init__(self, saved_offset: int) -> None:
        self.floor = saved_offset
        self.top = saved_offset
        self.missing: dict[int, float] = {}  # offset -> monotonic time it was first missed
        self.filled = 0  # missing offsets that arrived later (out of order)
        #: nothing saved: reading starts at the committed offset or the log start, wherever
        self._fresh = saved_offset < 0
        #: restored: the group's committed offset may be past the floor (Faust commits what was
        #: acked, the floor stays below a missing offset); checked once by the watchdog
        self.check_start = saved_offset >= 0

    def holds(self, offset: int) -> bool:
        return offset <= self.floor or (offset <= self.top and offset not in self.missing)

    def add(self, offset: int, now_s: float) -> None:
        if self._fresh:
            self._fresh = False
            self.floor = self.top = offset
            return
        if offset > self.top:
            if offset - self.top - 1 <= self.MAX_JUMP:
                for o in range(self.top + 1, offset):
                    self.missing[o] = now_s
            elif self.missing:  # keep only holes close to the new top
                self.missing.clear()
            self.top = offset
        elif self.missing.pop(offset, None) is not None:
            self.filled += 1
        self.floor = min(self.missing) - 1 if self.missing else self.top

    def expect(self, upto: int, since_s: float) -> None:
        """Offsets (top, upto] were committed by the group but are not in the saved state
        (above its floor): they have to be read again."""
        self._fresh = False
        if self.top < upto and upto - self.top <= self.MAX_JUMP:
            for o in range(self.top + 1, upto + 1):
                self.missing[o] = since_s
            self.top = upto

    def missing_since(self) -> float | None:
        return min(self.missing.values()) if self.missing else None

    def forget(self, offsets: list[int]) -> None:
        """Offsets that are not in the log (read again and still not delivered)."""
        for o in offsets:
            self.missing.pop(o, None)
        self.floor = min(self.missing) - 1 if self.missing else self.top


def _dlq_value(raw: bytes | None, reason: str, message: str, **extra: Any) -> bytes:
    d: dict[str, Any] = {"reason": reason, "message": message[:500], **extra}
    try:
        d["payload"] = (raw or b"").decode("utf-8")
    except UnicodeDecodeError:
        d["payload_hex"] = (raw or b"").hex()
    return json.dumps(d).encode()


def _decode(raw: bytes | None) -> Reading:
    """A reading from a Kafka value, or PayloadError with reason invalid_json / schema."""
    try:
        return Reading.from_json(raw or b"")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PayloadError(Reason.INVALID_JSON, f"not JSON: {exc}") from exc
    except (KeyError, TypeError, ValueError) as exc:
        raise PayloadError(Reason.SCHEMA, f"not a reading {{meter, ts_ms, value}}: {exc!r}") \
            from exc


def ingest_message(eng: WindowEngine, raw: bytes | None, key: Any, p: int, off: int,
                   grace_ms: int, stats: WorkerStats, outs: list[tuple[int, WindowResult]],
                   dead: list[tuple[Any, bytes]], closed_at: list[float]) -> None:
    """One Kafka message through a partition's engine (both engines): window results to
    `outs`, late, undecodable or failing readings to `dead` with their reason (never skipped,
    faust #527)."""
    try:
        r = _decode(raw)
        for o in eng.ingest(r.meter, r.ts_ms, r.value):
            if isinstance(o, WindowResult):
                outs.append((p, o))
                closed_at.append(time.monotonic())
            elif isinstance(o, LateReading):
                stats.late += 1
                dead.append((key, _dlq_value(
                    raw, o.reason, f"window already final (watermark {o.watermark_ms}, "
                    f"grace {grace_ms} ms)", partition=p, offset=off)))
    except PayloadError as exc:
        dead.append((key, _dlq_value(raw, str(exc.reason), exc.message, partition=p,
                                     offset=off)))
    except Exception as exc:
        dead.append((key, _dlq_value(raw, Reason.PROCESSING_ERROR,
                                     f"{type(exc).__name__}: {exc}", partition=p, offset=off)))


async def _write_until_accepted(sink: InfluxSink, points: list[PointSpec], stats: WorkerStats,
                                retry_sleep_s: float) -> None:
    """Block (without blocking the event loop) until InfluxDB accepted every point."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            await loop.run_in_executor(None, sink.write, points)
            return
        except SinkError as exc:
            stats.sink_failures += 1
            wait = getattr(exc, "retry_after_s", retry_sleep_s)
            log.error("InfluxDB not accepting writes (%s); holding offsets, retry in %.1f s",
                      exc, wait)
            await asyncio.sleep(wait)


def ensure_topics(bootstrap: str, park_id: str, partitions: int, timeout_s: float = 15.0) -> int:
    """Create the worker's topics if missing; return the readings topic's partition count."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    want = {kafka_readings_topic(park_id): partitions, meter_windows_topic(park_id): 1,
            kafka_streams_deadletter_topic(park_id): 1}
    have = admin.list_topics(timeout=timeout_s).topics
    new = [NewTopic(t, n, 1) for t, n in want.items() if t not in have]
    if new:
        for t, fut in admin.create_topics(new, operation_timeout=timeout_s).items():
            try:
                fut.result()
            except Exception as exc:  # created meanwhile by someone else: fine
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise SinkError(f"cannot create Kafka topic {t}: {exc}") from exc
    md = admin.list_topics(topic=kafka_readings_topic(park_id), timeout=timeout_s)
    return len(md.topics[kafka_readings_topic(park_id)].partitions)


def create_app(opts: WorkerOptions, model: KpiModel, sink: InfluxSink,
               now_ms: Callable[[], int] = lambda: int(time.time() * 1000)) -> faust.App:
    app_id = opts.app_id or f"parkmon-streams-{opts.park_id}"
    app = faust.App(
        app_id,
        broker=f"kafka://{opts.bootstrap}",
        store="memory://",
        datadir=opts.data_dir,
        processing_guarantee="at_least_once",
        topic_partitions=opts.partitions,
        topic_replication_factor=1,
        producer_acks=-1,
        consumer_auto_offset_reset="earliest",
        web_enabled=opts.web_port is not None,
        web_port=opts.web_port or 6066,
        broker_commit_interval=1.0,
        table_standby_replicas=0,
        broker_session_timeout=opts.session_timeout_s,
        broker_heartbeat_interval=max(1.0, opts.session_timeout_s / 10),
    )
    readings = app.topic(kafka_readings_topic(opts.park_id), key_type=bytes, value_type=bytes,
                         key_serializer="raw", value_serializer="raw",
                         partitions=opts.partitions)
    windows_t = app.topic(meter_windows_topic(opts.park_id), key_type=bytes, value_type=bytes,
                          key_serializer="raw", value_serializer="raw", partitions=1)
    dlq = app.topic(kafka_streams_deadletter_topic(opts.park_id), key_type=bytes,
                    value_type=bytes, key_serializer="raw", value_serializer="raw")
    meter_state = app.Table("meter-state", default=None, partitions=opts.partitions,
                            key_type=str)
    kpi_state = app.Table("kpi-state", default=None, partitions=1,
                          key_type=str)
    stats = WorkerStats()
    app.parkmon_stats = stats  # type: ignore[attr-defined]
    engines: dict[int, WindowEngine] = {}
    #: partition -> offsets whose effect is in the engine (saved with it as `kafka_offset`, the
    #: ledger's floor); readings it holds, replayed after a crash, are skipped as processed
    ledgers: dict[int, OffsetLedger] = {}
    drop_once = _parse_drop_env(os.environ.get(FAULT_DROP_ENV, ""))
    agg_box: dict[str, KpiAggregator] = {}  # the KPI aggregator while we own its partition

    def engine_for(p: int) -> WindowEngine:
        eng = engines.get(p)
        if eng is None:
            meta = meter_state.data.get(f"p{p}")
            if meta is None:
                eng = WindowEngine(model, opts.base_window_ms, opts.grace_ms)
                ledgers[p] = OffsetLedger(-1)
            else:
                ledgers[p] = OffsetLedger(int(meta.get("kafka_offset", -1)))
                ms = {k: v["state"] for k, v in meter_state.data.items()
                      if isinstance(v, dict) and v.get("p") == p and "state" in v}
                eng = WindowEngine.from_parts(model, meta, ms)
                log.info("partition %d: restored %d meters, watermark %s, offset %d", p,
                         len(ms), eng.watermark_ms, ledgers[p].floor)
            engines[p] = eng
        return eng

    #: (topic, partition) -> last offset an agent took from the stream since the partition was
    #: (re)assigned, and the monotonic time it last advanced (or the partition was assigned)
    taken: dict[tuple[str, int], int] = {}
    progress_at: dict[tuple[str, int], float] = {}
    stall_attempts: dict[tuple[str, int], int] = {}
    busy: set[str] = set()  # agents inside a batch (not waiting for input)
    last_seen: dict[int, int] = {}  # partition -> wall clock of its last reading / advance

    async def _on_rebalance(sender: Any, tps: set[Any], **kwargs: Any) -> None:
        """Partitions revoked or (re)assigned: their engines are rebuilt from the table, which
        Faust has recovered from the changelog by then, so no engine outlives its ownership.
        The idle clock and the stall watchdog of these partitions start again."""
        for tp in tps:
            key = (tp.topic, tp.partition)
            taken.pop(key, None)
            progress_at.pop(key, None)
            stall_attempts.pop(key, None)
            if tp.topic == readings.get_topic_name():
                last_seen.pop(tp.partition, None)
            if tp.topic == readings.get_topic_name() and tp.partition in engines:
                # unacked readings of a revoked partition are replayed by its next owner
                del engines[tp.partition]
                log.info("partition %d: engine dropped on rebalance", tp.partition)
            if tp.topic == windows_t.get_topic_name():
                agg_box.clear()

    app.on_partitions_revoked.connect(_on_rebalance)  # type: ignore[arg-type]
    app.on_partitions_assigned.connect(_on_rebalance)  # type: ignore[arg-type]

    def save_partition(p: int, eng: WindowEngine) -> None:
        for mid in eng.take_dirty():
            st = eng.meter_state(mid)
            val = None if st is None else {"p": p, "state": st}
            meter_state.data[mid] = val
            meter_state.send_changelog(p, mid, val)
        key = f"p{p}"
        meta = eng.meta_state()
        led = ledgers.get(p)
        meta["kafka_offset"] = -1 if led is None else led.floor
        meter_state.data[key] = meta
        meter_state.send_changelog(p, key, meta)

    lock = asyncio.Lock()  # the agent's batches and the idle timer never interleave

    def note_taken(events: list[Any]) -> None:
        """Record the highest offset per partition an agent took (after the batch's acks)."""
        mono = time.monotonic()
        for ev in events:
            m = ev.message
            key = (m.topic, m.partition)
            if m.offset > taken.get(key, -1):
                taken[key] = m.offset
                progress_at[key] = mono
                stall_attempts.pop(key, None)

    def last_taken(tp: TP) -> int:
        """The last offset of `tp` known to be handled: taken by the agent since assignment,
        committed by the group (a previous owner) or, for an input partition, saved with its
        engine state; -1 if none."""
        off = taken.get((tp.topic, tp.partition), -1)
        committed = getattr(app.consumer, "_committed_offset", {}).get(tp)
        if isinstance(committed, int):
            off = max(off, committed - 1)
        if tp.topic == readings.get_topic_name():
            led = ledgers.get(tp.partition)
            off = max(off, -1 if led is None else led.top)
        return off

    async def end_offsets(tps: list[TP]) -> dict[TP, int] | None:
        """The broker's end offsets (next offset to be written), None if it cannot tell now."""
        if not tps:
            return {}
        try:
            ends = await asyncio.wait_for(app.consumer.highwaters(*tps), timeout=10.0)
        except Exception as exc:  # broker away, rebalance: decide next time
            log.debug("end offsets of %s not available: %r", tps, exc)
            return None
        return {TP(tp.topic, tp.partition): int(v) for tp, v in ends.items() if v is not None}

    async def flush(outs: list[tuple[int, WindowResult]], dead: list[tuple[Any, bytes]],
                    touched: set[int], closed_at: list[float] | None = None) -> None:
        """InfluxDB first, then downstream topics, then the state; the caller acks last."""
        live = [o for p, o in outs if p in engines]
        if live:
            t0 = time.monotonic()
            await _write_until_accepted(sink, to_points(opts.park_id, live), stats,
                                        opts.retry_sleep_s)
            stats.windows_written += len(live)
            done = time.monotonic()
            stats.close_to_stored_s.extend(done - t for t in (closed_at or []))
            if opts.idle_close_ms is not None and (done - t0) * 1000 >= opts.idle_close_ms:
                # we were stalled (InfluxDB outage), not idle: readings that queued up meanwhile
                # must arrive before wall-clock time may close windows again
                stalled_until = now_ms()
                for q in engines:
                    last_seen[q] = stalled_until
        if live:  # one message per flush: a JSON list of window results
            await windows_t.send(key=opts.park_id.encode(),
                                 value=json.dumps([o.to_dict() for o in live]).encode())
        for key, val in dead:
            stats.deadlettered += 1
            reason = json.loads(val)["reason"]
            stats.by_reason[reason] = stats.by_reason.get(reason, 0) + 1
            await dlq.send(key=key, value=val)
        for p in touched:
            if p in engines:
                save_partition(p, engines[p])
        stats.flushes += 1

    @app.agent(readings, concurrency=1, name="meter-windows")
    async def meter_windows(stream: Any) -> None:  # faust.Stream (noack_take)
        async for events in stream.noack_take(opts.batch_max, within=opts.flush_interval_s):
            busy.add("meter-windows")
            try:
                await _meter_batch(stream, events)
            finally:
                busy.discard("meter-windows")

    async def _meter_batch(stream: Any, events: list[Any]) -> None:
        async with lock:
            outs: list[tuple[int, WindowResult]] = []
            dead: list[tuple[Any, bytes]] = []
            touched: set[int] = set()
            closed_at: list[float] = []
            now = now_ms()
            mono = time.monotonic()
            for ev in events:
                p = ev.message.partition
                touched.add(p)
                last_seen[p] = now
                stats.readings += 1
                raw = ev.value
                eng = engine_for(p)
                off = ev.message.offset
                led = ledgers[p]
                if drop_once and (p, off) in drop_once:
                    drop_once.discard((p, off))
                    log.warning("fault injection (%s): reading %d:%d dropped", FAULT_DROP_ENV,
                                p, off)
                    continue
                if led.holds(off):
                    stats.replayed += 1
                    continue
                if off < led.top:
                    stats.out_of_order += 1
                led.add(off, mono)
                ingest_message(eng, raw, ev.key, p, off, opts.grace_ms, stats, outs, dead,
                               closed_at)
            await flush(outs, dead, touched, closed_at)
            acked = [ev for ev in events if ev.message.partition in engines]
            for ev in acked:  # not revoked meanwhile
                await stream.ack(ev)
            note_taken(acked)

    @app.timer(10.0)
    async def log_stats() -> None:
        eng_stats: dict[str, int] = {}
        for eng in engines.values():
            for k, v in eng.stats.to_dict().items():
                eng_stats[k] = eng_stats.get(k, 0) + v
        log.info("streams stats: %s", json.dumps({**stats.summary(), "engine": eng_stats,
                                                  "sink": sink.stats.__dict__}, default=str))

    idle_ms = opts.idle_close_ms
    tick_s = 1.0 if idle_ms is None else max(0.2, min(1.0, idle_ms / 2000.0))
    stall_s = opts.stall_timeout_s
    watched = {readings.get_topic_name(): "meter-windows"}  # topic -> the agent reading it
    if opts.kpis:
        watched[windows_t.get_topic_name()] = "kpis"

    def settling() -> bool:
        """A rebalance or the table recovery is running: partitions move, offsets are sought."""
        return bool(app.rebalancing or getattr(app, "in_recovery", False)
                    or not getattr(app.consumer, "flow_active", True))

    def fetch_state(tp: TP) -> dict[str, Any]:
        """What Faust's and aiokafka's consumers believe about `tp` (for the stall log line)."""
        c: Any = app.consumer
        d: dict[str, Any] = {"taken": last_taken(tp)}
        try:
            d.update(active=tp in (c._active_partitions or ()), paused=tp in c._paused_partitions,
                     buffered=tp in c._buffered_partitions, read_offset=c._read_offset.get(tp),
                     committed=c._committed_offset.get(tp))
            fetcher = c._thread._consumer._fetcher
            sub = fetcher._subscriptions.subscription
            st = sub.assignment.state_value(tp) if sub and sub.assignment else None
            if st is not None:
                d.update(position=st._position, highwater=st.highwater, kafka_paused=st.paused)
            d["fetched_not_drained"] = tp in fetcher._records
        except Exception as exc:  # internals of another version: the log line stays useful
            d["introspection_failed"] = repr(exc)
        return d

    hole_seeks: dict[int, tuple[int, int]] = {}  # partition -> (first missing offset, seeks)

    async def reread_holes() -> None:
        """Read again from the first offset of an input partition that Faust skipped (handed
        over neither in order nor later) for stall_s; after two such reads the offsets are
        taken as gaps in the log (logged as an error)."""
        if not stall_s or settling() or "meter-windows" in busy:
            return
        mono = time.monotonic()
        rname = readings.get_topic_name()
        assigned = {tp.partition for tp in app.consumer.assignment() if tp.topic == rname}
        for p, led in list(ledgers.items()):
            if led.check_start and p in assigned and p in engines:
                led.check_start = False
                committed = getattr(app.consumer, "_committed_offset", {}).get(TP(rname, p))
                if isinstance(committed, int) and committed > led.floor + 1:
                    log.warning("partition %d: the group committed offset %d but the saved "
                                "state holds everything only up to %d: reading again from %d",
                                p, committed, led.floor, led.floor + 1)
                    led.expect(committed - 1, mono - stall_s)
            since = led.missing_since()
            if p not in assigned or p not in engines or since is None or mono - since < stall_s:
                continue
            lo = min(led.missing)
            prev = hole_seeks.get(p)
            n = prev[1] + 1 if prev and prev[0] == lo else 1
            old = sorted(o for o, t in led.missing.items() if mono - t >= stall_s)
            if n > 2:
                log.error("partition %d: offsets %s were not handed over even after reading "
                          "them again twice: taken as gaps in the log", p, old[:20])
                led.forget(old)
                hole_seeks.pop(p, None)
                continue
            hole_seeks[p] = (lo, n)
            for o in led.missing:
                led.missing[o] = mono
            log.warning("partition %d: offsets %s were skipped by the consumer; reading again "
                        "from %d (those already processed are skipped)", p, old[:20], lo)
            stats.holes_reread += 1
            try:
                await app.consumer.seek_wait({TP(rname, p): lo})
            except Exception as exc:
                log.warning("partition %d: seek failed: %r", p, exc)

    async def watchdog() -> None:
        """Resume and re-seek assigned partitions with unread input that made no progress for
        stall_s while their agent waited for input (faust-streaming #629)."""
        await reread_holes()
        if not stall_s or settling():
            return
        mono = time.monotonic()
        due = []
        for tp in app.consumer.assignment():
            agent = watched.get(tp.topic)
            if agent is None or agent in busy:
                continue
            key = (tp.topic, tp.partition)
            if mono - progress_at.setdefault(key, mono) >= stall_s:
                due.append(TP(tp.topic, tp.partition))
        ends = await end_offsets(due)
        if not ends or settling():
            return
        for tp in due:
            key = (tp.topic, tp.partition)
            end = ends.get(tp)
            pos = last_taken(tp)
            if (end is None or end - 1 <= pos or watched[tp.topic] in busy
                    or tp not in app.consumer.assignment()):
                progress_at[key] = time.monotonic()  # caught up (or busy): look again later
                continue
            n = stall_attempts[key] = stall_attempts.get(key, 0) + 1
            state = fetch_state(tp)
            if n > opts.stall_max_attempts:
                log.critical(
                    "partition %s-%d stalled: %d unread readings and no progress for %.0f s "
                    "after %d resume+seek attempts (%s); exiting with status %d so that the "
                    "supervisor restarts the worker (offsets and state are consistent)",
                    tp.topic, tp.partition, end - 1 - pos, stall_s, n - 1,
                    json.dumps(state, default=str), EXIT_STALLED)
                for h in logging.getLogger().handlers + log.handlers:
                    h.flush()
                os._exit(EXIT_STALLED)
            # from the committed offset (what a restart would do), never beyond pos + 1: a seek
            # past unacked offsets would skip readings and leave Faust a gap it never commits
            # over; offsets re-read below pos are skipped as replayed / deduplicated
            target = pos + 1
            committed = state.get("committed")
            if isinstance(committed, int) and committed >= 0:
                target = min(target, committed)
            log.warning(
                "partition %s-%d stalled: %d unread readings (end offset %d, last taken %d) and "
                "no progress for %.0f s; consumer state %s; resuming it and seeking to %d "
                "(faust-streaming #629, attempt %d of %d)", tp.topic, tp.partition,
                end - 1 - pos, end, pos, stall_s, json.dumps(state, default=str), target, n,
                opts.stall_max_attempts)
            stats.stalls_resumed += 1
            app.consumer.resume_partitions({tp})
            try:
                await app.consumer.seek_wait({tp: target})
            except Exception as exc:  # revoked meanwhile: the next owner starts from the commit
                log.warning("partition %s-%d: seek failed: %r", tp.topic, tp.partition, exc)
            progress_at[key] = time.monotonic()

    async def idle_close() -> None:
        """Close windows of partitions that are caught up and got nothing for idle_ms: their
        event time then follows the wall clock. A partition with unread input (a backlog, a
        replay after a crash or a rebalance, a stalled fetch) is not idle, whatever the clock."""
        if idle_ms is None or settling():
            return
        now = now_ms()
        rname = readings.get_topic_name()
        due = [p for p, eng in engines.items() if eng.watermark_ms is not None
               and p in last_seen and now - last_seen[p] >= idle_ms]
        if not due:
            return
        # aiokafka's highwater from the last fetch response already shows most backlogs; only
        # a partition that looks caught up (or was not fetched yet) is asked of the broker
        ends: dict[TP, int] = {}
        ask = []
        for p in due:
            tp = TP(rname, p)
            try:
                hw = app.consumer.highwater(tp)
            except Exception:  # not assigned (anymore)
                hw = None
            if hw is not None and hw - 1 > last_taken(tp):
                ends[tp] = hw
            else:
                ask.append(tp)
        asked = await end_offsets(ask)
        if asked is None:
            return
        ends.update(asked)
        async with lock:
            if settling():
                return
            now = now_ms()
            outs: list[tuple[int, WindowResult]] = []
            touched: set[int] = set()
            for p in due:
                eng = engines.get(p)
                since = last_seen.get(p)
                if eng is None or eng.watermark_ms is None or since is None \
                        or now - since < idle_ms:
                    continue  # read something (or was revoked) meanwhile
                end = ends.get(TP(rname, p))
                led = ledgers.get(p)
                if end is None or end - 1 > last_taken(TP(rname, p)) or (led and led.missing):
                    stats.idle_close_deferred += 1
                    continue
                for o in eng.advance(eng.watermark_ms + (now - since)):
                    if isinstance(o, WindowResult):
                        outs.append((p, o))
                last_seen[p] = now
                touched.add(p)
                stats.idle_closes += 1
            if touched:
                await flush(outs, [], touched)

    fault_stall = {"armed": os.environ.get(FAULT_STALL_ENV, "") == "1"}

    def inject_stall() -> None:
        tps = {TP(tp.topic, tp.partition) for tp in app.consumer.assignment()
               if tp.topic == readings.get_topic_name()}
        if tps:
            fault_stall["armed"] = False
            app.consumer.pause_partitions(tps)
            log.warning("fault injection (%s): input partitions %s no longer fetched",
                        FAULT_STALL_ENV, sorted(tp.partition for tp in tps))

    @app.timer(tick_s)
    async def housekeeping() -> None:
        """Restore engines of assigned partitions that have no readings yet (so their windows
        can close) and start their idle clocks."""
        if settling():
            return
        if fault_stall["armed"]:
            inject_stall()
        async with lock:
            now = now_ms()
            rname = readings.get_topic_name()
            for tp in app.consumer.assignment():
                if tp.topic == rname:
                    if tp.partition not in engines:
                        engine_for(tp.partition)
                    last_seen.setdefault(tp.partition, now)  # the idle clock starts

    @app.task
    async def supervise() -> None:
        """The stall watchdog and the idle close, in a loop of their own: both may ask the
        broker for end offsets, which can take a while under load."""
        while not app.should_stop:
            await asyncio.sleep(tick_s)
            for check in (watchdog, idle_close):
                try:
                    await check()
                except asyncio.CancelledError:
                    raise
                except Exception:  # a failed check is retried on the next tick
                    log.exception("streams %s check failed", check.__name__)

    if opts.kpis:

        def aggregator() -> KpiAggregator:
            if "a" not in agg_box:
                a = KpiAggregator(model, opts.base_window_ms)
                wins = {int(k[1:]): v for k, v in kpi_state.data.items()
                        if isinstance(k, str) and k.startswith("w") and v is not None}
                a.load(kpi_state.data.get("meta"), wins)
                agg_box["a"] = a
            return agg_box["a"]

        @app.agent(windows_t, concurrency=1, name="kpis")
        async def kpis(stream: Any) -> None:
            async for events in stream.noack_take(opts.batch_max,
                                                  within=opts.flush_interval_s):
                busy.add("kpis")
                try:
                    await _kpi_batch(stream, events)
                finally:
                    busy.discard("kpis")

        async def _kpi_batch(stream: Any, events: list[Any]) -> None:
            a = aggregator()
            results: list[WindowResult] = []
            for ev in events:
                try:
                    results.extend(WindowResult.from_dict(d) for d in json.loads(ev.value))
                except Exception as exc:
                    await dlq.send(key=ev.key, value=_dlq_value(
                        ev.value, Reason.PROCESSING_ERROR, f"{type(exc).__name__}: {exc}"))
            kres = a.update(results)
            pts = to_points(opts.park_id, kres)
            if pts:
                await _write_until_accepted(sink, pts, stats, opts.retry_sleep_s)
                stats.kpi_points_written += len(pts)
            for w in a.take_dirty():
                val = a.window_state(w)
                kpi_state.data[f"w{w}"] = val
                kpi_state.send_changelog(0, f"w{w}", val)
            for k in [k for k in kpi_state.data.keys()
                      if isinstance(k, str) and k.startswith("w")
                      and int(k[1:]) not in a.base]:
                del kpi_state.data[k]
                kpi_state.send_changelog(0, k, None, value_serializer="raw")
            kpi_state.data["meta"] = a.meta_state()
            kpi_state.send_changelog(0, "meta", a.meta_state())
            for ev in events:
                await stream.ack(ev)
            note_taken(events)

    return app
