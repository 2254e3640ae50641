"""Edge checkpoints: one SQLite transaction per checkpoint (WAL, synchronous=FULL), rows in the
versioned JSON state format (parkmon/state.py, docs/state-format.md)."""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from apps.edge.intake import TrackingDeduplicator, Watermark, _Acking, message_digest
from apps.edge.settings import CHECKPOINT_FILE, CHECKPOINT_FORMAT
from parkmon import state
from parkmon.errors import ParkmonError
from streams.core.points import PointSpec

log = logging.getLogger("parkmon.edge")


@dataclass
class CheckpointParts:
    """What one checkpoint writes: the small state whole, the large state only where it changed."""

    meta: dict[str, Any]
    meters: dict[str, Any]  # window state per meter (changed meters)
    dedup: dict[str, list[int]]  # dedup keys per meter (changed meters)
    kpi_windows: dict[int, Any]  # indicator base windows (changed ones)
    kpi_windows_gone: set[int]  # expired base windows


class CheckpointStore:
    """The checkpoint in one SQLite database, each checkpoint one transaction (atomic, durable:
    WAL with synchronous=FULL). Rows: `meta` (small state, detectors), `meter_state` and `dedup`
    per meter, `kpi_window` per indicator base window; a checkpoint rewrites only the rows that
    changed since the previous one, so its cost follows the traffic, not the park's history."""

    def __init__(self, state_dir: str | Path) -> None:
        import sqlite3

        self.dir = Path(state_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / CHECKPOINT_FILE
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        for table, key in (("meta", "k TEXT"), ("meter_state", "k TEXT"), ("dedup", "k TEXT"),
                           ("kpi_window", "k INTEGER")):
            self._db.execute(f"CREATE TABLE IF NOT EXISTS {table} ({key} PRIMARY KEY, v BLOB)")
        self.kpi_windows_stored: set[int] = {
            int(r[0]) for r in self._db.execute("SELECT k FROM kpi_window")}

    @staticmethod
    def _blob(v: Any) -> bytes:
        return state.dumps(v, "edge-checkpoint-row")

    def save(self, parts: CheckpointParts) -> int:
        """Write one checkpoint atomically; returns the bytes written."""
        b = self._blob
        rows_meta = [(k, b(v)) for k, v in parts.meta.items()]
        rows_m = [(k, b(v)) for k, v in parts.meters.items()]
        rows_d = [(k, b(v)) for k, v in parts.dedup.items()]
        rows_k = [(int(k), b(v)) for k, v in parts.kpi_windows.items()]
        gone = sorted(parts.kpi_windows_gone & self.kpi_windows_stored)
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", rows_meta)
            db.executemany("INSERT OR REPLACE INTO meter_state VALUES (?, ?)", rows_m)
            db.executemany("INSERT OR REPLACE INTO dedup VALUES (?, ?)", rows_d)
            db.executemany("INSERT OR REPLACE INTO kpi_window VALUES (?, ?)", rows_k)
            db.executemany("DELETE FROM kpi_window WHERE k = ?", [(w,) for w in gone])
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self.kpi_windows_stored.update(k for k, _ in rows_k)
        self.kpi_windows_stored.difference_update(gone)
        return sum(len(v) for rows in (rows_meta, rows_m, rows_d, rows_k) for _, v in rows)

    def load(self) -> dict[str, Any] | None:
        """The last checkpoint as {meta..., "meters", "dedup", "kpi_windows"}, or None."""
        where = str(self.path)
        meta = {str(k): state.loads(v, "edge-checkpoint-row", f"{where} (meta {k})")
                for k, v in self._db.execute("SELECT k, v FROM meta")}
        if not meta:
            return None
        if meta.get("format") != CHECKPOINT_FORMAT:
            raise ParkmonError(f"{self.path}: not an edge checkpoint of format "
                               f"{CHECKPOINT_FORMAT}")
        rows = self._db.execute
        row = "edge-checkpoint-row"
        meta["meters"] = {str(k): state.loads(v, row, f"{where} (meter {k})")
                          for k, v in rows("SELECT k, v FROM meter_state")}
        meta["dedup"] = {str(k): state.loads(v, row, f"{where} (dedup {k})")
                         for k, v in rows("SELECT k, v FROM dedup")}
        meta["kpi_windows"] = {int(k): state.loads(v, row, f"{where} (KPI window {k})")
                               for k, v in rows("SELECT k, v FROM kpi_window")}
        return meta

    def close(self) -> None:
        self._db.close()


def detector_code_version() -> str:
    """Hash of the detector sources: a stored ParkMonitor is restored only by the same code."""
    import detect as pkg

    h = hashlib.sha256()
    for p in sorted(Path(pkg.__file__).parent.glob("*.py")):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


@dataclass
class CheckpointStats:
    count: int = 0
    seq: int = 0
    restored_seq: int | None = None
    restored_detectors: bool = False
    last_wall_ms: int | None = None
    last_bytes: int = 0
    points_written: int = 0
    messages_acked: int = 0
    influx_failures: int = 0
    last_error: str | None = None
    learned_inflight: int | None = None
    stall_streak: list[int] = field(default_factory=list)



class Checkpointing:
    """EdgeService's checkpoints: points to InfluxDB, then state to SQLite, then MQTT acks; and
    restore after a restart (see the module docstring of apps/edge/service.py)."""

    # set by EdgeService.__init__ (apps/edge/service.py)
    park: Any
    s: Any
    pipe: Any
    wm: Watermark
    store: Any
    cp: Any
    metrics: Any
    mqtt: Any
    alerts: Any
    delivery: Any
    writer: Any
    inbox: queue.Queue[Any]
    unacked: list[Any]
    stop_event: threading.Event
    now_ms: Callable[[], int]
    _unconfirmed: dict[int, tuple[int, bytes]]
    _recent_acked: dict[int, tuple[int, bytes]]
    _retry_points: list[Any]
    _ledger_pending: list[Any]
    ledger: Any
    _last_advance_wm: int | None
    _detector_version: str
    _store_broken: bool
    _influx_retry_at: int
    _changed: bool
    _last_cp_wall: int
    _last_msg_wall: int
    _last_tick_wall: int
    _loop_alive_wall: int
    _was_subscribed: bool
    _sub_generation: int | None
    _late_unlogged: int
    _late_logged_wall: int
    redelivered_skipped: int

    _refresh_stats: Callable[[], None]  # EdgeService

    def restore(self) -> bool:
        doc = self.store.load()
        if doc is None:
            log.info("no checkpoint: starting empty", extra={"event": "fresh_start",
                                                             "path": str(self.store.path)})
            self._track_dedup({})
            return False
        if doc.get("park") != self.park.id:
            raise ParkmonError(f"{self.store.path} is the checkpoint of park {doc.get('park')!r}, "
                               f"not {self.park.id!r}; use another PARKMON_EDGE_STATE_DIR")
        pipeline = dict(doc["pipeline"])
        pipeline["engine"] = {
            "windows": {**doc["windows_meta"], "meters": doc["meters"]},
            "kpis": {"meta": doc["kpis_meta"],
                     "windows": {str(w): d for w, d in doc["kpi_windows"].items()}}}
        pipeline["dedup"] = doc["dedup"]
        self.pipe.restore(pipeline)
        self._track_dedup(doc["dedup"])
        restored_detectors = False
        if doc.get("detector_version") == self._detector_version and doc.get("monitor"):
            try:
                self.pipe.monitor = state.loads(doc["monitor"], "park-monitor",
                                               f"{self.store.path} (detectors)")
                restored_detectors = True
            except Exception as exc:  # noqa: BLE001 - fall back to re-learning
                log.warning("detector state not restored (%s): detectors re-learn", exc)
        else:
            log.warning("detector code changed since the checkpoint: detectors re-learn",
                        extra={"event": "detectors_reset"})
        self.wm.value = doc.get("watermark_ms")
        self.wm.event_max_ms = self.pipe.max_ts_ms
        self.wm.hold(self.now_ms())
        # generation 0: older than any connection of this process
        self._unconfirmed = {int(mid): (0, bytes(dig))
                             for mid, dig in doc.get("in_state_unacked", [])}
        self._last_advance_wm = doc.get("last_advance_wm")
        self.cp.seq = self.cp.restored_seq = int(doc["seq"])
        self.cp.restored_detectors = restored_detectors
        self._refresh_stats()
        log.info("checkpoint restored", extra={
            "event": "restored", "seq": self.cp.seq, "written_ms": doc.get("written_ms"),
            "watermark_ms": self.wm.value, "detectors": restored_detectors,
            "readings": self.pipe.counters.readings})
        return True

    def _track_dedup(self, snap: dict[str, list[int]]) -> None:
        self.pipe.dedup = TrackingDeduplicator.from_snapshot(snap, self.s.dedup_per_meter)

    def _parts(self, seq: int, acking: list[_Acking]) -> CheckpointParts:
        """The checkpoint's content: small state whole, large state where it changed."""
        pipe = self.pipe
        eng = pipe.engine
        dedup = pipe.dedup
        small = pipe.snapshot_small()
        meta = {"format": CHECKPOINT_FORMAT, "park": self.park.id, "seq": seq,
                "written_ms": self.now_ms(), "pipeline": small,
                "windows_meta": eng.windows.meta_state(), "kpis_meta": eng.kpis.meta_state(),
                "monitor": state.dumps(pipe.monitor, "park-monitor"),
                "detector_version": self._detector_version, "watermark_ms": self.wm.value,
                "last_advance_wm": self._last_advance_wm,
                # what this checkpoint acknowledges next (and what may not be acknowledged yet):
                # after a kill -9 the broker may redeliver any of it, already in this state
                "in_state_unacked": [
                    (mid, dig) for mid, (_gen, dig) in
                    {**self._unconfirmed, **self._recent_acked,
                     **{a.mid: (a.generation, a.digest) for a in acking}}.items()]}
        meters = {m: eng.windows.meter_state(m) for m in eng.windows.take_dirty()}
        dd = dedup.take_dirty() if isinstance(dedup, TrackingDeduplicator) else set()
        kpi_dirty = eng.kpis.take_dirty()
        kpi_windows = {w: st for w in kpi_dirty if (st := eng.kpis.window_state(w)) is not None}
        gone = self.store.kpi_windows_stored - set(eng.kpis.base)
        keys = {m: dedup.keys_of(m) for m in dd} if isinstance(dedup, TrackingDeduplicator) \
            else {}
        return CheckpointParts(meta, {m: v for m, v in meters.items() if v is not None}, keys,
                               kpi_windows, gone)

    def checkpoint(self, reason: str) -> bool:
        """Points to InfluxDB, then state to disk, then MQTT acks. False if InfluxDB failed."""
        from parkmon.errors import SinkBackpressure, SinkError

        if self._store_broken:
            return False
        t0 = time.perf_counter()
        points = self._take_points()
        try:
            self.writer.write(points)
        except (SinkError, SinkBackpressure) as exc:
            self._retry_points = points
            self.cp.influx_failures += 1
            self.cp.last_error = str(exc)
            self.metrics.influx_failures.inc()
            self._influx_retry_at = self.now_ms() + 5_000
            log.error("checkpoint postponed: InfluxDB write failed", extra={
                "event": "influx_failed", "error": str(exc), "points": len(points),
                "unacked": len(self.unacked)})
            return False
        self.cp.last_error = None
        seq = self.cp.seq + 1
        acking = [_Acking(m.mid, m.generation, message_digest(m.topic, m.payload))
                  for m in self.unacked if m.qos and not m.superseded]
        try:
            if self.ledger is not None and self._ledger_pending:
                # before the state: after a crash the replay re-closes these windows, and the
                # ledger, idempotent by content, appends them once
                self.ledger.append(self._ledger_pending)
            self._ledger_pending = []
            size = self.store.save(self._parts(seq, acking))
        except BaseException:
            # the changed-rows bookkeeping is gone with this checkpoint: never write another one
            # (nothing more is acknowledged; the next start restores the last good checkpoint)
            self._store_broken = True
            self.stop_event.set()
            raise
        # durable from here on: health and metrics report it only now
        self.cp.seq = seq
        acked = 0
        recent = self._recent_acked
        digest = {a.mid: a.digest for a in acking}
        for msg in self.unacked:
            if msg.superseded:
                continue
            if self.mqtt.ack(msg.mid, msg.qos, msg.generation):
                acked += 1
                if msg.qos:
                    recent.pop(msg.mid, None)
                    recent[msg.mid] = (msg.generation, digest[msg.mid])
            elif msg.qos:
                # connection lost (or a newer one): the broker redelivers it with this packet id
                self._unconfirmed[msg.mid] = (msg.generation, digest[msg.mid])
        for mid in list(recent)[:max(0, len(recent) - 2 * self.s.checkpoint_messages)]:
            del recent[mid]  # bounded: only the latest acks can still be in flight
        self.unacked = []
        # keep memory bounded (windows / kpis were taken with the points)
        self.pipe.events.clear()
        self.pipe.notifications.clear()
        self._changed = False
        self._last_cp_wall = self.now_ms()
        c = self.cp
        c.count += 1
        c.last_wall_ms = self._last_cp_wall
        c.last_bytes = size
        c.points_written += len(points)
        c.messages_acked += acked
        m = self.metrics
        m.checkpoints.inc()
        m.points_written.inc(len(points))
        m.messages_acked.inc(acked)
        m.unacked.set(0)
        m.checkpoint_seconds.observe(time.perf_counter() - t0)
        log.debug("checkpoint", extra={"event": "checkpoint", "seq": c.seq, "reason": reason,
                                       "points": len(points), "acked": acked, "bytes": size})
        return True

    def _take_points(self) -> list[PointSpec]:
        """Points of every window and indicator result since the last checkpoint (the latest
        per key), plus those of a failed write (newer results of the same series win)."""
        from streams.core.points import to_points

        pipe = self.pipe
        outs: list[Any] = [*pipe.windows.values(), *pipe.kpis.values()]
        if self.ledger is not None:
            from streams.core.ledger import candidates_from_kpis

            self._ledger_pending.extend(candidates_from_kpis(
                pipe.kpis.values(), {x.id: x.quantity_unit for x in self.park.exchanges}))
        pipe.windows.clear()
        pipe.kpis.clear()
        points = to_points(self.park.id, outs)
        if self._retry_points:
            merged = {p.series_key: p for p in self._retry_points}
            merged.update((p.series_key, p) for p in points)
            points = list(merged.values())
            self._retry_points = []
        return points

    def _checkpoint_limit(self) -> int:
        lim = self.s.checkpoint_messages
        if self.cp.learned_inflight is not None:
            lim = min(lim, self.cp.learned_inflight)
        return max(1, lim)

    def _learn_stall(self, n: int) -> None:
        """A pause with exactly the same number of unacknowledged messages twice in a row, below
        our limit: the broker's in-flight limit. Checkpoint at it from now on."""
        streak = self.cp.stall_streak
        streak.append(n)
        del streak[:-2]
        if len(streak) == 2 and streak[0] == streak[1] and n < self._checkpoint_limit():
            self.cp.learned_inflight = n
            log.warning("broker in-flight limit appears to be %d messages (below "
                        "PARKMON_EDGE_CHECKPOINT_MESSAGES=%d): checkpointing every %d messages",
                        n, self.s.checkpoint_messages, n,
                        extra={"event": "inflight_limit", "limit": n})
