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

Why not Faust's own windowed tables: their expiry runs on wall-clock time and they have no
grace period (PITFALLS.md); why not concurrency > 1: faust-streaming #606; why catch per message:
#527 (an exception skips the message); why not exactly_once: its history of duplicates.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import faust

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
    #: partition -> offset of the last reading whose effect is in the engine (saved with it);
    #: readings at or below it, replayed after a crash, are skipped as already processed
    done_offset: dict[int, int] = {}
    agg_box: dict[str, KpiAggregator] = {}  # the KPI aggregator while we own its partition

    def engine_for(p: int) -> WindowEngine:
        eng = engines.get(p)
        if eng is None:
            meta = meter_state.data.get(f"p{p}")
            if meta is None:
                eng = WindowEngine(model, opts.base_window_ms, opts.grace_ms)
                done_offset[p] = -1
            else:
                done_offset[p] = int(meta.get("kafka_offset", -1))
                ms = {k: v["state"] for k, v in meter_state.data.items()
                      if isinstance(v, dict) and v.get("p") == p and "state" in v}
                eng = WindowEngine.from_parts(model, meta, ms)
                log.info("partition %d: restored %d meters, watermark %s, offset %d", p,
                         len(ms), eng.watermark_ms, done_offset[p])
            engines[p] = eng
        return eng

    async def _on_rebalance(sender: Any, tps: set[Any], **kwargs: Any) -> None:
        """Partitions revoked or (re)assigned: their engines are rebuilt from the table, which
        Faust has recovered from the changelog by then, so no engine outlives its ownership."""
        for tp in tps:
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
        meta["kafka_offset"] = done_offset.get(p, -1)
        meter_state.data[key] = meta
        meter_state.send_changelog(p, key, meta)

    lock = asyncio.Lock()  # the agent's batches and the idle timer never interleave
    last_seen: dict[int, int] = {}  # partition -> wall clock of its last reading / advance

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
            async with lock:
                outs: list[tuple[int, WindowResult]] = []
                dead: list[tuple[Any, bytes]] = []
                touched: set[int] = set()
                closed_at: list[float] = []
                now = now_ms()
                for ev in events:
                    p = ev.message.partition
                    touched.add(p)
                    last_seen[p] = now
                    stats.readings += 1
                    raw = ev.value
                    eng = engine_for(p)
                    off = ev.message.offset
                    if off <= done_offset[p]:
                        stats.replayed += 1
                        continue
                    done_offset[p] = off
                    try:
                        r = _decode(raw)
                        for o in eng.ingest(r.meter, r.ts_ms, r.value):
                            if isinstance(o, WindowResult):
                                outs.append((p, o))
                                closed_at.append(time.monotonic())
                            elif isinstance(o, LateReading):
                                stats.late += 1
                                dead.append((ev.key, _dlq_value(
                                    raw, o.reason, f"window already final (watermark "
                                    f"{o.watermark_ms}, grace {opts.grace_ms} ms)",
                                    partition=p, offset=ev.message.offset)))
                    except PayloadError as exc:
                        dead.append((ev.key, _dlq_value(raw, str(exc.reason), exc.message,
                                                        partition=p,
                                                        offset=ev.message.offset)))
                    except Exception as exc:  # one bad message never skips silently (#527)
                        dead.append((ev.key, _dlq_value(raw, Reason.PROCESSING_ERROR,
                                                        f"{type(exc).__name__}: {exc}",
                                                        partition=p,
                                                        offset=ev.message.offset)))
                await flush(outs, dead, touched, closed_at)
                for ev in events:
                    if ev.message.partition in engines:  # not revoked meanwhile
                        await stream.ack(ev)

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

    @app.timer(tick_s)
    async def housekeeping() -> None:
        """Restore engines of assigned partitions that have no readings yet (so their windows
        can close), and close windows of partitions idle for idle_close_ms (event time then
        follows the wall clock)."""
        if app.rebalancing or getattr(app, "in_recovery", False):
            return
        async with lock:
            now = now_ms()
            rname = readings.get_topic_name()
            for tp in app.consumer.assignment():
                if tp.topic == rname and tp.partition not in engines:
                    engine_for(tp.partition)
                    last_seen.setdefault(tp.partition, now)
            if idle_ms is None:
                return
            outs: list[tuple[int, WindowResult]] = []
            touched: set[int] = set()
            for p, eng in list(engines.items()):
                since = last_seen.get(p)
                if eng.watermark_ms is None or since is None or now - since < idle_ms:
                    continue
                for o in eng.advance(eng.watermark_ms + (now - since)):
                    if isinstance(o, WindowResult):
                        outs.append((p, o))
                last_seen[p] = now
                touched.add(p)
            if touched:
                await flush(outs, [], touched)

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

    return app
