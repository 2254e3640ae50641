"""Circularity indicators (mass or volume over the window; definitions in docs/kpis.md).

- material_circularity_ratio = secondary material input / total material input   [t / t]
  (secondary: meter origin "secondary" or "partner"; park analogue of Eurostat's CMR = U/(DMC+U))
- waste_valorisation_rate = by-products and waste sent to a partner or to recycling /
  all by-products and waste generated                                              [t / t]
  (by-products and waste: outputs of carrier material or biomass in t; one is valorised when
  it supplies an intra-park exchange or has fate "recycling", i.e. reuse or R2-R11 outside the
  park; energy recovery (R1) is not valorisation here, it has its own indicator)
- energy_recovery_rate = by-products and waste with fate "energy_recovery" (R1) /
  all by-products and waste generated                                              [t / t]
- symbiotic_exchange_share = by-products and waste delivered through intra-park exchanges /
  all by-products and waste generated                                              [t / t]
- water_reuse_rate = reused, cascaded or partner water input / total water input  [m3 / m3]
"""

from __future__ import annotations

from streams.core.kpis.base import Quantities, ratio, total
from streams.core.model import SECONDARY_ORIGINS, WASTE_CARRIERS, KpiModel, MeterInfo


def _material_input(m: MeterInfo) -> bool:
    return m.direction == "input" and m.carrier == "material" and m.quantity_unit == "t"


def _waste_output(m: MeterInfo) -> bool:
    """By-products and waste by mass: material and biomass outputs in t (not products)."""
    return m.direction == "output" and m.carrier in WASTE_CARRIERS and m.quantity_unit == "t"


def _valorised(m: MeterInfo) -> bool:
    """Sent to a partner (supplies an exchange) or to reuse / recycling (R2-R11) outside."""
    return _waste_output(m) and (m.exchange_role == "supplier" or m.fate == "recycling")


def _energy_recovered(m: MeterInfo) -> bool:
    """Sent to energy recovery (R1) outside the park's exchanges."""
    return _waste_output(m) and m.fate == "energy_recovery"


def _water_input(m: MeterInfo) -> bool:
    return m.direction == "input" and m.carrier == "water"


def material_circularity_ratio(model: KpiModel, q: Quantities, ent: str | None) -> float | None:
    den = total(model, q, _material_input, ent)
    num = total(model, q, lambda m: _material_input(m) and m.origin in SECONDARY_ORIGINS, ent)
    return ratio(num, den)


def waste_valorisation_rate(model: KpiModel, q: Quantities, ent: str | None) -> float | None:
    den = total(model, q, _waste_output, ent)
    num = total(model, q, _valorised, ent)
    return ratio(num, den)


def energy_recovery_rate(model: KpiModel, q: Quantities, ent: str | None) -> float | None:
    den = total(model, q, _waste_output, ent)
    num = total(model, q, _energy_recovered, ent)
    return ratio(num, den)


def symbiotic_exchange_share(model: KpiModel, q: Quantities, ent: str | None) -> float | None:
    den = total(model, q, _waste_output, ent)
    num = total(model, q, lambda m: _waste_output(m) and m.exchange_role == "supplier", ent)
    return ratio(num, den)


def water_reuse_rate(model: KpiModel, q: Quantities, ent: str | None) -> float | None:
    den = total(model, q, _water_input, ent)
    num = total(model, q, lambda m: _water_input(m) and m.origin in SECONDARY_ORIGINS, ent)
    return ratio(num, den)


def compute(model: KpiModel, q: Quantities, ent: str | None) -> dict[str, float | None]:
    return {
        "material_circularity_ratio": material_circularity_ratio(model, q, ent),
        "waste_valorisation_rate": waste_valorisation_rate(model, q, ent),
        "energy_recovery_rate": energy_recovery_rate(model, q, ent),
        "symbiotic_exchange_share": symbiotic_exchange_share(model, q, ent),
        "water_reuse_rate": water_reuse_rate(model, q, ent),
    }
