"""Bounded deduplication of readings by idempotency key (meter, seq) or (meter, ts_ms).

Guarantee (see docs/ingest.md, "Duplicates"):

* Within one gateway process, a reading whose key is among the last `per_meter` keys accepted for
  its meter is a duplicate: it is counted (metric `duplicates`) and not produced again.
* Only readings the validator accepted are remembered (the gateway deduplicates after validating):
  a rejected reading, e.g. one the device flagged `bad` (`device_quality_bad`), never takes the
  slot of its key, so the corrected reading sent after it is accepted.
* Across a restart (kill -9 included), the gateway rebuilds this memory before it subscribes, by
  re-reading the records that the readings topic received during the last `replay_s` seconds
  (`KafkaOut.replay_recent`). The duplicates a crash creates are exactly the messages that were
  produced but not yet acknowledged to MQTT, so they are in that tail and are recognised after
  restart.
* What is not promised: a duplicate older than the memory (more than `per_meter` newer keys of the
  same meter in between, or older than the replay horizon at restart), and a record whose produce
  request was still in flight at the crash and reached Kafka only after the restarted gateway read
  the tail. Such a duplicate goes to Kafka with the same key (meter) and the same idempotency key,
  so it is harmless downstream: the streams stage deduplicates by `Reading.idempotency_key` and its
  window results, keyed by event time, overwrite. The end-to-end fault tests count them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

Key = tuple[str, int]


class _MeterKeys:
    __slots__ = ("seen", "order")

    def __init__(self) -> None:
        self.seen: set[int] = set()
        self.order: deque[int] = deque()


class Deduplicator:
    """Remembers the last `per_meter` idempotency keys of every meter (insertion order)."""

    __slots__ = ("per_meter", "_meters")

    def __init__(self, per_meter: int = 65_536) -> None:
        if per_meter < 1:
            raise ValueError("per_meter must be >= 1")
        self.per_meter = per_meter
        self._meters: dict[str, _MeterKeys] = {}

    def seen_or_add(self, meter: str, key: int) -> bool:
        """True when (meter, key) was seen (a duplicate); otherwise remember it and return False."""
        m = self._meters.get(meter)
        if m is None:
            m = self._meters[meter] = _MeterKeys()
        elif key in m.seen:
            return True
        m.seen.add(key)
        m.order.append(key)
        if len(m.order) > self.per_meter:
            m.seen.discard(m.order.popleft())
        return False

    def add_all(self, keys: Iterable[Key]) -> int:
        """Remember keys (warm-up after a restart); returns how many were new."""
        n = 0
        for meter, key in keys:
            if not self.seen_or_add(meter, key):
                n += 1
        return n

    def __contains__(self, item: Key) -> bool:
        m = self._meters.get(item[0])
        return m is not None and item[1] in m.seen

    def __len__(self) -> int:
        return sum(len(m.order) for m in self._meters.values())

    def snapshot(self) -> dict[str, list[int]]:
        """Plain data (oldest first) that `from_snapshot` turns back into an equal deduplicator."""
        return {meter: list(m.order) for meter, m in self._meters.items()}

    @classmethod
    def from_snapshot(cls, snap: dict[str, list[int]], per_meter: int = 65_536) -> Deduplicator:
        d = cls(per_meter)
        for meter, keys in snap.items():
            for k in keys:
                d.seen_or_add(meter, k)
        return d
