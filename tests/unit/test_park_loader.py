"""Park files: valid ones load with canonical units, invalid ones give exact actionable lines."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from parkmon.errors import ParkFileError
from parkmon.park import build_park, example_park_path, load_park, parse_park
from parkmon.park.cli import main as park_main

pytestmark = pytest.mark.unit


def small_park() -> dict[str, Any]:
    return {
        "park": {"id": "mini", "name": "Mini park", "timezone": "Europe/Copenhagen"},
        "enterprises": [
            {"id": "power", "name": "Power station", "sector": "power"},
            {"id": "boards", "name": "Board maker", "sector": "building"},
        ],
        "meters": [
            {"id": "power.gypsum_out", "enterprise": "power", "carrier": "material",
             "material": "gypsum", "direction": "output", "kind": "counter", "unit": "kg",
             "capacity": "40 t/h"},
            {"id": "power.heat_out", "enterprise": "power", "carrier": "heat",
             "direction": "output", "kind": "rate", "unit": "kW", "range": [0, 20000]},
            {"id": "boards.gypsum_in", "enterprise": "boards", "carrier": "material",
             "material": "gypsum", "direction": "input", "origin": "partner", "kind": "counter",
             "unit": "t", "capacity": "40 t/h"},
            {"id": "boards.gas_in", "enterprise": "boards", "carrier": "fuel_gas",
             "direction": "input", "origin": "grid", "kind": "counter", "unit": "GJ",
             "capacity": "10 MW"},
            {"id": "boards.board_out", "enterprise": "boards", "carrier": "product",
             "direction": "output", "kind": "counter", "unit": "t", "capacity": "30 t/h"},
        ],
        "exchanges": [
            {"id": "gypsum", "material": "gypsum", "carrier": "material",
             "suppliers": ["power.gypsum_out"], "consumers": ["boards.gypsum_in"],
             "nominal_rate": "8766 t/yr", "loss_fraction": 0.02, "buffer_h": 72,
             "criticality": "high"},
        ],
        "alternatives": [
            {"enterprise": "import", "external": True, "carrier": "material", "material": "gypsum",
             "spare_capacity": "500 kg/h", "lead_time_h": 48},
        ],
        "emission_factors": {
            "fuel_gas": {"value": 56.1, "unit": "t/TJ", "source": "IPCC 2006",
                         "series": [{"start": "2026-01-01T00:00:00Z", "value": 50.0}]},
        },
        "maintenance": [
            {"enterprise": "power", "start": "2026-06-01T00:00:00Z", "end": "2026-06-02T00:00:00Z"},
        ],
        "products": [{"meter": "boards.board_out", "name": "plasterboard"}],
    }


def problems_of(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ParkFileError) as info:
        build_park(data)
    return info.value.problems


def test_small_park_loads_with_canonical_units() -> None:
    park = build_park(small_park())
    gyp = park.meter("power.gypsum_out")
    assert (gyp.unit, gyp.canonical_unit, gyp.scale, gyp.capacity) == ("kg", "t", 0.001, 40.0)
    heat = park.meter("power.heat_out")
    assert heat.canonical_unit == "MWh/h"
    assert heat.range_max == pytest.approx(20.0)  # 20000 kW = 20 MWh/h
    assert heat.capacity == pytest.approx(20.0)  # defaults to the top of the range
    x = park.exchanges[0]
    assert x.nominal_rate == pytest.approx(8766 / (365.25 * 24))  # t/yr -> t/h
    assert (x.quantity_unit, x.rate_unit, x.consumer_shares) == ("t", "t/h", (1.0,))
    assert park.alternatives[0].spare_capacity == pytest.approx(0.5)
    ef = park.emission_factors["fuel_gas"]
    assert ef.per_unit == "MWh"
    assert ef.value == pytest.approx(56.1 * 0.0036)  # t/TJ -> t/MWh: 1 MWh = 0.0036 TJ
    assert ef.at(1_700_000_000_000) == pytest.approx(ef.value)  # before the series starts
    assert ef.at(1_790_000_000_000) == pytest.approx(50.0 * 0.0036)
    assert park.alternatives_for("gypsum")[0].enterprise == "import"
    assert park.in_maintenance("power.heat_out", 1_780_272_000_000 + 1)  # 2026-06-01T00:00:00Z
    assert not park.in_maintenance("boards.gas_in", 1_780_272_000_000 + 1)
    assert park.products[0].enterprise == "boards"
    assert park.exchange_of_meter["boards.gypsum_in"].id == "gypsum"


def test_example_kalundborg_park_is_valid_and_carries_sources() -> None:
    park = load_park(example_park_path("kalundborg"))
    assert park.id == "kalundborg"
    assert len(park.enterprises) >= 10
    ids = {x.id for x in park.exchanges}
    assert {"gypsum", "fly_ash", "steam", "district_heat", "cooling_water", "refinery_gas",
            "sulphur", "novogro", "residues_biogas", "heat_pump_heat"} <= ids
    for x in park.exchanges:
        assert x.source, f"exchange {x.id} has no source"
        for mid in (*x.suppliers, *x.consumers):
            assert park.meter(mid).dimension == x.dimension
    for carrier, f in park.emission_factors.items():
        assert f.source, carrier
    # published figure: ~200,000 t/yr of gypsum = ~22.8 t/h
    assert park.exchange("gypsum").nominal_rate == pytest.approx(200_000 / 8766, rel=1e-3)
    # IPCC natural gas 56.1 t CO2/TJ = 0.202 kg/kWh (KPIS.md)
    assert park.emission_factors["fuel_gas"].value == pytest.approx(0.202, abs=5e-4)


def test_unknown_example_lists_the_known_ones() -> None:
    with pytest.raises(FileNotFoundError, match="examples are: .*kalundborg"):
        example_park_path("atlantis")


def test_dangling_supplier_names_the_meters_of_that_enterprise() -> None:
    data = small_park()
    data["exchanges"][0]["suppliers"] = ["power.gypsum"]
    assert problems_of(data) == [
        "exchanges[0].suppliers[0]: no meter 'power.gypsum'; meters of 'power' are: "
        "power.gypsum_out, power.heat_out"
    ]


def test_dangling_reference_to_unknown_enterprise_prefix() -> None:
    data = small_park()
    data["exchanges"][0]["consumers"] = ["gyproc.gypsum_in"]
    assert problems_of(data) == [
        "exchanges[0].consumers[0]: no meter 'gyproc.gypsum_in'; meter ids start with their "
        "enterprise id (power, boards)"
    ]


def test_schema_problems_are_all_reported_with_paths() -> None:
    data = small_park()
    data["meters"][1]["kind"] = "cumulative"
    data["meters"][2]["colour"] = "red"
    del data["enterprises"][1]["sector"]
    probs = problems_of(data)
    assert "enterprises[1].sector: required field missing" in probs
    assert "meters[1].kind: expected 'counter' or 'rate', got 'cumulative'" in probs
    assert any(p.startswith("meters[2].colour: unknown field 'colour'; allowed fields: id, "
                            "enterprise, carrier") for p in probs)


@pytest.mark.parametrize(
    ("meter_index", "change", "expected"),
    [
        (0, {"unit": "kW"}, "meters[0].unit: 'kW' measures energy per time, but 'material' is "
                            "metered in mass or volume (e.g. 't', 'm3')"),
        (3, {"unit": "kW"}, "meters[3].unit: 'kW' is a rate unit but kind is 'counter'; a counter "
                            "needs a quantity unit such as 'MWh'"),
        (1, {"unit": "MWh"}, "meters[1].unit: 'MWh' is a quantity unit but kind is 'rate'; a rate "
                             "needs a unit per time such as 'MWh/h'"),
        (3, {"unit": "furlong"}, "meters[3].unit: unit 'furlong' measures [length]; expected an "
                                 "energy, mass or volume quantity (MWh, t, m3) or a rate of one "
                                 "(MWh/h, t/h, m3/h)"),
        (3, {"unit": "blorp"}, "meters[3].unit: unknown unit 'blorp'; expected an energy, mass or "
                               "volume unit such as 'MWh', 'GJ', 'kWh', 't', 'kg', 'm3' (or per "
                               "hour for rates: 'MW', 't/h', 'm3/h')"),
        (3, {"origin": None}, "meters[3].origin: required for an input meter; expected one of "
                              "'virgin', 'grid', 'secondary', 'partner'"),
        (4, {"capacity": None}, "meters[4].capacity: required for a counter meter: the largest "
                                "flow, e.g. '50 t/h'"),
        (4, {"capacity": "30 t"}, "meters[4].capacity: '30 t' is not a rate of mass; expected e.g. "
                                  "'1 t/h'"),
        (4, {"enterprise": "nobody"}, "meters[4].enterprise: no enterprise 'nobody'; enterprises "
                                      "are: power, boards"),
        (4, {"id": "board_out"}, "meters[4].id: 'board_out' must start with its enterprise id "
                                 "'boards.' (e.g. 'boards.board_out')"),
        (1, {"range": [10, 5]}, "meters[1].range: min must be below max, got [10, 5]"),
    ],
)
def test_meter_problems(meter_index: int, change: dict[str, Any], expected: str) -> None:
    data = small_park()
    data["meters"][meter_index].update(change)
    assert expected in problems_of(data)


def test_duplicate_meter_id() -> None:
    data = small_park()
    data["meters"].append(copy.deepcopy(data["meters"][3]))
    assert problems_of(data) == ["meters[5].id: duplicate meter id 'boards.gas_in' (first at meters[3])"]


def test_exchange_dimension_and_direction_problems() -> None:
    data = small_park()
    data["exchanges"][0]["nominal_rate"] = "5 MW"
    data["exchanges"][0]["consumers"] = ["boards.board_out"]
    assert problems_of(data) == [
        "exchanges[0].nominal_rate: '5 MW' is a rate of energy but 'material' is metered in mass or volume",
        "exchanges[0].consumers[0]: meter 'boards.board_out' is an output meter; consumers must be "
        "input meters",
        "exchanges[0].consumers[0]: meter 'boards.board_out' measures 'product', the exchange "
        "carries 'material'",
    ]


def test_exchange_quantity_instead_of_rate() -> None:
    data = small_park()
    data["exchanges"][0]["nominal_rate"] = "200000 t"
    assert problems_of(data) == [
        "exchanges[0].nominal_rate: '200000 t' is a quantity, expected a rate such as '23 t/h', "
        "'200000 t/yr' or '12 MW'"
    ]


def test_consumer_must_be_partner_or_secondary_and_in_one_exchange() -> None:
    data = small_park()
    data["meters"][2]["origin"] = "virgin"
    second = copy.deepcopy(data["exchanges"][0])
    second["id"] = "gypsum2"
    data["exchanges"].append(second)
    probs = problems_of(data)
    assert ("exchanges[0].consumers[0]: meter 'boards.gypsum_in' has origin 'virgin'; a meter "
            "receiving an exchange must have origin 'partner' or 'secondary'") in probs
    assert ("exchanges[1].suppliers[0]: meter 'power.gypsum_out' is already part of exchange "
            "'gypsum'; a meter measures one flow") in probs


def test_consumer_shares_must_sum_to_one() -> None:
    data = small_park()
    data["exchanges"][0]["consumer_shares"] = [0.5]
    assert problems_of(data) == [
        "exchanges[0].consumer_shares: must be non-negative and sum to 1, got [0.5] (sum 0.5)"
    ]


def test_emission_factor_unit_must_match_the_carrier_meters() -> None:
    data = small_park()
    data["emission_factors"]["fuel_gas"]["unit"] = "kg/m3"
    assert problems_of(data) == [
        "meters[3].unit: 'GJ' measures energy but the emission factor for 'fuel_gas' is per m3 "
        "(emission_factors.fuel_gas.unit 'kg/m3')"
    ]


def test_unknown_sections_carriers_and_timezone() -> None:
    data = small_park()
    data["extras"] = {}
    data["emission_factors"]["unobtainium"] = {"value": 1, "unit": "t/t", "source": "x"}
    data["park"]["timezone"] = "Mars/Olympus"
    probs = problems_of(data)
    assert "extras: unknown section; allowed sections: park, enterprises, meters, exchanges, " \
           "alternatives, emission_factors, maintenance, products, benefit_sharing" in probs
    assert any(p.startswith("emission_factors.unobtainium: unknown carrier; expected one of "
                            "electricity, heat") for p in probs)
    assert ("park.timezone: unknown time zone 'Mars/Olympus'; expected an IANA name such as "
            "'Europe/Copenhagen' or 'UTC'") in probs


def test_maintenance_and_products_references() -> None:
    data = small_park()
    data["maintenance"][0]["end"] = "2026-05-01T00:00:00Z"
    data["maintenance"][0]["meters"] = ["boards.gas_in"]
    data["products"][0]["meter"] = "boards.gas_in"
    assert problems_of(data) == [
        "maintenance[0].meters[0]: meter 'boards.gas_in' belongs to 'boards', not 'power'",
        "maintenance[0].end: must be after start (2026-06-01T00:00:00+00:00)",
        "products[0].meter: meter 'boards.gas_in' is an input meter; a product is counted on an "
        "output meter",
    ]


def test_alternative_for_unknown_enterprise() -> None:
    data = small_park()
    data["alternatives"][0]["external"] = False
    assert problems_of(data) == [
        "alternatives[0].enterprise: no enterprise 'import'; enterprises are: power, boards (set "
        "external: true for a supplier outside the park)"
    ]


def test_yaml_syntax_error_gives_line_and_column() -> None:
    with pytest.raises(ParkFileError) as info:
        parse_park("park: {id: x\nmeters: [", source="t.yaml")
    assert len(info.value.problems) == 1
    assert info.value.problems[0].startswith("(file): not valid YAML at line ")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ParkFileError) as info:
        load_park(tmp_path / "nope.yaml")
    assert info.value.problems == [f"{tmp_path / 'nope.yaml'}: file not found"]


def test_models_are_frozen() -> None:
    park = build_park(small_park())
    with pytest.raises(ValueError, match="frozen"):
        park.meters[0].unit = "t"  # type: ignore[misc]


def test_cli_check_invalid_file_exits_2_without_traceback(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = small_park()
    data["exchanges"][0]["suppliers"] = ["power.gypsum"]
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(data))
    assert park_main(["check", str(f)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.splitlines() == [
        f"{f}: 1 problem(s)",
        "  exchanges[0].suppliers[0]: no meter 'power.gypsum'; meters of 'power' are: "
        "power.gypsum_out, power.heat_out",
    ]


def test_cli_check_and_show_valid_file(capsys: pytest.CaptureFixture[str]) -> None:
    path = str(example_park_path())
    assert park_main(["check", path]) == 0
    assert "ok (park 'kalundborg'" in capsys.readouterr().out
    assert park_main(["show", path]) == 0
    out = capsys.readouterr().out
    assert "asnaes.gypsum_out -> gyproc.gypsum_in" in out
    assert "asnaes.steam_out -> novo.steam_in  (25%)" in out
    assert "gyproc - Plasterboard maker" in out


def test_cli_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert park_main(["frobnicate"]) == 2


def test_cli_generate_writes_a_loadable_park(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "syn.yaml"
    assert park_main(["generate", "--enterprises", "12", "--meters", "100", "--seed", "4",
                      "-o", str(f)]) == 0
    park = load_park(f)
    assert (len(park.enterprises), len(park.meters)) == (12, 100)
    assert park_main(["check", str(f)]) == 0


def test_type_problems_give_one_line_each() -> None:
    data = small_park()
    data["meters"][0]["capacity"] = [1, 2]
    data["meters"][1]["range"] = [0]
    data["park"]["id"] = "bad id"
    data["meters"][3]["period_s"] = -5
    assert problems_of(data) == [
        "park.id: 'bad id' is not a valid id (letters, digits, '_', '-')",
        "meters[0].capacity: expected a quantity such as '40 t/h' (a number with a unit) or a "
        "plain number, got [1, 2]",
        "meters[1].range: expected [min, max]",
        "meters[3].period_s: Input should be greater than 0, got -5",
    ]


# --------------------------------------------------------------------------------------------
# fate: where an output of by-products or waste goes (Waste Framework Directive operation)


def fate_park() -> dict[str, Any]:
    """small_park plus a slag output (not in an exchange) that may carry a fate."""
    data = small_park()
    data["meters"].append(
        {"id": "power.slag_out", "enterprise": "power", "carrier": "material", "material": "slag",
         "direction": "output", "kind": "counter", "unit": "t", "capacity": "5 t/h"})
    return data


@pytest.mark.parametrize("fate", ["recycling", "energy_recovery", "disposal"])
def test_fate_on_a_waste_output_loads(fate: str) -> None:
    data = fate_park()
    data["meters"][5]["fate"] = fate
    park = build_park(data)
    assert park.meter("power.slag_out").fate == fate
    assert park.meter("power.gypsum_out").fate is None  # optional: old files stay valid


def test_fate_recycling_on_an_exchange_supplier_is_consistent() -> None:
    data = fate_park()
    data["meters"][0]["fate"] = "recycling"
    assert build_park(data).meter("power.gypsum_out").fate == "recycling"


@pytest.mark.parametrize(
    ("meter_index", "change", "expected"),
    [
        (5, {"fate": "landfill"},
         "meters[5].fate: expected 'recycling', 'energy_recovery' or 'disposal', got 'landfill'; "
         "Waste Framework Directive operations: recycling = reuse and R2-R11, energy_recovery = "
         "R1, disposal = D1-D15"),
        (2, {"fate": "recycling"},
         "meters[2].fate: only output meters have a fate (where a by-product or waste goes); this "
         "is an input meter; an input meter's provenance is its origin"),
        (1, {"fate": "energy_recovery"},
         "meters[1].fate: carrier 'heat' is not a by-product or waste; only outputs of carrier "
         "'material' or 'biomass' have a fate"),
        (4, {"fate": "disposal"},
         "meters[4].fate: carrier 'product' is not a by-product or waste (a product is not "
         "waste); only outputs of carrier 'material' or 'biomass' have a fate"),
        (5, {"fate": "disposal", "unit": "m3", "capacity": "5 m3/h"},
         "meters[5].fate: 'm3' measures volume, but waste KPIs count by-products and waste by "
         "mass; meter this output in a mass unit such as 't' to give it a fate"),
        (5, {"origin": "secondary"},
         "meters[5].origin: only input meters have an origin (this is an output meter); where a "
         "by-product or waste goes is its fate: 'recycling', 'energy_recovery', 'disposal'"),
    ],
)
def test_fate_problems(meter_index: int, change: dict[str, Any], expected: str) -> None:
    data = fate_park()
    data["meters"][meter_index].update(change)
    assert problems_of(data) == [expected]


def test_fate_on_wastewater_names_the_directive() -> None:
    data = fate_park()
    data["meters"].append(
        {"id": "boards.wastewater_out", "enterprise": "boards", "carrier": "wastewater",
         "direction": "output", "fate": "recycling", "kind": "counter", "unit": "m3",
         "capacity": "5 m3/h"})
    assert problems_of(data) == [
        "meters[6].fate: carrier 'wastewater' is not a by-product or waste (wastewater is "
        "outside the Waste Framework Directive); only outputs of carrier 'material' or 'biomass' "
        "have a fate"]


@pytest.mark.parametrize(("fate", "why"), [
    ("disposal", "its flow goes to a partner, not to disposal (D1-D15)"),
    ("energy_recovery", "a flow delivered to a partner counts as valorised, so it cannot also "
                        "be reported as energy recovery (R1)"),
])
def test_fate_contradicting_the_exchange_a_meter_supplies(fate: str, why: str) -> None:
    data = fate_park()
    data["meters"][0]["fate"] = fate
    assert problems_of(data) == [
        f"meters[0].fate: '{fate}' contradicts exchange 'gypsum' (exchanges[0]), which meter "
        f"'power.gypsum_out' supplies: {why}; remove fate, or set 'recycling' (use a separate "
        "meter for a part of the flow that goes elsewhere)"]


def test_cli_check_reports_a_bad_fate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = fate_park()
    data["meters"][2]["fate"] = "recycling"
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(data))
    assert park_main(["check", str(f)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"{f}: 1 problem(s)",
        "  meters[2].fate: only output meters have a fate (where a by-product or waste goes); "
        "this is an input meter; an input meter's provenance is its origin",
    ]


def test_cli_show_prints_the_fate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = fate_park()
    data["meters"][5]["fate"] = "disposal"
    f = tmp_path / "ok.yaml"
    f.write_text(yaml.safe_dump(data))
    assert park_main(["show", str(f)]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if "power.slag_out" in x)
    assert line.rstrip().endswith("(fate disposal)")


def test_benefit_sharing_declaration_loads() -> None:
    d = small_park()
    d["exchanges"][0].update(virgin_price=20, disposal_price=5,
                             sharing={"kind": "fixed", "shares": {"power": 0.4, "boards": 0.6}})
    d["benefit_sharing"] = {"currency": "DKK", "rule": {"kind": "shapley"}}
    park = build_park(d)
    x = park.exchange("gypsum")
    assert (x.virgin_price, x.disposal_price) == (20.0, 5.0)
    assert x.sharing is not None and x.sharing.kind == "fixed"
    assert park.benefit_sharing is not None and park.benefit_sharing.currency == "DKK"
    assert park.benefit_sharing.rule.kind == "shapley"


@pytest.mark.parametrize("change, expected", [
    (lambda d: d["exchanges"][0].update(sharing={"kind": "fixed", "shares": {"power": 0.4,
                                                                           "boards": 0.5}}),
     "exchanges[0]: sharing rule 'fixed': shares boards=0.5, power=0.4 sum to 0.9: expected 1"),
    (lambda d: d["exchanges"][0].update(sharing={"kind": "fixed", "shares": {"power": 0.4,
                                                                           "nobody": 0.6}}),
     "exchanges[0].sharing.shares: declared for ['nobody', 'power'] but the exchange's partners "
     "are ['power', 'boards']"),
    (lambda d: d["exchanges"][0].update(virgin_price=-3),
     "exchanges[0].virgin_price: Input should be greater than or equal to 0"),
    (lambda d: d["benefit_sharing"].update(chains=[{"id": "c", "exchanges": ["gypsum", "steam"]}]),
     "benefit_sharing.chains[0].exchanges[1]: no exchange 'steam'; exchanges are: gypsum"),
    (lambda d: d["benefit_sharing"].update(rule={"kind": "lottery"}),
     "benefit_sharing.rule: "),
])
def test_benefit_sharing_errors_say_where_and_what(change: Any, expected: str) -> None:
    d = small_park()
    d["benefit_sharing"] = {"currency": "DKK"}
    change(d)
    probs = problems_of(d)
    assert any(p.startswith(expected) for p in probs), probs


def test_an_exchange_rule_without_the_section_is_reported() -> None:
    d = small_park()
    d["exchanges"][0]["sharing"] = {"kind": "proportional"}
    assert any("declared without a benefit_sharing section" in p for p in problems_of(d))
