"""Energy indicators (definitions in docs/kpis.md).

- energy_input_mwh = all energy carriers received (electricity, heat, steam, fuels), in MWh
- energy_intensity_mwh_per_t = energy_input_mwh / product output (t)
- recovered_energy_share = energy received from partners or recovered on site (origin "partner"
  or "secondary") / energy_input_mwh
"""

from __future__ import annotations

from streams.core.kpis.base import Quantities, ratio, total
from streams.core.model import ENERGY_CARRIERS, SECONDARY_ORIGINS, KpiModel, MeterInfo


def energy_input(m: MeterInfo) -> bool:
    return m.direction == "input" and m.carrier in ENERGY_CARRIERS and m.quantity_unit == "MWh"


def product_output(m: MeterInfo) -> bool:
    return m.direction == "output" and m.carrier == "product" and m.quantity_unit == "t"


def compute(model: KpiModel, q: Quantities, ent: str | None) -> dict[str, float | None]:
    e_in = total(model, q, energy_input, ent)
    recovered = total(model, q, lambda m: energy_input(m) and m.origin in SECONDARY_ORIGINS, ent)
    products = total(model, q, product_output, ent)
    return {
        "energy_input_mwh": e_in,
        "product_output_t": products,
        "energy_intensity_mwh_per_t": ratio(e_in, products),
        "recovered_energy_share": ratio(recovered, e_in),
    }
