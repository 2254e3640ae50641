"""Event-time tumbling base windows per meter, with a grace period for late readings.

Time only moves with event time (the largest `ts_ms` seen, the *watermark*) or with an explicit
`advance(watermark_ms)` (an idle clock in the caller); nothing here reads the wall clock.

Window [s, s + size) of a meter is
- *open* while watermark < s + size;
- *closed* once watermark >= s + size: its result is emitted (revision 0);
- *final* once watermark >= s + size + grace: its readings are dropped from state.
A reading for a closed but not final window updates it and the corrected result is emitted again
(revision + 1). A reading for a final window is *late beyond grace*: it is not folded in, it is
counted in `stats.late` and returned as a `LateReading` so the caller can report it.

Duplicates (same meter and `ts_ms`, the contract's idempotency key without `seq`) are counted
once, so replaying input after a crash does not change any result.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from typing import Any

from parkmon.contracts import Reason
from parkmon.errors import PayloadError
from streams.core.aggregates import Aggregate
from streams.core.counters import step
from streams.core.model import KpiModel, MeterInfo


def window_start(ts_ms: int, size_ms: int) -> int:
    return ts_ms - ts_ms % size_ms


@dataclass(frozen=True, slots=True)
class WindowResult:
    """One meter's base window (emitted again with a higher revision when corrected)."""

    meter: str
    enterprise: str
    carrier: str
    direction: str
    window_start_ms: int
    window_end_ms: int
    agg: Aggregate
    revision: int

    @property
    def quantity(self) -> float:
        return self.agg.quantity

    @property
    def rate_per_h(self) -> float:
        """Mean flow over the window, canonical quantity per hour."""
        return self.agg.quantity * 3_600_000.0 / (self.window_end_ms - self.window_start_ms)

    def to_dict(self) -> dict[str, Any]:
        return {"meter": self.meter, "enterprise": self.enterprise, "carrier": self.carrier,
                "direction": self.direction, "start": self.window_start_ms,
                "end": self.window_end_ms, "rev": self.revision, "agg": self.agg.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WindowResult:
        return cls(meter=d["meter"], enterprise=d["enterprise"], carrier=d["carrier"],
                   direction=d["direction"], window_start_ms=int(d["start"]),
                   window_end_ms=int(d["end"]), agg=Aggregate.from_dict(d["agg"]),
                   revision=int(d["rev"]))


@dataclass(frozen=True, slots=True)
class LateReading:
    meter: str
    ts_ms: int
    value: float
    watermark_ms: int
    reason: str = "late_beyond_grace"


@dataclass
class WindowStats:
    accepted: int = 0
    duplicates: int = 0
    conflicting_duplicates: int = 0  # same (meter, ts) with another value: first one kept
    late: int = 0  # beyond grace, not folded in
    corrections: int = 0  # re-emitted window results

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class _MeterState:
    ts: list[int] = field(default_factory=list)  # sorted sample times in open/closed windows
    vals: dict[int, float] = field(default_factory=dict)
    anchor: tuple[int, float] | None = None  # last reading before the non-final region
    emitted: dict[int, int] = field(default_factory=dict)  # window start -> last revision
    pending: set[int] = field(default_factory=set)  # window starts with data, not emitted yet


class WindowEngine:
    """Per-meter tumbling windows for the meters of `model` (one instance per Kafka partition)."""

    def __init__(self, model: KpiModel, size_ms: int = 60_000, grace_ms: int = 120_000) -> None:
        if size_ms <= 0 or grace_ms < 0:
            raise ValueError("size_ms must be > 0 and grace_ms >= 0")
        self.model = model
        self.size_ms = size_ms
        self.grace_ms = grace_ms
        self.watermark_ms: int | None = None
        self.closed_until_ms: int | None = None  # windows ending at or before are closed
        self.final_until_ms: int | None = None  # windows ending at or before are final
        self.stats = WindowStats()
        self._meters: dict[str, _MeterState] = {}
        self._dirty: set[str] = set()  # meters whose state changed since `take_dirty`

    # -- input -----------------------------------------------------------------------------
    def ingest(self, meter: str, ts_ms: int, value: float) -> list[WindowResult | LateReading]:
        info = self.model.meters.get(meter)
        if info is None:
            raise PayloadError(Reason.UNKNOWN_METER,
                               f"meter {meter!r} is not in park {self.model.park_id!r}")
        if not math.isfinite(value):
            raise PayloadError(Reason.NOT_FINITE, f"meter {meter!r}: value {value!r} at {ts_ms}")
        if self.final_until_ms is not None and ts_ms < self.final_until_ms:
            self.stats.late += 1
            return [LateReading(meter, ts_ms, value, _nn(self.watermark_ms))]
        st = self._meters.get(meter)
        if st is None:
            st = self._meters[meter] = _MeterState()
        old = st.vals.get(ts_ms)
        if old is not None:
            self.stats.duplicates += 1
            if old != value:
                self.stats.conflicting_duplicates += 1
            return []
        self.stats.accepted += 1
        self._dirty.add(meter)
        i = bisect.bisect_left(st.ts, ts_ms)
        st.ts.insert(i, ts_ms)
        st.vals[ts_ms] = value
        w = window_start(ts_ms, self.size_ms)
        touched = {w}
        if i + 1 < len(st.ts):  # the next reading's interval changed
            touched.add(window_start(st.ts[i + 1], self.size_ms))
        out: list[WindowResult | LateReading] = []
        for tw in sorted(touched):
            if tw in st.emitted:
                st.emitted[tw] += 1
                self.stats.corrections += 1
                out.append(self._result(info, st, tw, st.emitted[tw]))
            else:
                st.pending.add(tw)
        if self.watermark_ms is None or ts_ms > self.watermark_ms:
            out.extend(self.advance(ts_ms))
        return out

    def advance(self, watermark_ms: int) -> list[WindowResult | LateReading]:
        """Move event time forward (never backward); emit windows that closed."""
        if self.watermark_ms is not None and watermark_ms <= self.watermark_ms:
            return []
        self.watermark_ms = watermark_ms
        out: list[WindowResult | LateReading] = []
        closed = window_start(watermark_ms, self.size_ms)
        if self.closed_until_ms is None or closed > self.closed_until_ms:
            self.closed_until_ms = closed
            for mid, st in self._meters.items():
                if not st.pending:
                    continue
                info = self.model.meters[mid]
                for w in sorted(st.pending):
                    if w + self.size_ms <= closed:
                        st.pending.discard(w)
                        st.emitted[w] = 0
                        self._dirty.add(mid)
                        out.append(self._result(info, st, w, 0))
        final = window_start(watermark_ms - self.grace_ms, self.size_ms)
        if self.final_until_ms is None or final > self.final_until_ms:
            self.final_until_ms = final
            for mid, st in self._meters.items():
                if self._finalize(st, final):
                    self._dirty.add(mid)
        return out

    def _finalize(self, st: _MeterState, final: int) -> bool:
        k = bisect.bisect_left(st.ts, final)
        old = [w for w in st.emitted if w < final]
        if k:
            last = st.ts[k - 1]
            st.anchor = (last, st.vals[last])
            for t in st.ts[:k]:
                del st.vals[t]
            del st.ts[:k]
        for w in old:
            del st.emitted[w]
        # pending windows below `final` cannot exist: they were emitted when they closed
        return bool(k or old)

    # -- results ---------------------------------------------------------------------------
    def _aggregate(self, info: MeterInfo, st: _MeterState, w: int) -> Aggregate:
        lo = bisect.bisect_left(st.ts, w)
        hi = bisect.bisect_left(st.ts, w + self.size_ms)
        if hi == lo:
            return Aggregate()
        prev = st.anchor if lo == 0 else (st.ts[lo - 1], st.vals[st.ts[lo - 1]])
        kind, rollover, max_gap = info.kind, info.rollover, info.max_gap_ms
        qty = 0.0
        resets = gaps = 0
        vmin, vmax = math.inf, -math.inf
        vals = st.vals
        for t in st.ts[lo:hi]:
            v = vals[t]
            s = step(kind, prev, t, v, rollover, max_gap)
            qty += s.quantity
            resets += s.reset
            gaps += s.gap
            if v < vmin:
                vmin = v
            if v > vmax:
                vmax = v
            prev = (t, v)
        return Aggregate(count=hi - lo, quantity=qty, co2e_t=self.model.co2e_t(info, qty, w),
                         vmin=vmin, vmax=vmax, first_ts_ms=st.ts[lo], last_ts_ms=st.ts[hi - 1],
                         resets=resets, gaps=gaps)

    def _result(self, info: MeterInfo, st: _MeterState, w: int, rev: int) -> WindowResult:
        return WindowResult(meter=info.id, enterprise=info.enterprise, carrier=info.carrier,
                            direction=info.direction, window_start_ms=w,
                            window_end_ms=w + self.size_ms, agg=self._aggregate(info, st, w),
                            revision=rev)

    # -- state -----------------------------------------------------------------------------
    # Whole (`snapshot` / `restore`) or in parts: `meta_state` plus one `meter_state` per meter,
    # so a changelog only carries the meters that changed (`take_dirty`).
    def take_dirty(self) -> set[str]:
        d, self._dirty = self._dirty, set()
        return d

    def meta_state(self) -> dict[str, Any]:
        return {"v": 1, "size_ms": self.size_ms, "grace_ms": self.grace_ms,
                "watermark_ms": self.watermark_ms, "closed_until_ms": self.closed_until_ms,
                "final_until_ms": self.final_until_ms, "stats": self.stats.to_dict()}

    def meter_state(self, meter: str) -> dict[str, Any] | None:
        st = self._meters.get(meter)
        if st is None:
            return None
        return {"anchor": list(st.anchor) if st.anchor else None,
                "samples": [[t, st.vals[t]] for t in st.ts],
                "emitted": [[w, r] for w, r in st.emitted.items()],
                "pending": sorted(st.pending)}

    def snapshot(self) -> dict[str, Any]:
        snap = self.meta_state()
        snap["meters"] = {mid: self.meter_state(mid) for mid in self._meters}
        return snap

    @classmethod
    def from_parts(cls, model: KpiModel, meta: dict[str, Any],
                   meters: dict[str, dict[str, Any]]) -> WindowEngine:
        eng = cls(model, int(meta["size_ms"]), int(meta["grace_ms"]))
        eng.watermark_ms = meta["watermark_ms"]
        eng.closed_until_ms = meta["closed_until_ms"]
        eng.final_until_ms = meta["final_until_ms"]
        eng.stats = WindowStats(**meta["stats"])
        for mid, m in meters.items():
            st = _MeterState()
            st.anchor = (int(m["anchor"][0]), float(m["anchor"][1])) if m["anchor"] else None
            for t, v in m["samples"]:
                st.ts.append(int(t))
                st.vals[int(t)] = float(v)
            st.emitted = {int(w): int(r) for w, r in m["emitted"]}
            st.pending = {int(w) for w in m["pending"]}
            eng._meters[mid] = st
        return eng

    @classmethod
    def restore(cls, model: KpiModel, snap: dict[str, Any]) -> WindowEngine:
        return cls.from_parts(model, snap, snap["meters"])


def _nn(x: int | None) -> int:
    assert x is not None
    return x
