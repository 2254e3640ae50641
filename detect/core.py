"""The detectors on a partitioned readings stream: pure, no I/O, wall clock injected.

`DetectCore` is what `parkmon detect` (detect/worker.py) runs between its Kafka consumer and
producer. It wraps one `ParkMonitor` (every detector of the park) and adds what a partitioned log
needs:

- per poll batch, readings are fed in event-time order (ts_ms, meter) and the detectors are ticked
  on a fixed event-time grid (`tick_step_ms`, default 10 s) as the batch goes, up to the
  **watermark**: the largest event time seen, held back to the largest event time of any partition
  that still has records waiting (a partition read behind the others must not make its meters
  look silent). Ticking inside the batch, not once at its end, matters: a meter silent for 30
  minutes and back within one large batch would otherwise never be seen silent, and grid ticks
  keep the detection times (and so the event ids) independent of how the log was cut into
  batches;
- readings later than the watermark wait in a **hold-back buffer** until the watermark passes
  them: a partition read ahead of the others must not be fed past the event time the lagging
  ones have reached, or a meter that fell silent in it would already be back before any tick
  could see the silence (seen as an intermittent missed `silent` in the worker test when one
  partition's records arrived in an earlier poll than the others'). The buffer is part of the
  checkpoint; above `max_pending` readings the oldest are fed anyway (counted in
  `counters.forced`), so a partition that never catches up cannot exhaust memory;
- when the stream is idle (nothing read for `idle_after_ms` of wall time), the detectors are
  ticked with watermark + idle wall time, so a park whose whole feed stopped still gets its
  silent-meter alerts;
- a record the detectors cannot take (not a reading, or a detector raising on it) becomes a
  `DeadLetter`, never an exception;
- `checkpoint()` / `restore()`: the detectors' state together with the next offset of every
  partition it covers, as one versioned JSON state document (parkmon/state.py) written atomically (`save_checkpoint`, `load_checkpoint`).

Supply events carry `live_rates`: the current output rates of the exchange's in-park alternative
suppliers (so the alert service ranks alternatives by live spare capacity, not only the park
file's figure). Events come out as `alerts.model.DetectionEvent`s; their `event_id` is a hash of the finding (kind,
exchange, meter, detection event time, ...), so the same finding produced again after a restart is
dropped by the alert service (`AlertService.handle` / outbox `seen_event`).
"""

from __future__ import annotations

import hashlib
import heapq
import json
import os
import tempfile
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alerts.model import DetectionEvent
from detect.events import SupplyDecline, SupplyDrop, to_detection_event
from detect.park_monitor import ParkMonitor
from parkmon import state
from parkmon.contracts import Reading, Reason

CHECKPOINT_VERSION = 1


@dataclass(frozen=True, slots=True)
class Record:
    """One consumed Kafka record of the readings topic."""

    partition: int
    offset: int
    value: bytes
    key: bytes | None = None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    record: Record
    reason: str
    message: str


@dataclass(slots=True)
class BatchResult:
    events: list[DetectionEvent] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    readings: int = 0
    ticked_to_ms: int | None = None


@dataclass(slots=True)
class CoreCounters:
    records: int = 0
    readings: int = 0
    dead: int = 0
    events: int = 0
    ticks: int = 0
    idle_ticks: int = 0
    forced: int = 0  # readings fed ahead of the watermark because the hold-back buffer was full


def park_signature(park: Any) -> str:
    """What a checkpoint must match: park id, meters (id, kind, period), exchanges and their sides.
    A changed park file makes an old checkpoint unusable (the detectors re-learn)."""
    parts = [str(park.id)]
    parts += sorted(f"m:{m.id}:{m.kind}:{m.period_s}" for m in park.meters)
    parts += sorted(f"x:{x.id}:{','.join(x.suppliers)}>{','.join(x.consumers)}"
                    for x in park.exchanges)
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def event_key(ev: DetectionEvent) -> bytes:
    """Kafka key of a detection event: the exchange, else the meter (one incident, one partition)."""
    return (ev.exchange_id or ev.meter_id or "").encode()


class LiveRates:
    """Latest rate (canonical quantity per hour) of the meters of interest: a rate meter's last
    value, a counter's increase over its last interval (none across a reset or a gap)."""

    def __init__(self, meters: dict[str, str], max_gap_ms: int = 600_000) -> None:
        self.kinds = dict(meters)  # meter id -> "counter" | "rate"
        self.max_gap_ms = max_gap_ms
        self.last: dict[str, tuple[int, float]] = {}
        self.rates: dict[str, float] = {}

    def observe(self, meter: str, ts_ms: int, value: float) -> None:
        kind = self.kinds.get(meter)
        if kind is None:
            return
        prev = self.last.get(meter)
        if prev is not None and ts_ms <= prev[0]:
            return
        self.last[meter] = (ts_ms, value)
        if kind != "counter":
            self.rates[meter] = value
        elif prev is not None and value >= prev[1] and ts_ms - prev[0] <= self.max_gap_ms:
            self.rates[meter] = (value - prev[1]) * 3_600_000 / (ts_ms - prev[0])
        else:
            self.rates.pop(meter, None)


