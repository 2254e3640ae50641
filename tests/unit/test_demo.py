"""The one-process demo: the shipped scenario's faults come out as the right alerts and counts.

Expected outcomes are derived from the scenario's own ground-truth labels, not from a previous run.
"""

import json

import pytest

from apps import demo

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def summary(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    args = demo._parser().parse_args(["--quiet", "--report", str(out / "r.html"),
                                      "--json", str(out / "s.json")])
    assert demo.main(["--quiet", "--report", str(out / "r.html"), "--json", str(out / "s.json")]) == 0
    assert args.scenario == "demo"
    s = json.loads((out / "s.json").read_text())
    s["_html"] = (out / "r.html").read_text()
    return s


def _label(s, kind):
    return next(lb for lb in s["labels"] if lb["kind"] == kind)


def test_every_reading_has_an_outcome(summary):
    s = summary
    assert s["readings"] == s["accepted"] + s["duplicates"] + sum(s["rejected"].values())


def test_duplicates_and_malformed_payloads_are_counted_as_injected(summary):
    s = summary
    assert s["duplicates"] == _label(s, "duplicates")["details"]["duplicates"]
    malformed = _label(s, "malformed")["details"]["malformed"]
    assert sum(s["rejected"].values()) == sum(malformed.values())


def _firing(s, name):
    return [(n, a) for n in s["notifications"] if n["status"] == "firing"
            for a in n["alerts"] if a["name"] == name and a["state"] == "firing"]


def test_steam_trip_raises_one_grouped_supply_alert_naming_every_consumer(summary):
    s = summary
    trip = _label(s, "trip")
    hits = [(n, a) for n, a in _firing(s, "supply_drop") if a["labels"].get("exchange") == "steam"]
    assert hits, "the steam trip was not alerted"
    n, a = hits[0]
    for consumer in trip["details"]["consumer_enterprises"]:
        assert consumer in a["summary"]
    # one notification for the incident, not one per consumer
    firing_steam = [n for n, a in hits if n["reason"] == "new"]
    assert len(firing_steam) == 1


def test_silent_meter_is_data_quality_not_supply(summary):
    s = summary
    silent = _label(s, "meter_silence")["target"]
    dq = [a for _n, a in _firing(s, "data_quality") if a["labels"].get("meter") == silent]
    assert dq
    ent = silent.split(".")[0]
    supply_for_ent = [a for _n, a in _firing(s, "supply_drop")
                      if a["labels"].get("supplier") == ent or a["labels"].get("enterprise") == ent]
    assert not supply_for_ent


def test_report_shows_the_alerts_and_counts(summary):
    html = summary["_html"]
    assert "<table id=\"alerts\">" in html
    assert "supply_drop" in html and "data_quality" in html
    assert f"Readings {summary['readings']}" in html


def test_bad_park_file_is_an_actionable_error(tmp_path, capsys):
    bad = tmp_path / "park.yaml"
    bad.write_text("park: {id: x}\nenterprises: []\n")
    assert demo.main(["--park", str(bad), "--report", "", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip()
