"""The committed dashboard JSON is what the grafanalib code generates, and its queries only use
measurements, fields and tags that the InfluxDB schema (streams.core.points / kpis) produces."""

import json
import re
from pathlib import Path

import pytest

from grafana.build import OUT_DIR, render
from grafana.dashboards import DASHBOARDS

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_committed_json_is_up_to_date(name):
    committed = (OUT_DIR / f"{name}.json").read_text()
    assert committed == render(name), "run `python -m grafana.build` and commit the result"


def _queries(d):
    for p in d["panels"]:
        for t in p.get("targets", []):
            yield p["title"], t["query"]


def test_every_panel_has_a_flux_query_on_the_provisioned_datasource():
    d = json.loads(render("park-overview"))
    assert d["uid"] == "parkmon-park-overview"
    assert len(d["panels"]) >= 8
    for p in d["panels"]:
        assert p["datasource"]["uid"] == "parkmon-influxdb"
        assert p["targets"], p["title"]
    ds = (ROOT / "grafana/provisioning/datasources/influxdb.yaml").read_text()
    assert "uid: parkmon-influxdb" in ds and "version: Flux" in ds
    assert "${PARKMON_INFLUX_TOKEN}" in ds  # the token is never committed


def test_queried_kpi_fields_exist_in_the_kpi_engine():
    """Each kpi field a panel asks for is one the engine's indicator families return."""
    import inspect

    from streams.core import kpis
    from streams.core.kpis import carbon, circularity, energy, massbalance

    source = "".join(inspect.getsource(m) for m in (kpis, carbon, circularity, energy, massbalance))
    d = json.loads(render("park-overview"))
    asked = set()
    for _title, q in _queries(d):
        if '_measurement == "kpi"' in q:
            asked |= set(re.findall(r'r\._field == "([a-z0-9_]+)"', q))
    assert asked
    missing = {f for f in asked if f'"{f}"' not in source}
    assert not missing, f"dashboard asks for fields the engine never writes: {missing}"