def alternative_meters(park: Any) -> dict[str, list[str]]:
    """Per exchange: the output meters (same carrier and material) of its in-park alternative
    suppliers, whose live rates let the alert service rank them by live spare capacity."""
    out: dict[str, list[str]] = {}
    for x in park.exchanges:
        ids: list[str] = []
        for a in park.alternatives_for(x.id):
            if a.external:
                continue
            ids += [m.id for m in park.meters_of.get(a.enterprise, ())
                    if m.direction == "output" and m.carrier == x.carrier
                    and m.material == x.material]
        if ids:
            out[x.id] = ids
    return out


class DetectCore:
    def __init__(self, park: Any, *, idle_after_ms: int = 60_000, tick_step_ms: int = 10_000,
                 monitor_factory: Callable[[Any], Any] = ParkMonitor,
                 max_pending: int = 500_000) -> None:
        self.park_id = str(park.id)
        self.signature = park_signature(park)
        self.monitor: Any = monitor_factory(park)
        self.alt_meters = alternative_meters(park)
        wanted = {m for ms in self.alt_meters.values() for m in ms}
        self.live = LiveRates({m.id: m.kind for m in park.meters if m.id in wanted})
        self.idle_after_ms = idle_after_ms
        self.tick_step_ms = max(1, tick_step_ms)
        self.offsets: dict[int, int] = {}  # partition -> next offset to read
        self.part_max_ts: dict[int, int] = {}  # partition -> largest event time read from it
        self.max_ts: int | None = None
        self.last_tick_ms: int | None = None
        self.counters = CoreCounters()
        self._last_record_wall: int | None = None
        self.max_pending = max(0, max_pending)
        # hold-back buffer: (ts_ms, meter, seq, value, record) of readings past the watermark
        self.pending: list[tuple[int, str, int, float, Record]] = []
        self._seq = 0

    # -- intake ---------------------------------------------------------------------------------
    def process(self, records: Iterable[Record],
                lagging: Iterable[int] | Callable[[], Iterable[int]] = (),
                wall_ms: int | None = None) -> BatchResult:
        """Feed one poll batch. `lagging`: partitions known to have more records waiting (their
        event time holds the watermark back), or a function giving them, called once the batch's
        offsets are taken into account."""
        out = BatchResult()
        taken = 0
        for rec in records:
            self.counters.records += 1
            nxt = self.offsets.get(rec.partition, -1)
            self.offsets[rec.partition] = max(nxt, rec.offset + 1)
            try:
                r = Reading.from_json(rec.value)
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                reason = Reason.INVALID_JSON if isinstance(exc, json.JSONDecodeError
                                                           | UnicodeDecodeError) else Reason.SCHEMA
                out.dead.append(DeadLetter(rec, str(reason), f"not a reading: {exc!r}"))
                continue
            heapq.heappush(self.pending, (r.ts_ms, r.meter, self._seq, r.value, rec))
            self._seq += 1
            taken += 1
            pm = self.part_max_ts.get(rec.partition)
            if pm is None or r.ts_ms > pm:
                self.part_max_ts[rec.partition] = r.ts_ms
            if self.max_ts is None or r.ts_ms > self.max_ts:
                self.max_ts = r.ts_ms
        wm = self.watermark(lagging() if callable(lagging) else lagging)
        raw = self._release(wm, out)
        if taken and wall_ms is not None:
            self._last_record_wall = wall_ms
        if wm is not None:
            raw.extend(self._tick((wm // self.tick_step_ms) * self.tick_step_ms, out))
        self._convert(raw, out)
        return out

    def _release(self, wm: int | None, out: BatchResult) -> list[Any]:
        """Feed the held readings up to the watermark in event-time order (ts, meter), ticking on
        the grid between them; above `max_pending` held, the oldest go in regardless."""
        step = self.tick_step_ms
        raw: list[Any] = []
        pend = self.pending
        while pend and ((wm is not None and pend[0][0] <= wm) or len(pend) > self.max_pending):
            ts, meter, _, value, rec = heapq.heappop(pend)
            if wm is not None and ts <= wm:
                raw.extend(self._tick((ts // step) * step, out))
            else:
                self.counters.forced += 1
            try:
                raw.extend(self.monitor.observe(meter, ts, value))
            except Exception as exc:  # noqa: BLE001 - one bad reading never stops the stream
                out.dead.append(DeadLetter(rec, str(Reason.PROCESSING_ERROR),
                                           f"detector raised on {meter}@{ts}: {exc!r}\n"
                                           + traceback.format_exc(limit=3)))
                continue
            out.readings += 1
            self.live.observe(meter, ts, value)
        return raw

    def committable_offsets(self) -> dict[int, int]:
        """Per partition, the offset a Kafka commit may name: the next to read, or the first held
        reading when readings of that partition still wait in the hold-back buffer (a restart
        without a checkpoint must read them again)."""
        out = dict(self.offsets)
        for _, _, _, _, rec in self.pending:
            if rec.offset < out.get(rec.partition, rec.offset + 1):
                out[rec.partition] = rec.offset
        return out

    def watermark(self, lagging: Iterable[int] = ()) -> int | None:
        """Largest event time seen, held back to the event time of partitions still behind. None
        while a partition that is behind has not delivered anything yet."""
        if self.max_ts is None:
            return None
        wm = self.max_ts
        for p in lagging:
            pm = self.part_max_ts.get(p)
            if pm is None:
                return None
            wm = min(wm, pm)
        return wm

    def idle_tick(self, wall_ms: int) -> BatchResult:
        """Call when a poll returned nothing: once the stream has been idle for `idle_after_ms`,
        event time is taken to advance with the wall clock from the last watermark."""
        out = BatchResult()
        if self.idle_after_ms <= 0 or self.max_ts is None:
            return out
        if self._last_record_wall is None:
            self._last_record_wall = wall_ms
            return out
        idle = wall_ms - self._last_record_wall
        if idle < self.idle_after_ms:
            return out
        base = self.watermark() or self.max_ts
        raw = self._release(base, out)  # nothing more is coming: every held reading goes in
        raw.extend(self._tick(base + idle, out))
        self.counters.idle_ticks += 1
        self._convert(raw, out)
        return out

    def _tick(self, t: int, out: BatchResult) -> list[Any]:
        if self.last_tick_ms is not None and t <= self.last_tick_ms:
            return []
        self.last_tick_ms = t
        self.counters.ticks += 1
        out.ticked_to_ms = t
        return list(self.monitor.tick(t))

    def _convert(self, raw: list[Any], out: BatchResult) -> None:
        for ev in raw:
            live = None
            if isinstance(ev, SupplyDrop | SupplyDecline):
                live = {m: self.live.rates[m] for m in self.alt_meters.get(ev.exchange, ())
                        if m in self.live.rates}
            out.events.append(to_detection_event(ev, live))
        self.counters.readings += out.readings
        self.counters.dead += len(out.dead)
        self.counters.events += len(out.events)

    # -- checkpoints ----------------------------------------------------------------------------
    def checkpoint(self, topic: str) -> dict[str, Any]:
        return {"v": CHECKPOINT_VERSION, "park": self.park_id, "signature": self.signature,
                "topic": topic, "offsets": dict(self.offsets), "part_max_ts": dict(self.part_max_ts),
                "max_ts": self.max_ts, "last_tick_ms": self.last_tick_ms, "monitor": self.monitor,
                "live": self.live,
                "pending": [(ts, m, v, r.partition, r.offset, r.value, r.key)
                            for ts, m, _, v, r in sorted(self.pending)]}

    def restore(self, ckpt: dict[str, Any], topic: str) -> None:
        """Continue from `checkpoint()` data; raises ValueError when it is not for this park/topic."""
        if ckpt.get("v") != CHECKPOINT_VERSION:
            raise ValueError(f"checkpoint version {ckpt.get('v')!r}, expected {CHECKPOINT_VERSION}")
        if ckpt.get("park") != self.park_id or ckpt.get("signature") != self.signature:
            raise ValueError("checkpoint was written for another park file")
        if ckpt.get("topic") != topic:
            raise ValueError(f"checkpoint covers topic {ckpt.get('topic')!r}, not {topic!r}")
        self.monitor = ckpt["monitor"]
        self.offsets = {int(k): int(v) for k, v in ckpt["offsets"].items()}
        self.part_max_ts = {int(k): int(v) for k, v in ckpt["part_max_ts"].items()}
        self.max_ts = ckpt["max_ts"]
        self.last_tick_ms = ckpt["last_tick_ms"]
        self.live = ckpt.get("live", self.live)
        self.pending = []
        for i, (ts, m, v, part, off, value, key) in enumerate(ckpt.get("pending", ())):
            self.pending.append((int(ts), str(m), i, float(v), Record(part, off, value, key)))
        heapq.heapify(self.pending)
        self._seq = len(self.pending)


def save_checkpoint(path: str | Path, data: dict[str, Any]) -> int:
    """Write atomically (temporary file in the same directory, fsync, rename); returns its size."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = state.dumps(data, "detect-checkpoint")
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(blob)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return len(blob)


def load_checkpoint(path: str | Path) -> dict[str, Any] | None:
    """The checkpoint at `path`, None when there is none. The file is trusted (it is the worker's
    own state, written by this code; keep it where only the service account can write)."""
    path = Path(path)
    if not path.exists():
        return None
    data = state.loads(path.read_bytes(), "detect-checkpoint", str(path))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a detect checkpoint")
    return data
