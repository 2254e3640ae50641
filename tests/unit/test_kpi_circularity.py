"""Circularity indicators on hand-made parks; every expected value is worked out by hand below.

Fixture park (streams_test_park): by-products and waste (outputs of material/biomass in t) of one
window, with where each goes:

    P  gypsum 30 (exchange X_gyp -> G), fly ash 20 (recycling), slag 10 (disposal)   = 60
    G  waste 5 (energy recovery)                                                      =  5
    R  sulphur 4 (recycling), oily sludge 6 (energy recovery)                         = 10
    N  sludge 100 (recycling)                                                         = 100
    park                                                                              = 175
"""

import dataclasses

import pytest
import yaml
from streams_test_park import EXCHANGES, FACTORS, model, quantities

from parkmon.errors import ConfigError
from parkmon.park import build_park
from streams.core import KpiEngine, KpiModel, KpiResult
from streams.core.kpis import circularity
from streams.core.model import MeterInfo

pytestmark = pytest.mark.unit

M = model()
Q = quantities(M)


@pytest.mark.parametrize("ent, expected", [
    ("P", None),                # no material input at the power station
    ("G", 28 / (28 + 12)),      # partner gypsum over all gypsum
    ("R", 0.0),                 # only virgin crude
    ("N", None),
    (None, 28 / (28 + 12 + 500)),
])
def test_material_circularity_ratio(ent, expected):
    assert circularity.material_circularity_ratio(M, Q, ent) == pytest.approx(expected)


@pytest.mark.parametrize("ent, expected", [
    ("P", (30 + 20) / 60),      # gypsum to a partner + fly ash recycled; slag landfilled
    ("G", 0 / 5),               # its waste is burnt for energy (R1): not valorisation
    ("R", 4 / 10),              # sulphur recycled; oily sludge to energy recovery
    ("N", 100 / 100),           # sludge to land treatment (R10)
    (None, (30 + 20 + 4 + 100) / 175),
])
def test_waste_valorisation_rate(ent, expected):
    assert circularity.waste_valorisation_rate(M, Q, ent) == pytest.approx(expected)


@pytest.mark.parametrize("ent, expected", [
    ("P", 0 / 60),
    ("G", 5 / 5),
    ("R", 6 / 10),
    ("N", 0 / 100),
    (None, (5 + 6) / 175),
])
def test_energy_recovery_rate(ent, expected):
    assert circularity.energy_recovery_rate(M, Q, ent) == pytest.approx(expected)


def test_valorised_energy_recovered_and_the_rest_partition_the_waste():
    """Each tonne is counted at most once: 154 valorised + 11 to R1 + 10 slag (D1) = 175."""
    v = circularity.waste_valorisation_rate(M, Q, None)
    e = circularity.energy_recovery_rate(M, Q, None)
    assert v is not None and e is not None
    assert v + e + 10 / 175 == pytest.approx(1.0)


def test_an_exchange_supplier_that_also_says_recycling_counts_once():
    meters = dict(M.meters)
    meters["P.gypsum"] = dataclasses.replace(meters["P.gypsum"], fate="recycling")
    m2 = KpiModel("testpark", M.enterprises, meters, tuple(EXCHANGES), FACTORS)
    assert circularity.waste_valorisation_rate(m2, Q, "P") == pytest.approx(50 / 60)
    assert circularity.symbiotic_exchange_share(m2, Q, "P") == pytest.approx(30 / 60)


def test_waste_without_a_fate_is_not_valorised():
    """The slag (disposal) and a meter without a fate count alike: in the denominator only."""
    meters = dict(M.meters)
    meters["P.slag"] = dataclasses.replace(meters["P.slag"], fate=None)
    m2 = KpiModel("testpark", M.enterprises, meters, tuple(EXCHANGES), FACTORS)
    assert circularity.waste_valorisation_rate(m2, Q, "P") == pytest.approx(50 / 60)
    assert circularity.energy_recovery_rate(m2, Q, "P") == 0.0


