"""Grafana dashboards as code (grafanalib), querying InfluxDB 2 with Flux.

`python -m grafana.build` regenerates grafana/dashboards/*.json, which Grafana loads through the
provisioning in grafana/provisioning/. The Flux queries follow docs/influxdb-schema.md.
"""

from __future__ import annotations

from typing import Any

import attr
from grafanalib.core import (
    Annotations,
    Dashboard,
    GridPos,
    Stat,
    Target,
    Template,
    Templating,
    Time,
    TimeSeries,
)

DATASOURCE_UID = "parkmon-influxdb"
DATASOURCE = {"type": "influxdb", "uid": DATASOURCE_UID}
BUCKET = "${bucket}"


@attr.s
class FluxTarget(Target):  # type: ignore[misc]
    """A Grafana InfluxDB (Flux) query target."""

    query: str = attr.ib(default="")

    def to_json_data(self) -> dict[str, Any]:
        return {"refId": self.refId, "query": self.query, "datasource": DATASOURCE}


def kpi_query(scope: str, entity: str, view: str, fields: list[str]) -> str:
    field_filter = " or ".join(f'r._field == "{f}"' for f in fields)
    return (
        f'from(bucket: "{BUCKET}")\n'
        "  |> range(start: v.timeRangeStart, stop: v.timeRangeStop)\n"
        f'  |> filter(fn: (r) => r._measurement == "kpi" and r.park == "${{park}}"'
        f' and r.scope == "{scope}" and r.entity =~ /^{entity}$/ and r.view == "{view}")\n'
        f"  |> filter(fn: (r) => {field_filter})\n"
        '  |> keep(columns: ["_time", "_value", "_field", "entity"])'
    )


def meter_query(field: str, carrier_regex: str) -> str:
    return (
        f'from(bucket: "{BUCKET}")\n'
        "  |> range(start: v.timeRangeStart, stop: v.timeRangeStop)\n"
        f'  |> filter(fn: (r) => r._measurement == "meter_window" and r.park == "${{park}}"'
        f' and r.carrier =~ /{carrier_regex}/ and r._field == "{field}")\n'
        "  |> aggregateWindow(every: v.windowPeriod, fn: mean, createEmpty: false)\n"
        '  |> keep(columns: ["_time", "_value", "meter"])'
    )


ALERTS_ANNOTATION_QUERY = (
    f'from(bucket: "{BUCKET}")\n'
    "  |> range(start: v.timeRangeStart, stop: v.timeRangeStop)\n"
    '  |> filter(fn: (r) => r._measurement == "alerts" and r.park == "${park}")\n'
    '  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")'
)


def _ts(title: str, query: str, unit: str, pos: GridPos, description: str = "") -> TimeSeries:
    return TimeSeries(title=title, dataSource=DATASOURCE, targets=[FluxTarget(query=query, refId="A")],
                      unit=unit, gridPos=pos, description=description)


def _stat(title: str, query: str, unit: str, pos: GridPos) -> Stat:
    return Stat(title=title, dataSource=DATASOURCE, targets=[FluxTarget(query=query, refId="A")],
                format=unit, gridPos=pos, reduceCalc="lastNotNull", graphMode="area")


def park_overview() -> Dashboard:
    """The control-room dashboard: circularity, carbon, exchange flows, mass balance, alerts."""
    park = "${park}"
    panels = [
        _stat("Material circularity (1 h)", kpi_query("park", park, "1h", ["material_circularity_ratio"]),
              "percentunit", GridPos(h=4, w=6, x=0, y=0)),
        _stat("Water reuse (1 h)", kpi_query("park", park, "1h", ["water_reuse_rate"]),
              "percentunit", GridPos(h=4, w=6, x=6, y=0)),
        _stat("Symbiotic exchange share (1 h)", kpi_query("park", park, "1h", ["symbiotic_exchange_share"]),
              "percentunit", GridPos(h=4, w=6, x=12, y=0)),
        _stat("Scope 1 + 2 emissions (24 h, t CO2e)",
              kpi_query("park", park, "24h", ["scope1_t_co2e", "scope2_t_co2e"]),
              "none", GridPos(h=4, w=6, x=18, y=0)),
        _ts("Circularity indicators, park (1 h rolling)",
            kpi_query("park", park, "1h", ["material_circularity_ratio", "waste_valorisation_rate",
                                           "energy_recovery_rate", "water_reuse_rate",
                                           "symbiotic_exchange_share"]),
            "percentunit", GridPos(h=8, w=12, x=0, y=4),
            "Waste valorisation: to a partner or recycling (R2-R11); energy recovery (R1) "
            "separately. Definitions: docs/kpis.md"),
        _ts("Carbon intensity by enterprise (1 h rolling, t CO2e / t)",
            kpi_query("enterprise", ".*", "1h", ["carbon_intensity_t_co2e_per_t"]),
            "none", GridPos(h=8, w=12, x=12, y=4)),
        _ts("Exchange outflow (supplier) per minute",
            kpi_query("exchange", ".*", "1m", ["outflow"]), "none", GridPos(h=8, w=12, x=0, y=12),
            "Quantity leaving the supplier's meters of each symbiotic exchange, canonical units"),
        _ts("Exchange mass balance (relative imbalance, 15 min)",
            kpi_query("exchange", ".*", "15m", ["relative_imbalance"]), "percentunit",
            GridPos(h=8, w=12, x=12, y=12),
            "Supplier outflow minus consumer inflow, over outflow; flagged beyond the allowed loss"),
        _ts("Energy flows (rate per hour)", meter_query("rate_per_h", "steam|heat|electricity|fuel_gas"),
            "none", GridPos(h=8, w=12, x=0, y=20)),
        _ts("Avoided emissions per exchange (1 h, t CO2e)",
            kpi_query("exchange", ".*", "1h", ["avoided_t_co2e"]), "none", GridPos(h=8, w=12, x=12, y=20)),
    ]
    return Dashboard(
        title="parkmon: park overview",
        uid="parkmon-park-overview",
        tags=["parkmon"],
        time=Time("now-6h", "now"),
        refresh="30s",
        timezone="browser",
        panels=panels,
        templating=Templating(list=[
            Template(name="park", query="kalundborg", type="textbox", default="kalundborg",
                     label="park"),
            Template(name="bucket", query="parkmon", type="textbox", default="parkmon",
                     label="bucket"),
        ]),
        annotations=Annotations(list=[{
            "name": "parkmon alerts",
            "datasource": DATASOURCE,
            "enable": True,
            "iconColor": "red",
            "target": {"refId": "Anno", "query": ALERTS_ANNOTATION_QUERY},
        }]),
    ).auto_panel_ids()


DASHBOARDS = {"park-overview": park_overview}
