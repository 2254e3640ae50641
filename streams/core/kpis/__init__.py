"""Indicator families, one file each: circularity, energy, carbon, mass balance.

`compute_all(model, q, ts_ms)` returns every indicator for the park, each enterprise and each
exchange from the meter aggregates `q` of one window or view (benefit credits too, when the park
declares benefit sharing: benefit.py).
"""

from __future__ import annotations

from streams.core.kpis import benefit, carbon, circularity, energy, massbalance
from streams.core.kpis.base import Quantities
from streams.core.model import KpiModel

Values = dict[str, float | bool | None]


def compute_all(model: KpiModel, q: Quantities) -> list[tuple[str, str, Values]]:
    """[(scope, entity id, {indicator: value})] with scope "park" | "enterprise" | "exchange"."""
    out: list[tuple[str, str, Values]] = []
    b_park, b_ents, b_x = benefit.compute(model, q)
    for scope, ent, key in [("park", model.park_id, None)] + [
        ("enterprise", e, e) for e in model.enterprises
    ]:
        vals: Values = {}
        vals.update(circularity.compute(model, q, key))
        vals.update(energy.compute(model, q, key))
        vals.update(carbon.compute(model, q, key))
        vals.update(b_park if key is None else b_ents.get(key, {}))
        out.append((scope, ent, vals))
    for x in model.exchanges:
        xv: Values = {}
        xv.update(massbalance.compute(model, q, x))
        xv.update(carbon.exchange_compute(model, q, x))
        xv.update(b_x.get(x.id, {}))
        out.append(("exchange", x.id, xv))
    return out