@pytest.mark.parametrize("ent, expected", [
    ("P", 30 / 60), ("G", 0.0), ("R", 0.0), ("N", 0.0), (None, 30 / 175),
])
def test_symbiotic_exchange_share(ent, expected):
    assert circularity.symbiotic_exchange_share(M, Q, ent) == pytest.approx(expected)


@pytest.mark.parametrize("ent, expected", [
    ("P", 390 / (1000 + 390)), ("G", None), ("R", None), ("N", 0.0),
    (None, 390 / (1000 + 390 + 300)),
])
def test_water_reuse_rate(ent, expected):
    assert circularity.water_reuse_rate(M, Q, ent) == pytest.approx(expected)


def test_undefined_when_nothing_flows():
    assert circularity.material_circularity_ratio(M, {}, None) is None
    assert circularity.waste_valorisation_rate(M, {}, None) is None
    assert circularity.energy_recovery_rate(M, {}, None) is None


def test_compute_lists_energy_recovery_rate_next_to_valorisation():
    vals = circularity.compute(M, Q, "R")
    assert vals["waste_valorisation_rate"] == pytest.approx(0.4)
    assert vals["energy_recovery_rate"] == pytest.approx(0.6)


@pytest.mark.parametrize("kwargs, message", [
    (dict(carrier="material", direction="input", origin="virgin", fate="recycling"),
     "meter 'x.m': fate 'recycling' on a material input meter; only outputs of biomass or "
     "material have a fate"),
    (dict(carrier="heat", direction="output", fate="energy_recovery"),
     "meter 'x.m': fate 'energy_recovery' on a heat output meter; only outputs of biomass or "
     "material have a fate"),
    (dict(carrier="material", direction="output", fate="landfill"),
     "meter 'x.m': unknown fate 'landfill'; expected one of disposal, energy_recovery, recycling"),
    (dict(carrier="material", direction="output", origin="secondary"),
     "meter 'x.m': origin 'secondary' on an output meter; only inputs have an origin (an "
     "output's destination is its fate)"),
])
def test_hand_built_meter_mixing_up_origin_and_fate_is_refused(kwargs, message):
    """The core used to read origin 'secondary' on outputs as 'recycled'; that is now `fate`, and
    an old-style MeterInfo fails loudly instead of silently dropping out of the numerator."""
    with pytest.raises(ConfigError) as info:
        MeterInfo("x.m", "x", kind="counter", quantity_unit="t", **kwargs)
    assert str(info.value) == message


# --------------------------------------------------------------------------------------------
# the same indicators from a park file, through the loader, KpiModel.from_park and the engine

PARK_YAML = """
park: {id: mini3, name: Three enterprises}
enterprises:
  - {id: mill, name: Paper mill, sector: paper}
  - {id: boards, name: Board maker, sector: building}
  - {id: lab, name: Laboratory, sector: research}
meters:
  - {id: mill.sludge_out, enterprise: mill, carrier: material, material: paper_sludge,
     direction: output, fate: energy_recovery, kind: counter, unit: t, capacity: 10 t/h}
  - {id: mill.fibre_out, enterprise: mill, carrier: material, material: fibre_rejects,
     direction: output, fate: recycling, kind: counter, unit: t, capacity: 10 t/h}
  - {id: mill.ash_out, enterprise: mill, carrier: material, material: ash,
     direction: output, fate: disposal, kind: counter, unit: t, capacity: 10 t/h}
  - {id: mill.plastic_out, enterprise: mill, carrier: material, material: plastic_rejects,
     direction: output, kind: counter, unit: t, capacity: 10 t/h}
  - {id: boards.fibre_in, enterprise: boards, carrier: material, material: fibre_rejects,
     direction: input, origin: partner, kind: counter, unit: t, capacity: 10 t/h}
  - {id: boards.offcuts_out, enterprise: boards, carrier: biomass, material: wood_offcuts,
     direction: output, fate: energy_recovery, kind: counter, unit: t, capacity: 10 t/h}
  - {id: boards.scrap_out, enterprise: boards, carrier: material, material: steel_scrap,
     direction: output, fate: recycling, kind: counter, unit: t, capacity: 10 t/h}
  - {id: lab.power_in, enterprise: lab, carrier: electricity, direction: input, origin: grid,
     kind: counter, unit: MWh, capacity: 1 MW}
exchanges:
  - {id: fibre, carrier: material, material: fibre_rejects, suppliers: [mill.fibre_out],
     consumers: [boards.fibre_in], nominal_rate: 8 t/h}
emission_factors:
  electricity: {value: 281, unit: g/kWh, source: "EEA EU-27 2018"}
"""

