"""`parkmon whatif`: the scenario file, the changed park, and deltas checked against what the
change must do by hand (same seed, same simulator: only the change differs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from apps.whatif import main, run
from apps.whatif_model import EXAMPLES, WhatIfError, load_whatif, parse_whatif
from parkmon.park import example_park_path

pytestmark = pytest.mark.unit
KB = example_park_path("kalundborg")


def _run(name: str, **upd: object) -> dict:
    return run(KB, load_whatif(name).model_copy(update=upd))


def test_every_shipped_example_loads_and_names_a_change():
    names = sorted(p.stem for p in EXAMPLES.glob("*.yaml"))
    assert len(names) >= 4
    for n in names:
        w = load_whatif(n)
        assert w.events or w.park_changes, n


def test_a_dirtier_grid_scales_scope_2_by_the_factor_ratio_and_nothing_else():
    r = _run("grid_factor_up")
    ratio = 300.0 / 281.0  # kg/kWh 0.3 instead of the park file's 281 g/kWh
    checked = 0
    for ent, row in r["kpis"].items():
        s2 = row["scope2_t_co2e"]
        assert s2["changed"] == pytest.approx(s2["baseline"] * ratio, rel=1e-9), ent
        checked += s2["baseline"] > 0
        assert row["scope1_t_co2e"]["delta"] == 0
        for k in ("material_circularity_ratio", "water_reuse_rate"):
            if k in row and row[k]["delta"] is not None:
                assert row[k]["delta"] == 0, (ent, k)
    assert checked >= 5


def test_a_higher_virgin_gypsum_price_credits_the_consumer_only_under_proportional_sharing():
    r = _run("gypsum_price_up")
    k = r["kpis"]
    # proportional: each partner is credited its own avoided cost; only gyproc's changed
    # (28 % more per t of gypsum it no longer buys: 400 instead of 150)
    assert k["enterprise:asnaes"]["credited_savings"]["delta"] == pytest.approx(0.0, abs=1e-6)
    d = k["enterprise:gyproc"]["credited_savings"]["delta"]
    assert d > 0
    assert k["park:kalundborg"]["savings"]["delta"] == pytest.approx(d, rel=1e-9)
    assert k["park:kalundborg"]["avoided_t_co2e"]["delta"] == 0


def test_losing_the_gypsum_exchange_lowers_the_plasterboard_makers_circularity():
    r = _run("gypsum_loss_with_import", hours=6)
    g = r["kpis"]["enterprise:gyproc"]
    assert g["material_circularity_ratio"]["changed"] < g["material_circularity_ratio"]["baseline"]
    # no credits for a removed exchange: asnaes loses the gypsum disposal it avoided
    assert r["kpis"]["enterprise:asnaes"]["credited_savings"]["delta"] < 0


def test_a_power_station_trip_is_alerted_with_its_consumers_only_in_the_changed_run():
    r = _run("power_station_trip")
    assert r["alerts"]["baseline"] == []
    steam = [a for a in r["alerts"]["changed"] if a["name"] == "supply_drop"
             and "exchange steam" in a["summary"] and a["status"] == "firing"]
    assert steam and all(c in steam[0]["summary"] for c in ("refinery", "novo", "novozymes"))
    assert "best alternative" in steam[0]["summary"]


def test_deterministic_with_the_seed(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    outs = []
    for i in range(2):
        assert main(["grid_factor_up", "--hours", "2", "--json", str(tmp_path / f"{i}.json")]) == 0
        d = json.loads((tmp_path / f"{i}.json").read_text())
        d.pop("wall_seconds")
        outs.append(d)
    assert outs[0] == outs[1]
    capsys.readouterr()
    assert main(["grid_factor_up", "--hours", "2", "--seed", "99", "--json", "-"]) == 0
    other = json.loads(capsys.readouterr().out)
    other.pop("wall_seconds")
    assert other["kpis"] != outs[0]["kpis"]


def test_bad_scenarios_say_where_and_what(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\npark_changes:\n  - {kind: remove_exchange, exchange: nope}\n")
    assert main([str(KB), str(bad)]) == 2
    err = capsys.readouterr().err
    assert "park_changes[0].exchange: no exchange 'nope'; exchanges are: gypsum" in err
    with pytest.raises(Exception) as info:
        parse_whatif({"name": "x", "park_changes": [{"kind": "prices", "exchange": "gypsum",
                                                     "virgin_price": -1}]})
    assert "park_changes[0].virgin_price: Input should be greater than or equal to 0" in str(
        info.value)
    assert main(["no_such_scenario"]) == 2
    assert "shipped examples: " in capsys.readouterr().err
    bad.write_text("name: x\nevents:\n  - {kind: trip, exchange: nope, at: 1h, duration: 1h}\n")
    assert main([str(bad)]) == 2
    assert "exchange" in capsys.readouterr().err


def test_html_report(tmp_path: Path):
    assert main(["power_station_trip", "--hours", "8", "--html", str(tmp_path / "w.html")]) == 0
    text = (tmp_path / "w.html").read_text()
    assert "What if: power_station_trip" in text and "exchange steam" in text
    # the Sankey of both runs, the impact list and its timeline
    assert 'id="sankey"' in text and '"type":"sankey"' in text.replace(" ", "")
    assert 'id="timeline"' in text and "hit: refinery (refinery.steam_in)" in text


def test_a_new_exchange_raises_the_consumers_circularity_by_what_it_displaces():
    r = _run("new_gypsum_recycling")
    k = r["kpis"]
    c0 = k["enterprise:gyproc"]["material_circularity_ratio"]["baseline"]
    c1 = k["enterprise:gyproc"]["material_circularity_ratio"]["changed"]
    # baseline: g t/h of FGD gypsum (partner) + 3 t/h virgin: c0 = g / (g + 3), so g = 3 c0/(1-c0)
    # changed: + 2 t/h recycled (partner), virgin 3 - 2 = 1 t/h: c1 = (g + 2) / (g + 3)
    g = 3 * c0 / (1 - c0)
    assert c1 == pytest.approx((g + 2) / (g + 3), abs=0.005)
    assert c1 > c0 + 0.05
    # the new flow is credited to the consumer only (no disposal price declared for it):
    # 2 t/h x 12 h x 150 DKK/t of virgin gypsum no longer bought, the sulphur demand aside
    assert k["enterprise:gyproc"]["credited_savings"]["delta"] == pytest.approx(
        2 * 12 * 150, rel=0.03)
    fl = r["flows"]
    assert "recycled_gypsum" not in fl["baseline"]
    assert fl["changed"]["recycled_gypsum"]["delivered"] == pytest.approx(2 * 12, rel=0.03)
    assert fl["changed"]["recycled_gypsum"]["from"] == ["cement"]
    # the sulphur exchange's demand is 20 % higher: the same noise, 1.2 x the flow
    s0, s1 = fl["baseline"]["sulphur"]["delivered"], fl["changed"]["sulphur"]["delivered"]
    assert s1 / s0 == pytest.approx(1.2, rel=0.01)
    # enterprises the changes do not touch see exactly the same figures (the new meters are
    # idle in the baseline, so the simulator's noise is drawn alike in both runs)
    for ent in ("asnaes", "town", "novo", "novozymes", "utility", "bioenergy"):
        for key, v in k[f"enterprise:{ent}"].items():
            assert v["delta"] in (None, 0), (ent, key, v)


def test_impact_lists_consumers_second_order_in_time_order_and_ranked_alternatives():
    import yaml

    r = _run("power_station_trip", hours=8)
    by_x = {i["exchange"]: i for i in r["impacts"]}
    steam = by_x["steam"]
    assert {c["enterprise"] for c in steam["consumers"]} == {"refinery", "novo", "novozymes"}
    t = [c["hours_to_exhaustion"] for c in steam["second_order"]]
    assert t == sorted(t) and len(t) >= 3
    ranks = [a["rank"] for a in steam["alternatives"]]
    spare = [a["spare_capacity"] for a in steam["alternatives"]]
    assert ranks == list(range(1, len(ranks) + 1)) and spare == sorted(spare, reverse=True)
    # switching cost = covered rate x the exchange's declared virgin price (park file)
    prices = {x["id"]: x.get("virgin_price") for x in yaml.safe_load(KB.read_text())["exchanges"]}
    heat = by_x["district_heat"]
    for a in heat["alternatives"]:
        assert a["covered_rate"] == pytest.approx(min(a["spare_capacity"], heat["lost_rate"]))
        assert a["switch_cost_per_h"] == pytest.approx(a["covered_rate"]
                                                       * prices["district_heat"])
        assert a["switch_co2_t_per_h"] > 0


def test_bad_park_changes_say_where_and_what():
    def problems(change: dict) -> str:
        w = parse_whatif({"name": "x", "hours": 1, "park_changes": [change]})
        with pytest.raises(WhatIfError) as info:
            run(KB, w)
        return "\n".join(info.value.problems)

    base = {"kind": "add_exchange", "id": "new", "from": "cement", "to": "gyproc",
            "carrier": "material", "material": "gypsum", "rate": "2 t/h"}
    assert "park_changes[0].from: no enterprise 'nobody'" in problems({**base, "from": "nobody"})
    assert "park_changes[0].replaces: 'asnaes.power_out' is not an input meter of 'gyproc'" in \
        problems({**base, "replaces": "asnaes.power_out"})
    assert "park_changes[0].rate: '5 t/h' is more than 'gyproc.gypsum_virgin_in'" in problems(
        {**base, "rate": "5 t/h", "replaces": "gyproc.gypsum_virgin_in"})
    assert "park_changes[0].rate: '2 t' is a quantity" in problems({**base, "rate": "2 t"})
    assert "exchange 'gypsum' exists already" in problems({**base, "id": "gypsum"})
    assert "no meter 'nope'" in problems({"kind": "demand", "meter": "nope", "factor": 2})
    with pytest.raises(WhatIfError) as info:
        parse_whatif({"name": "x", "park_changes": [{"kind": "demand", "factor": 2}]})
    assert "park_changes[0]: give exactly one of 'exchange' or 'meter'" in str(info.value.problems)


def test_the_shipped_json_schema_is_the_models_and_validates_the_examples():
    import jsonschema
    import yaml

    from apps.whatif_model import WhatIf

    shipped = json.loads((EXAMPLES / "whatif.schema.json").read_text())
    assert shipped == json.loads(json.dumps(WhatIf.model_json_schema()))
    for p in EXAMPLES.glob("*.yaml"):
        jsonschema.validate(yaml.safe_load(p.read_text()), shipped)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"name": "x", "park_changes": [{"kind": "teleport"}]}, shipped)
