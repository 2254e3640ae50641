"""MQTT intake of edge mode: the event-time watermark, dedup that tracks what changed, and the
identity of a message for recognising the broker's redelivery of it."""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ingest.dedup import Deduplicator

log = logging.getLogger("parkmon.edge")


@dataclass
class Watermark:
    """Event time of the edge process: readings drive it, the wall clock takes over when idle."""

    lag_ms: int
    idle_after_ms: int
    idle_rate: float = 1.0
    event_max_ms: int | None = None
    progress_wall_ms: int = 0
    value: int | None = None

    def observe(self, event_max_ms: int | None, wall: int) -> None:
        if event_max_ms is not None and (self.event_max_ms is None
                                         or event_max_ms > self.event_max_ms):
            self.event_max_ms = event_max_ms
            self.progress_wall_ms = wall

    def hold(self, wall: int) -> None:
        """Restart the idle timer (at start-up, after a reconnect)."""
        self.progress_wall_ms = wall

    def at(self, wall: int, may_idle: bool = True) -> int | None:
        if self.event_max_ms is None:
            return self.value
        wm = self.event_max_ms - self.lag_ms
        idle = wall - self.progress_wall_ms
        if may_idle and idle >= self.idle_after_ms:
            # idling never takes event time past the wall clock
            wm = max(wm, min(self.event_max_ms - self.lag_ms + int(idle * self.idle_rate),
                             wall - self.lag_ms))
        if self.value is None or wm > self.value:
            self.value = wm
        return self.value


class TrackingDeduplicator(Deduplicator):
    """A Deduplicator that remembers which meters' keys changed since `take_dirty`."""

    __slots__ = ("dirty",)

    def __init__(self, per_meter: int = 65_536) -> None:
        super().__init__(per_meter)
        self.dirty: set[str] = set()

    def seen_or_add(self, meter: str, key: int) -> bool:
        dup = super().seen_or_add(meter, key)
        if not dup:
            self.dirty.add(meter)
        return dup

    def keys_of(self, meter: str) -> list[int]:
        m = self._meters.get(meter)
        return [] if m is None else list(m.order)

    def take_dirty(self) -> set[str]:
        d, self.dirty = self.dirty, set()
        return d


@dataclass
class _Msg:
    topic: str
    payload: bytes
    mid: int
    qos: int
    generation: int
    superseded: bool = False  # its redelivery on a newer connection takes over the ack


def message_digest(topic: str, payload: bytes) -> bytes:
    """Identity of an MQTT message for recognising the broker's redelivery of it."""
    h = hashlib.blake2b(digest_size=16)
    h.update(topic.encode())
    h.update(b"\0")
    h.update(payload)
    return h.digest()


@dataclass
class _Acking:
    mid: int
    generation: int
    digest: bytes



