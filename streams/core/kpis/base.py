"""Shared helpers of the indicator families: sums of meter quantities over a selection."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from streams.core.aggregates import Aggregate
from streams.core.model import KpiModel, MeterInfo

Quantities = Mapping[str, Aggregate]  # meter id -> aggregate over the window or view
Pred = Callable[[MeterInfo], bool]


def total(model: KpiModel, q: Quantities, pred: Pred, enterprise: str | None = None,
          attr: str = "quantity") -> float:
    """Sum of `attr` over the meters matching `pred` (of `enterprise`, or the whole park)."""
    s = 0.0
    for mid, agg in q.items():
        m = model.meters.get(mid)
        if m is None or (enterprise is not None and m.enterprise != enterprise):
            continue
        if pred(m):
            s += float(getattr(agg, attr))
    return s


def ratio(num: float, den: float) -> float | None:
    """num / den, None when the denominator is zero (no flow: the indicator is undefined)."""
    return None if den == 0 else num / den
