"""Every Flux query of every generated dashboard, run against a real InfluxDB filled with a
simulated Kalundborg run (tests/support/control_room.py), returns rows of the shape its panel
needs. A panel whose query returns nothing fails.

Grafana is not available here, so the test does what Grafana's InfluxDB (Flux) data source does
before running a query: substitute the dashboard variables (${park}, ${bucket}, ${enterprise},
${carrier}, ${exchange}) and the range (v.timeRangeStart, v.timeRangeStop, v.windowPeriod).
The variables' own queries run first and must offer the values used.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from grafana.build import OUT_DIR
from grafana.dashboards import DASHBOARDS
from tests.support.control_room import START_MS, fill_bucket

pytestmark = pytest.mark.integration

HOUR_MS = 3_600_000


def _iso(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Influx:
    def __init__(self, handle: Any, bucket: str) -> None:
        from influxdb_client import InfluxDBClient

        self.bucket = bucket
        self.org = handle.org
        self.client = InfluxDBClient(url=handle.url, token=handle.token, org=handle.org,
                                     timeout=60_000)

    def run(self, query: str, variables: dict[str, str], start_ms: int, stop_ms: int
            ) -> list[list[dict[str, Any]]]:
        q = query.replace("${bucket}", self.bucket)
        for name, value in variables.items():
            q = q.replace("${" + name + "}", value).replace("$" + name, value)
        q = (q.replace("v.timeRangeStart", _iso(start_ms))
              .replace("v.timeRangeStop", _iso(stop_ms)).replace("v.windowPeriod", "5m"))
        assert "${" not in q and "v." not in q, f"unsubstituted variable in\n{q}"
        tables = self.client.query_api().query(q, org=self.org)
        return [[dict(r.values) for r in t.records] for t in tables]


@pytest.fixture(scope="module")
def filled(influx: Any) -> Iterator[tuple[Influx, Any]]:
    import os
    import uuid

    created = influx.create_bucket(f"grafana-{os.getpid()}-{uuid.uuid4().hex[:10]}")
    try:
        run = fill_bucket(influx.url, influx.token, influx.org, created["name"])
        db = Influx(influx, created["name"])
        yield db, run
        db.client.close()
    finally:
        influx.delete_bucket(created["id"])


def _dashboards() -> dict[str, dict[str, Any]]:
    return {n: json.loads((OUT_DIR / f"{n}.json").read_text()) for n in sorted(DASHBOARDS)}


def _flux_targets(panel: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for t in panel.get("targets", []) if t.get("datasource", {}).get("type") == "influxdb"]


def _variables(db: Influx, dash: dict[str, Any], run: Any) -> dict[str, str]:
    """park and bucket from the textboxes; query variables take a known value they offer."""
    want = {"enterprise": "asnaes", "carrier": "steam", "exchange": "steam"}
    values = {"park": run.park.id}
    for v in dash["templating"]["list"]:
        if v["type"] != "query":
            continue
        rows = [r for t in db.run(v["query"], values, run.start_ms, run.stop_ms) for r in t]
        offered = {r["_value"] for r in rows}
        assert want[v["name"]] in offered, (dash["uid"], v["name"], offered)
        values[v["name"]] = want[v["name"]]
    return values


def _keep_columns(query: str) -> list[str]:
    keeps = re.findall(r"keep\(columns: \[([^\]]*)\]\)", query)
    return re.findall(r'"([^"]+)"', keeps[-1]) if keeps else []


def _numeric(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _check_panel(panel: dict[str, Any], results: dict[str, list[list[dict[str, Any]]]],
                 queries: dict[str, str]) -> None:
    title, kind = panel["title"], panel["type"]
    for ref, tables in results.items():
        rows = [r for t in tables for r in t]
        assert rows, f"{title!r} ({kind}, {ref}) returned nothing"
        if kind == "timeseries":
            for r in rows:
                assert isinstance(r["_time"], datetime) and _numeric(r["_value"]), (title, r)
            for col in _keep_columns(queries[ref]):
                assert all(col in r for r in rows), (title, col)
        elif kind == "stat":
            assert any(_numeric(r.get("_value")) for r in rows), (title, rows[:3])
        elif kind == "table":
            cols = _keep_columns(queries[ref])
            assert cols, title
            for r in rows:
                assert set(cols) <= set(r), (title, cols, sorted(r))
        elif kind != "nodeGraph":
            raise AssertionError(f"no shape rule for panel type {kind}")
    if kind == "nodeGraph":
        nodes = [r for t in results["nodes"] for r in t]
        edges = [r for t in results["edges"] for r in t]
        assert len(results["nodes"]) == 1 and len(results["edges"]) == 1  # one frame each
        ids = {n["id"] for n in nodes}
        for n in nodes:
            assert isinstance(n["title"], str) and _numeric(n["mainstat"]), n
        for e in edges:
            assert {"id", "source", "target", "mainstat", "thickness", "color"} <= set(e), e
            assert e["source"] in ids and e["target"] in ids, e
            assert _numeric(e["mainstat"]) and e["thickness"] >= 1.0, e
            assert re.fullmatch(r"#[0-9A-F]{6}", e["color"]), e


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_every_flux_panel_returns_rows_of_its_shape(filled, name):
    db, run = filled
    dash = _dashboards()[name]
    values = _variables(db, dash, run)
    checked = 0
    for panel in dash["panels"]:
        targets = _flux_targets(panel)
        if not targets:
            continue
        queries = {t["refId"]: t["query"] for t in targets}
        results = {ref: db.run(q, values, run.start_ms, run.stop_ms) for ref, q in queries.items()}
        _check_panel(panel, results, queries)
        checked += 1
    for ann in dash["annotations"]["list"]:
        rows = [r for t in db.run(ann["target"]["query"], values, run.start_ms, run.stop_ms)
                for r in t]
        assert rows, f"{name}: annotation {ann['name']!r} returned nothing"
        assert all(isinstance(r["title"], str) and isinstance(r["text"], str) for r in rows)
    if name != "pipeline-health":
        assert checked >= 2, name


def _network_edges(db: Influx, run: Any, stop_ms: int) -> dict[str, dict[str, Any]]:
    dash = _dashboards()["network"]
    panel = next(p for p in dash["panels"] if p["type"] == "nodeGraph")
    q = next(t["query"] for t in panel["targets"] if t["refId"] == "edges")
    rows = [r for t in db.run(q, {"park": run.park.id}, run.start_ms, stop_ms) for r in t]
    return {r["id"]: r for r in rows}


def test_network_colours_follow_the_scenario(filled):
    """The steam trip (4 h .. 5 h) shows as dropped steam edges while it lasts, the gypsum
    decline (from 5 h, -60 %) as a declining gypsum edge at the end, the others as normal."""
    db, run = filled
    during_trip = _network_edges(db, run, START_MS + 4 * HOUR_MS + 50 * 60_000)
    steam = {k: v for k, v in during_trip.items() if v["detail__exchange"] == "steam"}
    assert len(steam) == 3
    assert {v["detail__state"] for v in steam.values()} == {"dropped"}
    assert {v["color"] for v in steam.values()} == {"#E02F44"}
    at_end = _network_edges(db, run, run.stop_ms)
    assert at_end["gypsum:asnaes>gyproc"]["detail__state"] == "declining"
    assert {v["detail__state"] for k, v in at_end.items() if not k.startswith("gypsum")} \
        == {"normal"}
    # every exchange of the park is drawn, each consumer (or supplier) once
    assert {v["detail__exchange"] for v in at_end.values()} == {x.id for x in run.park.exchanges}


def test_open_incidents_are_the_alerts_still_firing(filled):
    db, run = filled
    dash = _dashboards()["park-overview"]
    panel = next(p for p in dash["panels"] if p["title"] == "Open incidents"
                 and p["type"] == "stat")
    rows = [r for t in db.run(panel["targets"][0]["query"], {"park": run.park.id},
                               run.start_ms, run.stop_ms) for r in t]
    firing = [f for f, state in run.last_state.items() if state == "firing"]
    assert firing  # the gypsum decline is still open when the run ends
    assert rows[0]["_value"] == len(firing)
    table = next(p for p in dash["panels"] if p["title"] == "Open incidents"
                 and p["type"] == "table")
    listed = [r for t in db.run(table["targets"][0]["query"], {"park": run.park.id},
                                 run.start_ms, run.stop_ms) for r in t]
    assert len(listed) == len(firing)
    assert {r["subject"] for r in listed} == {"gypsum"}
