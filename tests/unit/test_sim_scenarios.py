"""Scenarios: files load, bad files are reported, and the labels match what the fleet sends."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from parkmon.park import Park, example_park_path, load_park
from simulators import (
    FleetOptions,
    Label,
    SimReading,
    load_scenario,
    read_labels,
    run_scenario,
    write_labels,
)
from simulators.scenarios import (
    ScenarioError,
    parse_duration_ms,
    parse_scenario,
    resolve,
    scenario_path,
)

pytestmark = pytest.mark.unit

T0 = 1_767_225_600_000
HOUR = 3_600_000
MIN = 60_000


@pytest.fixture(scope="module")
def park() -> Park:
    return load_park(example_park_path("kalundborg"))


@pytest.fixture(scope="module")
def dq_run(park: Park) -> tuple[list[SimReading], list[Label]]:
    scenario = load_scenario(scenario_path("data_quality"))
    it, labels = run_scenario(park, scenario, start_ms=T0, options=FleetOptions(counter_resets_per_day=0))
    return list(it), labels


def label(labels: list[Label], kind: str) -> Label:
    (lb,) = [x for x in labels if x.kind == kind]
    return lb


def of(readings: list[SimReading], meter: str) -> list[SimReading]:
    return [r for r in readings if r.meter == meter]


@pytest.mark.parametrize(("text", "ms"), [("90s", 90_000), ("30m", 1_800_000), ("1.5h", 5_400_000),
                                          ("2d", 172_800_000), ("1d6h", 108_000_000), (45, 45_000),
                                          ("250ms", 250)])
def test_durations(text: str | int, ms: int) -> None:
    assert parse_duration_ms(text) == ms


def test_bad_duration() -> None:
    with pytest.raises(ValueError, match="expected a duration"):
        parse_duration_ms("soon")


SHIPPED = sorted(p.stem for p in (Path(__file__).parents[2] / "simulators" / "scenarios").glob("*.yaml"))


def test_the_documented_scenarios_are_shipped() -> None:
    assert {"gypsum_trip", "supply_faults", "data_quality", "mixed_week"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_scenarios_resolve_against_kalundborg(park: Park, name: str) -> None:
    sc = load_scenario(scenario_path(name))
    assert sc.events
    assert len(resolve(sc, park, T0)) == len(sc.events)


def test_scenario_problems_name_the_event(park: Park) -> None:
    sc = parse_scenario({"name": "bad", "events": [
        {"kind": "trip", "exchange": "gypsumm", "duration": "1h"},
        {"kind": "stuck_meter", "meter": "nowhere.x", "duration": "1h"},
        {"kind": "step_drop", "exchange": "steam", "duration": "1h", "magnitude": 1.5},
        {"kind": "trip", "exchange": "steam", "meter": "novo.steam_in", "duration": "1h"}]})
    with pytest.raises(ScenarioError) as info:
        resolve(sc, park, T0)
    assert info.value.problems[0].startswith("events[0].exchange: no exchange 'gypsumm'; exchanges are: gypsum, fly_ash")
    assert info.value.problems[1:] == [
        "events[1].meter: no meter 'nowhere.x' in park 'kalundborg'",
        "events[2].magnitude: the share of supply lost, 0 < magnitude <= 1, got 1.5",
        "events[3].meter: 'novo.steam_in' is not a supplier of exchange 'steam'; suppliers are: asnaes.steam_out",
    ]


def test_scenario_schema_problems() -> None:
    with pytest.raises(ScenarioError) as info:
        parse_scenario({"name": "x", "events": [{"kind": "meltdown", "duration": "1h"}]})
    assert info.value.problems[0].startswith("events[0].kind: Input should be 'step_drop'")


def test_silence_label_matches_missing_readings(dq_run: tuple[list[SimReading], list[Label]]) -> None:
    readings, labels = dq_run
    lb = label(labels, "meter_silence")
    rs = of(readings, lb.target)
    inside = [r for r in rs if lb.start_ms <= r.ts_ms < lb.end_ms]
    assert inside == []
    assert lb.details["readings_affected"] == (lb.end_ms - lb.start_ms) // MIN
    assert any(r.ts_ms == lb.end_ms for r in rs)  # the meter is back after the window


def test_stuck_label(dq_run: tuple[list[SimReading], list[Label]]) -> None:
    readings, labels = dq_run
    lb = label(labels, "stuck_meter")
    inside = [r for r in of(readings, lb.target) if lb.start_ms <= r.ts_ms < lb.end_ms]
    assert len(inside) == lb.details["readings_affected"] == 60
    assert {r.value for r in inside} == {lb.details["stuck_value"]}
    assert all(r.tag == "stuck" for r in inside)


def test_spike_label_lists_the_spiked_timestamps(dq_run: tuple[list[SimReading], list[Label]]) -> None:
    readings, labels = dq_run
    lb = label(labels, "spikes")
    spiked = [r for r in of(readings, lb.target) if r.tag == "spike"]
    assert [r.ts_ms for r in spiked] == lb.details["spike_ts_ms"]
    assert len(spiked) == 4
    normal = [r.value for r in of(readings, lb.target) if r.tag is None]
    assert min(r.value for r in spiked) > 3 * max(normal)


def test_duplicates_label_counts_the_resent_readings(dq_run: tuple[list[SimReading], list[Label]]) -> None:
    readings, labels = dq_run
    lb = label(labels, "duplicates")
    keys = Counter((r.meter, r.seq) for r in readings)
    dups = [k for k, n in keys.items() if n > 1]
    assert all(k[0] == lb.target for k in dups)
    assert len(dups) == lb.details["duplicates"] > 0
    copies = defaultdict(list)
    for r in readings:
        if (r.meter, r.seq) in set(dups):
            copies[r.seq].append(r)
    for rs in copies.values():  # identical content: same event time, value and seq
        assert len({(r.ts_ms, r.value) for r in rs}) == 1
        assert lb.start_ms <= rs[0].ts_ms < lb.end_ms


def test_out_of_order_and_late(dq_run: tuple[list[SimReading], list[Label]]) -> None:
    readings, labels = dq_run
    ooo = label(labels, "out_of_order")
    rs = of(readings, ooo.target)
    inversions = sum(1 for a, b in zip(rs, rs[1:], strict=False) if b.ts_ms < a.ts_ms)
    assert inversions > 0
    assert all(ooo.start_ms <= r.ts_ms < ooo.end_ms for r in rs if r.tag == "out_of_order")
    assert sum(r.tag == "out_of_order" for r in rs) == ooo.details["readings_affected"]
    assert all(r.emit_ms - r.ts_ms <= ooo.magnitude * 1000 for r in rs)
    late = label(labels, "late")
    lrs = [r for r in of(readings, late.target) if r.tag == "late"]
    assert len(lrs) == late.details["readings_affected"] == 30
    assert {r.emit_ms - r.ts_ms for r in lrs} == {int(late.magnitude * 1000)}
    # send order: every reading comes out no earlier than its emit time's position
    assert [r.emit_ms for r in readings] == sorted(r.emit_ms for r in readings)


def test_clock_skew(dq_run: tuple[list[SimReading], list[Label]]) -> None:
    readings, labels = dq_run
    lb = label(labels, "clock_skew")
    skewed = [r for r in of(readings, lb.target) if r.tag == "clock_skew"]
    assert len(skewed) == lb.details["readings_affected"] == 120
    assert {r.ts_ms - r.emit_ms for r in skewed} == {int(lb.magnitude * 1000)}


def test_malformed_payloads_are_really_malformed(dq_run: tuple[list[SimReading], list[Label]]) -> None:
    import jsonschema

    from parkmon.contracts import reading_payload_schema

    readings, labels = dq_run
    lb = label(labels, "malformed")
    bad = [r for r in readings if r.raw is not None]
    assert all(r.meter == lb.target for r in bad)
    assert len(bad) == sum(lb.details["malformed"].values()) == lb.details["readings_affected"]
    validator = jsonschema.Draft202012Validator(reading_payload_schema())
    for r in bad:
        try:
            doc = json.loads(r.raw)  # type: ignore[arg-type]
        except json.JSONDecodeError:
            continue  # invalid_json
        ok_schema = validator.is_valid(doc)
        semantic = (doc.get("unit") in ("t", "MWh", "zorkmid") or doc.get("value") != doc.get("value")
                    or str(doc.get("meter", "")).endswith("ghost_meter"))
        assert not ok_schema or semantic, doc
    for r in readings:  # every good reading satisfies the shared payload schema
        if r.raw is None:
            validator.validate(r.payload())


def test_labels_round_trip_through_jsonl(dq_run: tuple[list[SimReading], list[Label]], tmp_path: Path) -> None:
    _, labels = dq_run
    path = tmp_path / "labels.jsonl"
    write_labels(path, labels)
    lines = path.read_text().splitlines()
    assert len(lines) == len(labels)
    first = json.loads(lines[0])
    assert {"v", "kind", "category", "target", "exchange", "meters", "start_ms", "end_ms",
            "magnitude", "unit", "details", "scenario", "id"} <= set(first)
    assert sorted(read_labels(path), key=lambda x: x.id) == sorted(labels, key=lambda x: x.id)


def test_supply_label_names_exchange_and_consumers(park: Park) -> None:
    sc = load_scenario(scenario_path("gypsum_trip"))
    _, labels = run_scenario(park, sc, start_ms=T0, duration_ms=HOUR)
    (lb,) = labels
    assert (lb.kind, lb.category, lb.target, lb.exchange) == ("trip", "supply", "gypsum", "gypsum")
    assert lb.meters == ["asnaes.gypsum_out"]
    assert lb.details["consumers"] == ["gyproc.gypsum_in"]
    assert (lb.start_ms, lb.end_ms, lb.magnitude) == (T0 + 8 * HOUR, T0 + 14 * HOUR, 1.0)
