"""Panel and target building blocks on top of grafanalib (InfluxDB Flux and Prometheus)."""

from __future__ import annotations

from typing import Any

import attr
from grafanalib.core import GridPos, Panel, Stat, Table, Target, TimeSeries

INFLUX_UID = "parkmon-influxdb"
PROMETHEUS_UID = "parkmon-prometheus"
INFLUX = {"type": "influxdb", "uid": INFLUX_UID}
PROMETHEUS = {"type": "prometheus", "uid": PROMETHEUS_UID}


@attr.s
class FluxTarget(Target):  # type: ignore[misc]
    """A Grafana InfluxDB (Flux) query target."""

    query: str = attr.ib(default="")

    def to_json_data(self) -> dict[str, Any]:
        return {"refId": self.refId, "query": self.query, "datasource": INFLUX}


@attr.s
class PromTarget(Target):  # type: ignore[misc]
    """A Prometheus (PromQL) query target."""

    def to_json_data(self) -> dict[str, Any]:
        return {"refId": self.refId, "expr": self.expr, "legendFormat": self.legendFormat,
                "datasource": PROMETHEUS}


@attr.s
class NodeGraph(Panel):  # type: ignore[misc]
    """Grafana's Node Graph panel: a `nodes` frame (id, title, mainstat...) and an `edges` frame
    (id, source, target, mainstat, thickness, color)."""

    def to_json_data(self) -> dict[str, Any]:
        return self.panel_json({"type": "nodeGraph",
                                "options": {"nodes": {"mainStatUnit": "none",
                                                      "secondaryStatUnit": "none"},
                                            "edges": {"mainStatUnit": "none",
                                                      "secondaryStatUnit": "percentunit"}}})


@attr.s
class SchemaTable(Table):  # type: ignore[misc]
    """grafanalib's Table without its legacy panel-level `color` / `fontSize` keys, which the
    Grafana 11 dashboard schema does not have (tests/unit/test_grafana_provisioning.py)."""

    def to_json_data(self) -> dict[str, Any]:
        data: dict[str, Any] = super().to_json_data()
        data.pop("color", None)
        data.pop("fontSize", None)
        return data


def flux_targets(*queries: str, ref_ids: tuple[str, ...] | None = None) -> list[FluxTarget]:
    ids = ref_ids or tuple("ABCDEFGH"[: len(queries)])
    return [FluxTarget(query=q, refId=r) for q, r in zip(queries, ids, strict=True)]


def ts(title: str, query: str, unit: str, pos: GridPos, description: str = "",
       links: list[dict[str, Any]] | None = None) -> TimeSeries:
    return TimeSeries(title=title, dataSource=INFLUX, targets=flux_targets(query), unit=unit,
                      gridPos=pos, description=description, links=links or [])


def stat(title: str, query: str, unit: str, pos: GridPos, description: str = "") -> Stat:
    return Stat(title=title, dataSource=INFLUX, targets=flux_targets(query), format=unit,
                gridPos=pos, reduceCalc="lastNotNull", graphMode="area",
                description=description)


def table(title: str, query: str, pos: GridPos, description: str = "") -> Table:
    return SchemaTable(title=title, dataSource=INFLUX, targets=flux_targets(query), gridPos=pos,
                 description=description)


def prom_ts(title: str, exprs: list[tuple[str, str]], unit: str, pos: GridPos,
            description: str = "") -> TimeSeries:
    targets = [PromTarget(expr=e, legendFormat=legend, refId="ABCDEFGH"[i])
               for i, (e, legend) in enumerate(exprs)]
    return TimeSeries(title=title, dataSource=PROMETHEUS, targets=targets, unit=unit,
                      gridPos=pos, description=description)


def dashboard_link(title: str, uid: str, vars_: str = "var-park=${park}&var-bucket=${bucket}"
                   ) -> dict[str, Any]:
    return {"title": title, "url": f"/d/{uid}?{vars_}&${{__url_time_range}}",
            "targetBlank": False}
