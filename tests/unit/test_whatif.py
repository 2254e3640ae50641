"""`parkmon whatif`: the scenario file, the changed park, and deltas checked against what the
change must do by hand (same seed, same simulator: only the change differs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from apps.whatif import EXAMPLES, load_whatif, main, parse_whatif, run
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
    assert main(["power_station_trip", "--html", str(tmp_path / "w.html")]) == 0
    text = (tmp_path / "w.html").read_text()
    assert "What if: power_station_trip" in text and "exchange steam" in text


def test_the_shipped_json_schema_is_the_models_and_validates_the_examples():
    import jsonschema
    import yaml

    from apps.whatif import WhatIf

    shipped = json.loads((EXAMPLES / "whatif.schema.json").read_text())
    assert shipped == json.loads(json.dumps(WhatIf.model_json_schema()))
    for p in EXAMPLES.glob("*.yaml"):
        jsonschema.validate(yaml.safe_load(p.read_text()), shipped)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"name": "x", "park_changes": [{"kind": "teleport"}]}, shipped)
