"""A hand-made four-enterprise park and one window of quantities for the KPI tests.

P power station, G plasterboard, R refinery, N pharma. Exchanges: gypsum P->G, steam P->N
(10 % loss), refinery gas R->P, cooling water R->P. Quantities are for one window, in t, MWh, m3.
By-products and waste not in an exchange have a fate (FATES): P's fly ash goes to recycling
outside the park, P's slag to landfill, G's waste and R's oily sludge to energy recovery (R1),
R's sulphur and N's sludge to recycling.
"""

from __future__ import annotations

from streams.core.aggregates import Aggregate
from streams.core.model import ExchangeInfo, Factor, KpiModel, MeterInfo

# (id, enterprise, carrier, direction, unit, origin, quantity)
METERS = [
    ("P.coal", "P", "coal", "input", "MWh", "virgin", 100.0),
    ("P.gas_in", "P", "fuel_gas", "input", "MWh", "partner", 20.0),
    ("P.elec", "P", "electricity", "input", "MWh", "grid", 5.0),
    ("P.groundwater", "P", "water", "input", "m3", "virgin", 1000.0),
    ("P.cw_in", "P", "water", "input", "m3", "partner", 390.0),
    ("P.gypsum", "P", "material", "output", "t", None, 30.0),
    ("P.flyash", "P", "material", "output", "t", None, 20.0),
    ("P.slag", "P", "material", "output", "t", None, 10.0),
    ("P.steam", "P", "steam", "output", "MWh", None, 50.0),
    ("G.gypsum_in", "G", "material", "input", "t", "partner", 28.0),
    ("G.gypsum_virgin", "G", "material", "input", "t", "virgin", 12.0),
    ("G.gas", "G", "fuel_gas", "input", "MWh", "virgin", 10.0),
    ("G.elec", "G", "electricity", "input", "MWh", "grid", 8.0),
    ("G.boards", "G", "product", "output", "t", None, 50.0),
    ("G.waste", "G", "material", "output", "t", None, 5.0),
    ("R.crude", "R", "material", "input", "t", "virgin", 500.0),
    ("R.elec", "R", "electricity", "input", "MWh", "grid", 20.0),
    ("R.products", "R", "product", "output", "t", None, 450.0),
    ("R.gas_out", "R", "fuel_gas", "output", "MWh", None, 20.0),
    ("R.sulphur", "R", "material", "output", "t", None, 4.0),
    ("R.oily_sludge", "R", "material", "output", "t", None, 6.0),
    ("R.cw_out", "R", "water", "output", "m3", None, 400.0),
    ("N.steam_in", "N", "steam", "input", "MWh", "partner", 45.0),
    ("N.water", "N", "water", "input", "m3", "virgin", 300.0),
    ("N.elec", "N", "electricity", "input", "MWh", "grid", 10.0),
    ("N.insulin", "N", "product", "output", "t", None, 2.0),
    ("N.sludge", "N", "material", "output", "t", None, 100.0),
]

# where by-products and waste go (outputs only; Waste Framework Directive operation)
FATES = {
    "P.flyash": "recycling",         # R5, cement works outside the park
    "P.slag": "disposal",            # D1, landfill
    "G.waste": "energy_recovery",    # R1, waste-to-energy plant
    "R.sulphur": "recycling",        # R5
    "R.oily_sludge": "energy_recovery",  # R1
    "N.sludge": "recycling",         # R10, land treatment
}

EXCHANGES = [
    ExchangeInfo("X_gyp", "material", "t", ("P.gypsum",), ("G.gypsum_in",), 0.0, "gypsum",
                 baseline_t_per_unit=0.01, allocated_t_per_unit=0.002),
    ExchangeInfo("X_steam", "steam", "MWh", ("P.steam",), ("N.steam_in",), 0.1,
                 baseline_t_per_unit=0.202 / 0.9, allocated_t_per_unit=0.05),
    ExchangeInfo("X_gas", "fuel_gas", "MWh", ("R.gas_out",), ("P.gas_in",), 0.0),
    ExchangeInfo("X_water", "water", "m3", ("R.cw_out",), ("P.cw_in",), 0.0),
]

FACTORS = {
    "coal": Factor("coal", 0.341, "MWh"),
    "fuel_gas": Factor("fuel_gas", 0.202, "MWh"),
    "fuel_oil": Factor("fuel_oil", 0.266, "MWh"),
    "electricity": Factor("electricity", 0.2, "MWh"),
}


def model(rel_tolerance: float = 0.05) -> KpiModel:
    roles = {}
    for x in EXCHANGES:
        roles.update({s: (x.id, "supplier") for s in x.suppliers})
        roles.update({c: (x.id, "consumer") for c in x.consumers})
    meters = {}
    for mid, ent, carrier, direction, unit, origin, _q in METERS:
        xid, role = roles.get(mid, (None, None))
        meters[mid] = MeterInfo(mid, ent, carrier, direction, "counter", unit, origin=origin,
                                exchange=xid, exchange_role=role, fate=FATES.get(mid))
    return KpiModel("testpark", ("P", "G", "R", "N"), meters, tuple(EXCHANGES), FACTORS,
                    mass_balance_rel_tolerance=rel_tolerance)


def quantities(m: KpiModel, ts_ms: int = 0) -> dict[str, Aggregate]:
    """One window's aggregates, with emissions attributed the way the window engine does."""
    out = {}
    for mid, *_rest, q in METERS:
        agg = Aggregate.of(ts_ms, q, q)
        out[mid] = agg.with_co2e(m.co2e_t(m.meters[mid], q, ts_ms))
    return out
