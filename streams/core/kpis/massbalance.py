"""Mass balance of an exchange: what the suppliers sent against what the consumers received.

expected_inflow = outflow x (1 - loss_fraction); imbalance = expected_inflow - inflow
(positive: material missing at the consumers); out_of_tolerance when
|imbalance| > rel_tolerance x outflow + abs_tolerance. Evaluate it on a view at least as long
as the exchange's buffer (storage between supplier and consumer shifts flows in time).
"""

from __future__ import annotations

from streams.core.kpis.base import Quantities
from streams.core.model import ExchangeInfo, KpiModel


def compute(model: KpiModel, q: Quantities, x: ExchangeInfo) -> dict[str, float | bool | None]:
    out = sum(q[s].quantity for s in x.suppliers if s in q)
    inn = sum(q[c].quantity for c in x.consumers if c in q)
    expected = out * (1.0 - x.loss_fraction)
    imbalance = expected - inn
    tol = model.mass_balance_rel_tolerance * out + model.mass_balance_abs_tolerance
    return {
        "outflow": out,
        "inflow": inn,
        "allowed_loss": out * x.loss_fraction,
        "imbalance": imbalance,
        "relative_imbalance": None if out == 0 else imbalance / out,
        "out_of_tolerance": abs(imbalance) > tol,
    }
