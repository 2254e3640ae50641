"""Mergeable window aggregates: `a.merge(b)` equals aggregating both inputs in one pass.

A window's aggregate is built from *contributions*: one per reading, carrying the quantity the
interval ending at that reading adds (a counter delta or an integrated rate) and the raw value.
Merging is associative and commutative, so rolling views are merges of base windows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Aggregate:
    count: int = 0  # readings that fell in the window
    quantity: float = 0.0  # canonical quantity (MWh, t, m3) attributed to the window
    co2e_t: float = 0.0  # emissions attributed to `quantity` (0 for non-emitting meters)
    vmin: float = math.inf  # smallest raw value (counter register or rate)
    vmax: float = -math.inf
    first_ts_ms: int | None = None
    last_ts_ms: int | None = None
    resets: int = 0  # counter resets / roll-overs inside the window
    gaps: int = 0  # rate intervals not integrated because longer than the meter's max gap

    @classmethod
    def of(cls, ts_ms: int, value: float, quantity: float, *, reset: bool = False,
           gap: bool = False, co2e_t: float = 0.0) -> Aggregate:
        return cls(count=1, quantity=quantity, co2e_t=co2e_t, vmin=value, vmax=value,
                   first_ts_ms=ts_ms, last_ts_ms=ts_ms, resets=int(reset), gaps=int(gap))

    def merge(self, other: Aggregate) -> Aggregate:
        if other.count == 0:
            return self
        if self.count == 0:
            return other
        return Aggregate(
            count=self.count + other.count,
            quantity=self.quantity + other.quantity,
            co2e_t=self.co2e_t + other.co2e_t,
            vmin=min(self.vmin, other.vmin),
            vmax=max(self.vmax, other.vmax),
            first_ts_ms=min(_nn(self.first_ts_ms), _nn(other.first_ts_ms)),
            last_ts_ms=max(_nn(self.last_ts_ms), _nn(other.last_ts_ms)),
            resets=self.resets + other.resets,
            gaps=self.gaps + other.gaps,
        )

    def with_co2e(self, co2e_t: float) -> Aggregate:
        return Aggregate(self.count, self.quantity, co2e_t, self.vmin, self.vmax,
                         self.first_ts_ms, self.last_ts_ms, self.resets, self.gaps)

    def to_dict(self) -> dict[str, Any]:
        return {"count": self.count, "quantity": self.quantity, "co2e_t": self.co2e_t,
                "vmin": self.vmin if self.count else None,
                "vmax": self.vmax if self.count else None,
                "first_ts_ms": self.first_ts_ms, "last_ts_ms": self.last_ts_ms,
                "resets": self.resets, "gaps": self.gaps}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Aggregate:
        if not d.get("count"):
            return cls()
        return cls(count=int(d["count"]), quantity=float(d["quantity"]),
                   co2e_t=float(d.get("co2e_t", 0.0)), vmin=float(d["vmin"]),
                   vmax=float(d["vmax"]), first_ts_ms=d["first_ts_ms"],
                   last_ts_ms=d["last_ts_ms"], resets=int(d["resets"]), gaps=int(d["gaps"]))


def _nn(x: int | None) -> int:
    assert x is not None
    return x


def merge_all(aggs: list[Aggregate]) -> Aggregate:
    out = Aggregate()
    for a in aggs:
        out = out.merge(a)
    return out
