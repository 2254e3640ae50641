"""The KPI engine: meter windows -> indicators per park, enterprise and exchange, per view.

`KpiEngine` runs the whole core in one object (edge mode, tests). The Faust worker runs the two
halves separately: `WindowEngine` per Kafka partition (meters are partitioned by id) and one
`KpiAggregator` over the meter-window results of all partitions.

Every output is keyed by (what, window start): re-emitting it after a correction or a replay
overwrites the earlier value; nothing downstream has to deduplicate.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from streams.core.aggregates import Aggregate
from streams.core.kpis import Values, compute_all
from streams.core.model import KpiModel
from streams.core.rolling import (
    BASE_VIEW,
    DEFAULT_VIEWS,
    View,
    base_windows_of,
    hopping_window_starts,
    validate_views,
)
from streams.core.windows import LateReading, WindowEngine, WindowResult


@dataclass(frozen=True, slots=True)
class KpiResult:
    scope: str  # "park" | "enterprise" | "exchange"
    entity: str  # park, enterprise or exchange id
    view: str  # "1m" (base window) | "15m" | "1h" | "24h"
    window_start_ms: int
    window_end_ms: int
    values: Values


Output = WindowResult | KpiResult | LateReading


class Sums:
    __slots__ = ("quantity", "co2e_t")

    def __init__(self, quantity: float, co2e_t: float) -> None:
        self.quantity = quantity
        self.co2e_t = co2e_t


class KpiAggregator:
    """Indicators from meter-window results (any order, repeated results overwrite)."""

    def __init__(self, model: KpiModel, base_window_ms: int = 60_000,
                 views: Iterable[View] = DEFAULT_VIEWS, retention_extra_ms: int = 3_600_000):
        self.model = model
        self.base_ms = base_window_ms
        self.views = tuple(views)
        validate_views(self.views, base_window_ms)
        self.retention_ms = max([v.size_ms for v in self.views] + [base_window_ms]) \
            + retention_extra_ms
        self.base: dict[int, dict[str, Aggregate]] = {}
        self.latest_end_ms: int | None = None
        self.pending: set[tuple[str, int]] = set()
        self.dirty_windows: set[int] = set()  # base windows changed since the last `take_dirty`

    def _size(self, view: str) -> int:
        if view == BASE_VIEW:
            return self.base_ms
        return next(v.size_ms for v in self.views if v.name == view)

    def update(self, results: Iterable[WindowResult]) -> list[KpiResult]:
        keys: set[tuple[str, int]] = set()
        for r in results:
            if r.window_end_ms - r.window_start_ms != self.base_ms:
                raise ValueError(f"window of {r.meter} is not a {self.base_ms} ms base window")
            self.base.setdefault(r.window_start_ms, {})[r.meter] = r.agg
            self.dirty_windows.add(r.window_start_ms)
            keys.add((BASE_VIEW, r.window_start_ms))
            for v in self.views:
                keys.update((v.name, s) for s in
                            hopping_window_starts(r.window_start_ms, v.size_ms, v.step_ms))
            if self.latest_end_ms is None or r.window_end_ms > self.latest_end_ms:
                self.latest_end_ms = r.window_end_ms
        keys |= self.pending
        out: list[KpiResult] = []
        self.pending = set()
        for view, start in sorted(keys, key=lambda k: (k[1], k[0])):
            end = start + self._size(view)
            if self.latest_end_ms is None or end > self.latest_end_ms:
                self.pending.add((view, start))
                continue
            out.extend(self._compute(view, start, end))
        self._expire()
        return out

    def view_aggregates(self, start: int, end: int) -> dict[str, Aggregate]:
        """Full mergeable aggregates of every meter over [start, end)."""
        q: dict[str, Aggregate] = {}
        for w in base_windows_of(start, end - start, self.base_ms):
            for mid, agg in self.base.get(w, {}).items():
                q[mid] = q[mid].merge(agg) if mid in q else agg
        return q

    def view_sums(self, start: int, end: int) -> dict[str, Sums]:
        """Only what the indicators read (quantity, co2e), summed over [start, end)."""
        q: dict[str, Sums] = {}
        for w in base_windows_of(start, end - start, self.base_ms):
            b = self.base.get(w)
            if not b:
                continue
            for mid, agg in b.items():
                s = q.get(mid)
                if s is None:
                    q[mid] = Sums(agg.quantity, agg.co2e_t)
                else:
                    s.quantity += agg.quantity
                    s.co2e_t += agg.co2e_t
        return q

    def _compute(self, view: str, start: int, end: int) -> list[KpiResult]:
        q = self.view_sums(start, end)
        return [KpiResult(scope, ent, view, start, end, vals)
                for scope, ent, vals in compute_all(self.model, q)]

    def _expire(self) -> None:
        if self.latest_end_ms is None:
            return
        horizon = self.latest_end_ms - self.retention_ms
        for w in [w for w in self.base if w < horizon]:
            del self.base[w]
        self.pending = {(v, s) for v, s in self.pending if s >= horizon}

    def take_dirty(self) -> set[int]:
        d, self.dirty_windows = self.dirty_windows, set()
        return d

    # state, whole or per base window (the Faust table stores one key per base window)
    def window_state(self, w: int) -> dict[str, Any] | None:
        b = self.base.get(w)
        return None if b is None else {m: a.to_dict() for m, a in b.items()}

    def meta_state(self) -> dict[str, Any]:
        return {"latest_end_ms": self.latest_end_ms, "pending": sorted(self.pending)}

    def load(self, meta: dict[str, Any] | None, windows: dict[int, dict[str, Any]]) -> None:
        for w, d in windows.items():
            self.base[int(w)] = {m: Aggregate.from_dict(a) for m, a in d.items()}
        if meta:
            self.latest_end_ms = meta["latest_end_ms"]
            self.pending = {(str(v), int(s)) for v, s in meta["pending"]}

    def snapshot(self) -> dict[str, Any]:
        return {"meta": self.meta_state(),
                "windows": {str(w): self.window_state(w) for w in self.base}}


class KpiEngine:
    """The whole core in one object: readings in, meter windows + indicators + late readings out.

    >>> eng = KpiEngine(model, base_window_ms=60_000, grace_ms=120_000)
    >>> outputs = eng.ingest("m1", 1_700_000_000_000, 12.5)
    """

    def __init__(self, model: KpiModel, base_window_ms: int = 60_000, grace_ms: int = 120_000,
                 views: Iterable[View] = DEFAULT_VIEWS) -> None:
        self.model = model
        self.windows = WindowEngine(model, base_window_ms, grace_ms)
        self.kpis = KpiAggregator(model, base_window_ms, views)

    def _route(self, outs: list[WindowResult | LateReading]) -> list[Output]:
        res: list[Output] = list(outs)
        wins = [o for o in outs if isinstance(o, WindowResult)]
        if wins:
            res.extend(self.kpis.update(wins))
        return res

    def ingest(self, meter: str, ts_ms: int, value: float) -> list[Output]:
        return self._route(self.windows.ingest(meter, ts_ms, value))

    def ingest_many(self, readings: Iterable[tuple[str, int, float]]) -> list[Output]:
        wins: list[WindowResult | LateReading] = []
        for m, t, v in readings:
            wins.extend(self.windows.ingest(m, t, v))
        return self._route(wins)

    def advance(self, watermark_ms: int) -> list[Output]:
        return self._route(self.windows.advance(watermark_ms))

    @property
    def stats(self) -> dict[str, int]:
        return self.windows.stats.to_dict()

    def snapshot(self) -> dict[str, Any]:
        return {"windows": self.windows.snapshot(), "kpis": self.kpis.snapshot()}

    @classmethod
    def restore(cls, model: KpiModel, snap: dict[str, Any],
                views: Iterable[View] = DEFAULT_VIEWS) -> KpiEngine:
        w = snap["windows"]
        eng = cls(model, int(w["size_ms"]), int(w["grace_ms"]), views)
        eng.windows = WindowEngine.restore(model, w)
        k = snap["kpis"]
        eng.kpis.load(k["meta"], {int(s): d for s, d in k["windows"].items()})
        return eng