class IntakeLoop:
    """EdgeService's main loop: feed what MQTT delivered (skipping the broker's redeliveries of
    messages already in the state), advance event time, checkpoint when due."""

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

    checkpoint: Callable[[str], bool]  # Checkpointing
    _checkpoint_limit: Callable[[], int]
    _learn_stall: Callable[[int], None]

    def _subscribed(self) -> bool:
        return bool(self.mqtt.connected and self.mqtt.subscribed.is_set())

    def _input_live(self) -> bool:
        """Subscribed on the connection the idle timer was restarted for: only then may a
        silence be the devices' (never while disconnected or before a reconnect is noticed)."""
        return (self._was_subscribed and self._subscribed()
                and getattr(self.mqtt, "generation", 0) == self._sub_generation)

    def _advance(self, wall: int, force: bool = False) -> None:
        self.wm.observe(self.pipe.max_ts_ms, wall)
        # idle only when the silence is the devices': not while messages wait in the inbox or for
        # a checkpoint (the broker holds back once its in-flight window is full), nor while
        # InfluxDB is failing
        wm = self.wm.at(wall, may_idle=self._input_live() and self.inbox.empty()
                        and not self.unacked and self.cp.last_error is None)
        if wm is None:
            return
        due = self._last_advance_wm is None or wm - self._last_advance_wm >= \
            self.s.advance_every_ms
        if due or (force and wm != self._last_advance_wm):
            self._last_advance_wm = wm
            self.pipe.advance(wm)
            self._changed = True
        elif force and self.alerts is not None:
            self.alerts.tick()
        self.metrics.watermark.set(wm)

    def _redelivery(self, m: _Msg) -> bool:
        """True if `m` is the broker's redelivery of a message fed on an earlier connection and
        not acknowledged there (the acknowledgement could not be sent): same packet id, topic and
        payload. Its readings are in the pipeline state already; feeding it again would count
        them twice (duplicates, and rejected readings, which have no idempotency key)."""
        if not m.qos:
            return False
        dig: bytes | None = None
        for table in (self._unconfirmed, self._recent_acked):
            old = table.get(m.mid)
            if old is None or old[0] >= m.generation:
                continue
            dig = dig or message_digest(m.topic, m.payload)
            # matched, or the broker reused the id: the earlier message was acknowledged
            del table[m.mid]
            if old[1] == dig:
                return True
        if self.unacked and self.unacked[0].generation < m.generation:
            # fed on the lost connection, waiting for the next checkpoint
            for u in self.unacked:
                if u.mid == m.mid and u.generation < m.generation and not u.superseded \
                        and u.topic == m.topic and u.payload == m.payload:
                    u.superseded = True
                    return True
        return False

    def _feed(self, m: _Msg) -> None:
        if self._redelivery(m):
            # acknowledged with the next checkpoint, which persists the state holding it
            self.redelivered_skipped += 1
            self.unacked.append(m)
            return
        try:
            self.pipe.feed(m.topic, m.payload)
        except Exception as exc:  # a bug must not stop the service nor block the session
            self.pipe.counters.rejected["processing_error"] += 1
            log.exception("processing failed", extra={"event": "processing_error",
                                                      "mqtt_topic": m.topic, "error": repr(exc)})
        self.unacked.append(m)
        self._changed = True

    def step(self, timeout_s: float) -> None:
        """One iteration: feed what arrived (up to the checkpoint limit), advance, checkpoint."""
        wall = self.now_ms()
        self._loop_alive_wall = wall
        sub = self._subscribed()
        gen = getattr(self.mqtt, "generation", 0)
        if sub and (not self._was_subscribed or gen != self._sub_generation):
            # the idle clock starts once the session's backlog can arrive (also after a
            # disconnect and reconnect that both happened during one long step)
            self.wm.hold(wall)
            self._sub_generation = gen
        self._was_subscribed = sub
        fed = 0
        late_before = self.pipe.counters.late_beyond_grace
        limit = self._checkpoint_limit()
        try:
            m = self.inbox.get(timeout=timeout_s)
        except queue.Empty:
            m = None
        while m is not None:
            self._feed(m)
            fed += 1
            if len(self.unacked) >= limit:
                break
            try:
                m = self.inbox.get_nowait()
            except queue.Empty:
                m = None
        wall = self.now_ms()
        self._log_late(self.pipe.counters.late_beyond_grace - late_before, wall)
        if fed:
            self._last_msg_wall = wall
            self.wm.observe(self.pipe.max_ts_ms, wall)
            self._advance(wall)
        if wall - self._last_tick_wall >= self.s.tick_interval_s * 1000:
            self._last_tick_wall = wall
            self._advance(wall, force=True)
            if self.delivery is not None and self.pipe.notifications:
                self.delivery.wake()
            self._refresh_stats()
        self.metrics.unacked.set(len(self.unacked))
        if wall < self._influx_retry_at:
            return
        n = len(self.unacked)
        if n >= limit:
            self.cp.stall_streak.clear()
            learned = self.cp.learned_inflight
            if learned is not None and n + self.inbox.qsize() > learned:
                # the broker sent more unacknowledged messages than the learned limit: it was a
                # pause of the devices, not the broker's window
                self.cp.learned_inflight = None
                log.info("in-flight limit %d forgotten: %d messages arrived unacknowledged",
                         learned, n + self.inbox.qsize(), extra={"event": "inflight_limit_reset"})
            self.checkpoint("messages")
        elif n and wall - self._last_msg_wall >= self.s.stall_s * 1000:
            self._learn_stall(n)
            self.checkpoint("pause")
        elif (self._changed or n or self._retry_points) and \
                wall - self._last_cp_wall >= self.s.checkpoint_interval_s * 1000:
            self.checkpoint("interval")

    def _log_late(self, n: int, wall: int) -> None:
        """Readings late beyond grace: a warning with an example, at most one every 10 s."""
        self._late_unlogged += n
        if not self._late_unlogged or wall - self._late_logged_wall < 10_000:
            return
        lr = self.pipe.last_late
        log.warning("%d reading(s) late beyond grace (more than GRACE_MS behind the largest "
                    "event time seen)", self._late_unlogged, extra={
                        "event": "late", "count": self._late_unlogged,
                        "meter": lr.meter if lr else None, "ts_ms": lr.ts_ms if lr else None,
                        "max_ts_ms": self.pipe.max_ts_ms, "watermark_ms": self.wm.value})
        self._late_unlogged = 0
        self._late_logged_wall = wall
