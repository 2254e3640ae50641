"""Carbon indicators (GHG Protocol; definitions in docs/kpis.md).

- scope1_t_co2e = fuel burnt x the park's factor for that fuel (at the window's start) plus
  measured CO2 emission meters
- scope2_t_co2e = grid electricity / heat / steam (origin "grid") x the park's grid factor
  (location-based). Energy received from a partner is the partner's scope 1, not counted again.
- carbon_intensity_t_co2e_per_t = (scope 1 + scope 2) / product output (t)
- avoided_t_co2e of an exchange = delivered quantity (consumer inflow) x (configured baseline
  factor - factor allocated to the exchanged flow); enterprise: exchanges it receives; park: all
"""

from __future__ import annotations

from streams.core.kpis.base import Quantities, ratio, total
from streams.core.kpis.energy import product_output
from streams.core.model import ExchangeInfo, KpiModel


def scope_total(model: KpiModel, q: Quantities, scope: str, ent: str | None) -> float:
    return total(model, q, lambda m: KpiModel.scope_of(m) == scope, ent, attr="co2e_t")


def delivered(q: Quantities, x: ExchangeInfo) -> float:
    return sum(q[c].quantity for c in x.consumers if c in q)


def avoided(q: Quantities, x: ExchangeInfo) -> float | None:
    if x.baseline_t_per_unit is None:
        return None
    return delivered(q, x) * (x.baseline_t_per_unit - x.allocated_t_per_unit)


def compute(model: KpiModel, q: Quantities, ent: str | None) -> dict[str, float | None]:
    s1 = scope_total(model, q, "scope1", ent)
    s2 = scope_total(model, q, "scope2", ent)
    products = total(model, q, product_output, ent)
    av = 0.0
    for x in model.exchanges:
        if ent is not None and not any(model.meters[c].enterprise == ent for c in x.consumers):
            continue
        a = avoided(q, x)
        if a is not None:
            av += a
    return {
        "scope1_t_co2e": s1,
        "scope2_t_co2e": s2,
        "carbon_intensity_t_co2e_per_t": ratio(s1 + s2, products),
        "avoided_t_co2e": av,
    }


def exchange_compute(model: KpiModel, q: Quantities, x: ExchangeInfo) -> dict[str, float | None]:
    return {"avoided_t_co2e": avoided(q, x)}
