"""Shared helpers of the indicator families: sums of meter quantities over a selection."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

from streams.core.model import KpiModel, MeterInfo


class Flow(Protocol):
    """What an indicator reads of a meter over a window or view (an Aggregate, or Sums)."""

    @property
    def quantity(self) -> float: ...

    @property
    def co2e_t(self) -> float: ...


Quantities = Mapping[str, Flow]  # meter id -> flow over the window or view
Pred = Callable[[MeterInfo], bool]


def members(model: KpiModel, pred: Pred, enterprise: str | None) -> tuple[str, ...]:
    """Meter ids matching `pred` (of `enterprise` or the park), memoised per model: the
    predicate's code and closure values are the key, so lambdas are fine."""
    cells = tuple(c.cell_contents for c in (pred.__closure__ or ()))
    key = (pred.__code__, cells, enterprise)
    hit = model.selection_cache.get(key)
    if hit is None:
        hit = tuple(m.id for m in model.meters.values()
                    if (enterprise is None or m.enterprise == enterprise) and pred(m))
        model.selection_cache[key] = hit
    return hit


def total(model: KpiModel, q: Quantities, pred: Pred, enterprise: str | None = None,
          attr: str = "quantity") -> float:
    """Sum of `attr` over the meters matching `pred` (of `enterprise`, or the whole park)."""
    s = 0.0
    for mid in members(model, pred, enterprise):
        f = q.get(mid)
        if f is not None:
            s += f.co2e_t if attr == "co2e_t" else f.quantity
    return s


def ratio(num: float, den: float) -> float | None:
    """num / den, None when the denominator is zero (no flow: the indicator is undefined)."""
    return None if den == 0 else num / den
