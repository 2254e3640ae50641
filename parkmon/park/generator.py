"""Synthetic parks of N enterprises and M meters with a plausible exchange network (scale tests).

    park = generate_park(500, 10_000, seed=1)        # a validated Park
    data = generate_park_data(500, 10_000, seed=1)   # the same as a park-file mapping (YAML-able)

Every enterprise has a base set of meters (grid electricity in, water in, product out, CO2
emission). Exchanges connect a by-product output of a supplier to input meters (origin partner) of
one to three consumers; suppliers are chosen with preferential attachment, so a few hub
enterprises (power stations, refineries, utilities) supply many partners, as in real parks. Units
are mixed on purpose (kWh/MWh/GJ, t/kg, m3) so that consumers of the data must normalise.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from parkmon.park.loader import build_park
from parkmon.park.model import Park

# sector -> by-products it can supply: (carrier, material, quantity unit, typical rate per hour)
SECTORS: dict[str, list[tuple[str, str | None, str, float]]] = {
    "power": [("steam", None, "t", 25.0), ("heat", None, "MWh", 10.0),
              ("material", "gypsum", "t", 20.0), ("material", "fly_ash", "t", 18.0)],
    "refining": [("fuel_gas", None, "GJ", 15.0), ("material", "sulphur", "t", 0.5),
                 ("water", None, "m3", 80.0)],
    "chemicals": [("heat", None, "MWh", 4.0), ("wastewater", None, "m3", 120.0),
                  ("co2", None, "t", 5.0)],
    "food": [("biomass", "organic_residue", "t", 12.0), ("wastewater", None, "m3", 60.0)],
    "pharma": [("biomass", "process_residue", "t", 15.0), ("wastewater", None, "m3", 300.0)],
    "utility": [("heat", None, "MWh", 8.0), ("water", None, "m3", 200.0)],
    "building_materials": [("material", "dust", "t", 2.0)],
    "metal": [("heat", None, "MWh", 6.0), ("material", "slag", "t", 10.0)],
    "agriculture": [("biomass", "straw", "t", 5.0)],
}
SECTOR_WEIGHTS = {"power": 0.03, "refining": 0.03, "chemicals": 0.15, "food": 0.15, "pharma": 0.08,
                  "utility": 0.04, "building_materials": 0.17, "metal": 0.15, "agriculture": 0.2}
HUB_SECTORS = ("power", "refining", "utility")
UNIT_VARIANTS = {"MWh": ["MWh", "kWh", "GJ"], "t": ["t", "kg"], "m3": ["m3"], "GJ": ["GJ", "MWh"]}
_PERIODS = [10, 60, 60, 60, 300]


def generate_park_data(n_enterprises: int, n_meters: int, seed: int = 0,
                       park_id: str | None = None, enterprise_prefix: str = "e") -> dict[str, Any]:
    """A park-file mapping with exactly n_meters meters (n_meters >= 4 * n_enterprises).
    Enterprise ids are `<enterprise_prefix><4 digits>`."""
    if n_enterprises < 2:
        raise ValueError("a park needs at least 2 enterprises")
    if n_meters < 4 * n_enterprises:
        raise ValueError(f"need at least 4 meters per enterprise ({4 * n_enterprises} for "
                         f"{n_enterprises} enterprises), got {n_meters}")
    rng = np.random.default_rng(seed)
    sectors = list(SECTOR_WEIGHTS)
    probs = np.array([SECTOR_WEIGHTS[s] for s in sectors])
    ent_sector = [sectors[int(i)] for i in rng.choice(len(sectors), n_enterprises, p=probs / probs.sum())]
    ent_sector[0] = "power"  # there is always at least one hub
    ents = [f"{enterprise_prefix}{i:04d}" for i in range(n_enterprises)]
    enterprises = [{"id": e, "name": f"{s.replace('_', ' ').title()} {i}", "sector": s}
                   for i, (e, s) in enumerate(zip(ents, ent_sector, strict=True))]
    meters: list[dict[str, Any]] = []
    counter: dict[str, int] = {}

    def add_meter(ent: str, name: str, **kw: Any) -> str:
        k = counter.get(ent, 0)
        counter[ent] = k + 1
        mid = f"{ent}.{name}_{k}"
        meters.append({"id": mid, "enterprise": ent, **kw})
        return mid

    def unit_for(q: str) -> str:
        variants = UNIT_VARIANTS[q]
        return variants[int(rng.integers(len(variants)))]

    def meter_kw(carrier: str, material: str | None, q: str, rate: float, direction: str,
                 origin: str | None) -> dict[str, Any]:
        kind = "counter" if rng.random() < 0.7 else "rate"
        canon = {"GJ": "MWh"}.get(q, q)
        cap = rate * float(rng.uniform(1.6, 2.5))
        kw: dict[str, Any] = {"carrier": carrier, "direction": direction,
                              "period_s": _PERIODS[int(rng.integers(len(_PERIODS)))]}
        if material:
            kw["material"] = material
        if origin:
            kw["origin"] = origin
        if kind == "counter":
            kw.update(kind="counter", unit=unit_for(q), capacity=f"{cap:.4g} {canon}/h")
        else:
            unit = {"MWh": "MW", "t": "t/h", "m3": "m3/h", "GJ": "MW"}[q]
            kw.update(kind="rate", unit=unit, range=[0, round(cap, 4)])
        kw["nominal"] = f"{rate:.4g} {canon}/h"
        return kw

    # base meters
    for ent, sector in zip(ents, ent_sector, strict=True):
        size = float(rng.lognormal(0.0, 0.8))
        add_meter(ent, "power_in", **meter_kw("electricity", None, "MWh", 3.0 * size, "input", "grid"))
        add_meter(ent, "water_in", **meter_kw("water", None, "m3", 40.0 * size, "input", "virgin"))
        add_meter(ent, "product_out", **meter_kw("product", sector, "t", 10.0 * size, "output", None))
        meters[-1]["profile"] = "shifts" if sector in ("building_materials", "metal", "food") else "continuous"
        add_meter(ent, "co2", **meter_kw("co2", None, "t", 2.0 * size, "emission", None))

    # exchanges with preferential attachment on suppliers
    weight = np.array([20.0 if s in HUB_SECTORS else 1.0 for s in ent_sector])
    exchanges: list[dict[str, Any]] = []
    remaining = n_meters - len(meters)
    while remaining >= 2:
        i = int(rng.choice(n_enterprises, p=weight / weight.sum()))
        weight[i] += 1.0
        ent, sector = ents[i], ent_sector[i]
        options = SECTORS[sector]
        carrier, material, q, typical = options[int(rng.integers(len(options)))]
        if carrier == "co2":
            carrier, material = "material", "captured_co2"
        n_cons = int(min(remaining - 1, rng.choice([1, 1, 1, 2, 2, 3])))
        others = [j for j in rng.choice(n_enterprises, size=min(n_enterprises, n_cons + 3), replace=False)
                  if j != i][:n_cons]
        if not others:
            continue
        rate = typical * float(rng.lognormal(0.0, 0.5))
        x_id = f"x{len(exchanges):05d}"
        label = material or carrier
        sup = add_meter(ent, f"{label}_out", **meter_kw(carrier, material, q, rate, "output", None))
        cons = [add_meter(ents[int(j)], f"{label}_in",
                          **meter_kw(carrier, material, q, rate / len(others), "input", "partner"))
                for j in others]
        canon = {"GJ": "MWh"}.get(q, q)
        exchanges.append({
            "id": x_id, "carrier": carrier, **({"material": material} if material else {}),
            "suppliers": [sup], "consumers": cons, "nominal_rate": f"{rate:.4g} {canon}/h",
            "loss_fraction": round(float(rng.choice([0.0, 0.01, 0.02, 0.05, 0.1])), 3),
            "buffer_h": float(rng.choice([0, 2, 6, 24, 72])),
            "criticality": str(rng.choice(["low", "medium", "medium", "high", "critical"])),
        })
        remaining = n_meters - len(meters)
    while len(meters) < n_meters:  # fill up with sub-meters of electricity
        ent = ents[int(rng.integers(n_enterprises))]
        add_meter(ent, "power_sub_in", **meter_kw("electricity", None, "MWh", 0.5, "input", "grid"))

    return {
        "park": {"id": park_id or f"synthetic{n_enterprises}x{n_meters}", "name":
                 f"Synthetic park ({n_enterprises} enterprises, {n_meters} meters, seed {seed})",
                 "timezone": "Europe/Copenhagen"},
        "enterprises": enterprises,
        "meters": meters,
        "exchanges": exchanges,
        "emission_factors": {
            "electricity": {"value": 281, "unit": "g/kWh", "scope": "scope2",
                            "source": "EEA, EU-27 grid electricity 2018"},
            "fuel_gas": {"value": 56.1, "unit": "t/TJ", "scope": "scope1",
                         "source": "IPCC 2006 Guidelines, Vol. 2 (natural gas)"},
            "biomass": {"value": 0, "unit": "t/t", "scope": "scope1",
                        "source": "IPCC 2006 Guidelines: biogenic CO2 reported as a memo item"},
        },
        "products": [{"meter": m["id"]} for m in meters if m["id"].split(".")[1].startswith("product_out")],
    }


def generate_park(n_enterprises: int, n_meters: int, seed: int = 0, park_id: str | None = None,
                  enterprise_prefix: str = "e") -> Park:
    """A validated synthetic Park (see generate_park_data)."""
    data = generate_park_data(n_enterprises, n_meters, seed=seed, park_id=park_id,
                              enterprise_prefix=enterprise_prefix)
    return build_park(data, source=f"<synthetic {n_enterprises}x{n_meters} seed {seed}>")
