"""MQTT intake of edge mode: the event-time watermark, dedup that tracks what changed, and the
identity of a message for recognising the broker's redelivery of it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from ingest.dedup import Deduplicator


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