# tonnes in the window: by-products and waste, and where they go
#   mill:   sludge 12 (R1), fibre 8 (to boards, also says recycling), ash 3 (D1), plastic 2 (none)
#   boards: offcuts 5 (R1), scrap 1 (recycling)
#   lab:    no by-products or waste
WINDOW_T = {"mill.sludge_out": 12.0, "mill.fibre_out": 8.0, "mill.ash_out": 3.0,
            "mill.plastic_out": 2.0, "boards.fibre_in": 8.0, "boards.offcuts_out": 5.0,
            "boards.scrap_out": 1.0, "lab.power_in": 0.5}


def test_park_file_fates_drive_the_engine_indicators():
    park = build_park(yaml.safe_load(PARK_YAML))
    assert park.meter("mill.sludge_out").fate == "energy_recovery"
    assert park.meter("mill.plastic_out").fate is None
    km = KpiModel.from_park(park)
    assert km.meters["boards.offcuts_out"].fate == "energy_recovery"
    eng = KpiEngine(km, 60_000, 0)
    t0 = 1_790_000_040_000 - 1_790_000_040_000 % 60_000
    # counters: a reading at the window start anchors, the next one carries the quantity
    readings = [(mid, t0, 100.0) for mid in WINDOW_T] + \
        [(mid, t0 + 30_000, 100.0 + q) for mid, q in WINDOW_T.items()]
    outs = eng.ingest_many(readings) + eng.advance(t0 + 120_000)
    got = {(o.scope, o.entity): o.values for o in outs
           if isinstance(o, KpiResult) and o.view == "1m" and o.window_start_ms == t0}
    mill, boards, lab, whole = (got[("enterprise", "mill")], got[("enterprise", "boards")],
                                got[("enterprise", "lab")], got[("park", "mini3")])
    # mill: 12 + 8 + 3 + 2 = 25 t; valorised: fibre 8 (once, though it is both); R1: sludge 12
    assert mill["waste_valorisation_rate"] == pytest.approx(8 / 25)
    assert mill["energy_recovery_rate"] == pytest.approx(12 / 25)
    assert mill["symbiotic_exchange_share"] == pytest.approx(8 / 25)
    # boards: 5 + 1 = 6 t; valorised: scrap 1; R1: offcuts 5
    assert boards["waste_valorisation_rate"] == pytest.approx(1 / 6)
    assert boards["energy_recovery_rate"] == pytest.approx(5 / 6)
    # lab: no waste, both undefined (absent from the written point, None here)
    assert lab["waste_valorisation_rate"] is None and lab["energy_recovery_rate"] is None
    # park: 25 + 6 = 31 t; valorised 8 + 1; R1 12 + 5
    assert whole["waste_valorisation_rate"] == pytest.approx(9 / 31)
    assert whole["energy_recovery_rate"] == pytest.approx(17 / 31)
    assert whole["symbiotic_exchange_share"] == pytest.approx(8 / 31)


def test_core_fates_and_waste_carriers_mirror_the_park_model():
    from parkmon.park import model as park_model
    from streams.core import model as core_model

    assert core_model.FATES == set(park_model.FATES)
    assert core_model.WASTE_CARRIERS == set(park_model.WASTE_CARRIERS)
