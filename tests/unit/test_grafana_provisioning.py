"""The control room's provisioning, offline: data sources, alert rules, Prometheus scrape
config, and the dashboards' PromQL against the metric names the services really export.

The exported names are read from the services' own prometheus-client collectors (built here on
empty counters), not from a list kept in the test. Dashboard JSON is also decoded with Grafana's
typed models (grafana-foundation-sdk, Grafana 11.6 like docker-compose.yml) and every key we
write must survive the round trip.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from grafana.build import OUT_DIR
from grafana.dashboards import DASHBOARDS

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
PROV = REPO / "grafana" / "provisioning"
METRIC = re.compile(r"\bparkmon_[a-z0-9_]+")


def _dashboards() -> dict[str, dict[str, Any]]:
    return {n: json.loads((OUT_DIR / f"{n}.json").read_text()) for n in sorted(DASHBOARDS)}


def _exported_names(tmp_path: Path) -> set[str]:
    from prometheus_client import CollectorRegistry

    from alerts.delivery.outbox import Outbox
    from alerts.metrics import AlertMetrics
    from alerts.service import ServiceCounters
    from apps.edge.metrics import EdgeMetrics
    from detect.worker import _DetectCollector
    from ingest.metrics import GatewayMetrics
    from streams.app import WorkerStats
    from streams.metrics import StreamsCollector, make_registry

    stats = WorkerStats()
    stats.by_reason["late_beyond_grace"] = 1  # labelled families show samples once they have one
    stats.close_to_stored_s.append(0.1)
    regs = [GatewayMetrics().registry,
            make_registry(StreamsCollector(stats, lambda: {"accepted": 0}, lambda: {},
                                           lambda: {0: 0}))]
    det = CollectorRegistry()
    counters = SimpleNamespace(records=0, readings=0, dead=0, events=0, ticks=0, idle_ticks=0)
    det.register(_DetectCollector(SimpleNamespace(  # type: ignore[arg-type]
        core=SimpleNamespace(counters=counters, last_tick_ms=0), lagging=[])))
    regs.append(det)
    alerts = AlertMetrics(ServiceCounters(), lambda: Outbox(tmp_path / "o.sqlite", lambda: 0))
    alerts.on_result("ops", __import__("alerts.delivery.webhook", fromlist=["Outcome"]).Outcome.DEAD)
    regs.append(alerts.registry)
    edge_svc = SimpleNamespace(stats_view={}, inbox=SimpleNamespace(qsize=lambda: 0))
    regs.append(EdgeMetrics(edge_svc).registry)  # type: ignore[arg-type]
    names: set[str] = set()
    for reg in regs:
        for metric in reg.collect():
            names |= {s.name for s in metric.samples}
    return names


def _alert_rules() -> list[dict[str, Any]]:
    data = yaml.safe_load((PROV / "alerting" / "pipeline-health.yaml").read_text())
    assert data["apiVersion"] == 1
    return [r for g in data["groups"] for r in g["rules"]]


def test_every_promql_metric_is_one_a_service_exports(tmp_path: Path) -> None:
    exported = _exported_names(tmp_path)
    asked: dict[str, str] = {}
    for name, d in _dashboards().items():
        for p in d["panels"]:
            for t in p.get("targets", []):
                if t["datasource"]["type"] == "prometheus":
                    asked |= {m: f"{name}: {p['title']}" for m in METRIC.findall(t["expr"])}
    for rule in _alert_rules():
        for q in rule["data"]:
            if q["datasourceUid"] == "parkmon-prometheus":
                asked |= {m: f"alert rule {rule['uid']}" for m in METRIC.findall(q["model"]["expr"])}
    assert len(asked) >= 20
    missing = {m: where for m, where in asked.items() if m not in exported}
    assert not missing, f"PromQL asks for metrics no service exports: {missing}"


def test_every_panel_uses_a_provisioned_data_source() -> None:
    uids = {}
    for f in (PROV / "datasources").glob("*.yaml"):
        for ds in yaml.safe_load(f.read_text())["datasources"]:
            uids[ds["uid"]] = ds["type"]
            assert all("${" in str(v) for k, v in (ds.get("secureJsonData") or {}).items())
    assert uids == {"parkmon-influxdb": "influxdb", "parkmon-prometheus": "prometheus"}
    for name, d in _dashboards().items():
        for p in d["panels"]:
            assert uids[p["datasource"]["uid"]] == p["datasource"]["type"], (name, p["title"])
            for t in p["targets"]:
                assert uids[t["datasource"]["uid"]] == t["datasource"]["type"]
                assert (t.get("query") if t["datasource"]["type"] == "influxdb" else t["expr"])
        for v in d["templating"]["list"]:
            if v["type"] == "query":
                assert v["datasource"]["uid"] in uids


def test_alert_rules_are_well_formed() -> None:
    rules = _alert_rules()
    assert {r["labels"]["service"] for r in rules} == {"gateway", "streams", "detect", "alerts"}
    assert len({r["uid"] for r in rules}) == len(rules)
    for r in rules:
        refs = {q["refId"] for q in r["data"]}
        assert r["condition"] in refs, r["uid"]
        for q in r["data"]:
            assert q["datasourceUid"] in ("parkmon-prometheus", "__expr__"), r["uid"]
            assert q["model"]["refId"] == q["refId"]
            if q["datasourceUid"] == "__expr__":
                assert q["model"]["expression"] in refs
        assert re.fullmatch(r"\d+[smh]", r["for"]) and r["annotations"]["summary"]


def test_prometheus_scrapes_every_parkmon_service_on_the_port_it_serves() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    svcs = compose["services"]
    prom = yaml.safe_load((REPO / "deploy" / "prometheus" / "prometheus.yml").read_text())
    targets = {t for job in prom["scrape_configs"] for sc in job["static_configs"]
               for t in sc["targets"]}
    for name in ("gateway", "streams-worker", "detect", "alerts"):
        svc = svcs[name]
        cmd, env = svc["command"], svc.get("environment", {})
        if "--metrics-port" in cmd:
            port = cmd[cmd.index("--metrics-port") + 1]
        else:
            port = env["PARKMON_DETECT_METRICS_PORT"]
        host_ok = ("--metrics-host" in cmd and cmd[cmd.index("--metrics-host") + 1] == "0.0.0.0") \
            or any(k.endswith("_METRICS_HOST") and v == "0.0.0.0" for k, v in env.items())
        assert host_ok, f"{name} serves /metrics on loopback only: Prometheus cannot scrape it"
        assert f"{name}:{port}" in targets, (name, port, targets)
    p = svcs["prometheus"]
    assert "./deploy/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in p["volumes"]
    assert svcs["grafana"]["environment"]["PARKMON_PROMETHEUS_URL"] == "http://prometheus:9090"


def _sdk() -> Any:
    try:
        from grafana_foundation_sdk.cog import plugins
        from grafana_foundation_sdk.models import dashboard
    except ImportError:
        pytest.fail("grafana-foundation-sdk is not installed: pip install -e '.[dev]'",
                    pytrace=False)
    plugins.register_default_plugins()
    return dashboard


def _lost(ours: Any, theirs: Any, path: str = "") -> list[str]:
    """Keys (and scalar values) of `ours` that the typed round trip does not give back."""
    if isinstance(ours, dict):
        if not isinstance(theirs, dict):
            return [path or "/"]
        out = []
        for k, v in ours.items():
            if v is None or v == {} or v == []:
                continue
            if k not in theirs:
                out.append(f"{path}/{k}")
            else:
                out += _lost(v, theirs[k], f"{path}/{k}")
        return out
    if isinstance(ours, list):
        if not isinstance(theirs, list) or len(theirs) != len(ours):
            return [path]
        return [x for i, (a, b) in enumerate(zip(ours, theirs, strict=True))
                for x in _lost(a, b, f"{path}[{i}]")]
    return [] if ours == theirs else [f"{path}={ours!r}"]


# grafanalib writes a few keys of the legacy (pre-schema) dashboard model that Grafana still
# reads and ignores; they are not in the typed schema
LEGACY = re.compile(r"/(rows|hideControls|sharedCrosshair|style|editable|gnetId|version|"
                    r"height|span|minSpan|error|cacheTimeout|maxPerRow|repeatDirection|"
                    r"timepicker/(refresh_intervals|time_options|collapse|enable|notice|now|"
                    r"status|type|hidden)|links\[\d+\]/(asDropdown|icon|includeVars|keepTime|"
                    r"tags|targetBlank|tooltip|type|title|url)|templating/list\[\d+\]/.*|"
                    r"annotations/list\[\d+\]/.*|panels\[\d+\]/(options|fieldConfig)/.*)$")


def _no_nulls(x: Any) -> Any:
    """grafanalib writes unset options as null; Grafana and the schema treat them as absent."""
    if isinstance(x, dict):
        return {k: _no_nulls(v) for k, v in x.items() if v is not None}
    if isinstance(x, list):
        return [_no_nulls(v) for v in x]
    return x


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_dashboard_json_decodes_with_grafanas_typed_models(name: str) -> None:
    dashboard = _sdk()
    ours = _no_nulls(_dashboards()[name])
    typed = dashboard.Dashboard.from_json(ours)
    back = json.loads(json.dumps(typed.to_json(), default=lambda o: o.to_json()))
    lost = [p for p in _lost(ours, back) if not LEGACY.search(p)]
    assert not lost, f"{name}: keys Grafana's dashboard schema does not know: {lost[:20]}"
    assert [p["type"] for p in back["panels"]] == [p["type"] for p in ours["panels"]]
