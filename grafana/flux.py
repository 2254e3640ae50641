"""The Flux queries of the dashboards, following docs/influxdb-schema.md.

Measurements read: `kpi` (indicators per park / enterprise / exchange and view), `meter_window`
(one point per meter and base minute) and `alerts` (alert state changes, alerts.influx_annotations).
Grafana substitutes `${park}`, `${bucket}`, `${enterprise}`, `${carrier}` (dashboard variables) and
`v.timeRangeStart`, `v.timeRangeStop`, `v.windowPeriod` (the panel's range) before running them;
tests/integration/test_grafana_flux.py does the same against a real InfluxDB.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

BUCKET = "${bucket}"
PARK = "${park}"
RANGE = "  |> range(start: v.timeRangeStart, stop: v.timeRangeStop)\n"
#: the live rate of an exchange edge: the mean over this last part of the range
RECENT = "15m"
#: live / typical rate below which an edge is declining / dropped (docs/control-room.md)
DECLINING_BELOW = 0.8
DROPPED_BELOW = 0.2
STATE_COLOURS = {"normal": "#56A64B", "declining": "#FF9830", "dropped": "#E02F44",
                 "no data": "#8E8E8E"}


def _src() -> str:
    return f'from(bucket: "{BUCKET}")\n' + RANGE


def _fields(fields: Iterable[str]) -> str:
    return " or ".join(f'r._field == "{f}"' for f in fields)


VIEW_LENGTH = {"1m": "1m", "15m": "15m", "1h": "1h", "24h": "24h"}


def kpi_query(scope: str, entity: str, view: str, fields: list[str]) -> str:
    """Indicator series: one table per (entity, field), columns _time, _value, _field, entity.

    A `kpi` point is stamped with its view's start; the query reads the views that end inside
    the panel's range and plots each at its end (timeShift by the view length), so "the last
    24 h" at 10:00 is the view 10:00 yesterday .. 10:00."""
    length = VIEW_LENGTH[view]
    return (
        'import "date"\n\n'
        f'from(bucket: "{BUCKET}")\n'
        f"  |> range(start: date.sub(d: {length}, from: v.timeRangeStart),"
        f" stop: date.sub(d: {length}, from: v.timeRangeStop))\n"
        f'  |> filter(fn: (r) => r._measurement == "kpi" and r.park == "{PARK}"'
        f' and r.scope == "{scope}" and r.entity =~ /^{entity}$/ and r.view == "{view}")\n'
        f"  |> filter(fn: (r) => {_fields(fields)})\n"
        f"  |> timeShift(duration: {length})\n"
        '  |> keep(columns: ["_time", "_value", "_field", "entity"])'
    )


def kpi_sum_query(scope: str, entity: str, view: str, fields: list[str], label: str) -> str:
    """The sum of several indicator fields per timestamp (e.g. scope 1 + scope 2)."""
    return (
        kpi_query(scope, entity, view, fields)
        + '\n  |> group(columns: ["_time"])\n  |> sum()\n  |> group()\n'
        f'  |> map(fn: (r) => ({{r with _field: "{label}"}}))\n'
        '  |> keep(columns: ["_time", "_value", "_field"])'
    )


def meter_query(field: str, carrier_regex: str, extra: str = "",
                fn: str = "mean") -> str:
    """meter_window field per meter, aggregated to the panel's resolution."""
    return (
        _src()
        + f'  |> filter(fn: (r) => r._measurement == "meter_window" and r.park == "{PARK}"'
        f' and r.carrier =~ /{carrier_regex}/ and r._field == "{field}"{extra})\n'
        f"  |> aggregateWindow(every: v.windowPeriod, fn: {fn}, createEmpty: false)\n"
        '  |> keep(columns: ["_time", "_value", "meter"])'
    )


def alerts_annotation_query(extra: str = "") -> str:
    """Alert state changes as annotations (title, text, tags)."""
    return (
        _src()
        + f'  |> filter(fn: (r) => r._measurement == "alerts" and r.park == "{PARK}"{extra})\n'
        '  |> filter(fn: (r) => r._field == "title" or r._field == "text")\n'
        '  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")\n'
        '  |> group()\n'
        '  |> keep(columns: ["_time", "title", "text", "alertname", "state", "exchange", "meter"])'
    )


def latest_alert_state(extra: str = "") -> str:
    """The last state change of each alert (fingerprint) in the range, as one table."""
    return (
        _src()
        + f'  |> filter(fn: (r) => r._measurement == "alerts" and r.park == "{PARK}"{extra})\n'
        '  |> filter(fn: (r) => r._field == "active" or r._field == "text")\n'
        '  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")\n'
        '  |> group(columns: ["fingerprint"])\n'
        '  |> sort(columns: ["_time"])\n'
        "  |> last(column: \"_time\")\n"
        "  |> group()"
    )


def open_incidents_table(extra: str = "", active: str = "r.active == 1") -> str:
    """Alerts whose last state change in the range is `firing` (or any, with `active`)."""
    return (
        latest_alert_state(extra)
        + f"\n  |> filter(fn: (r) => {active})\n"
        "  |> map(fn: (r) => ({_time: r._time, alert: r.alertname, severity: r.severity,\n"
        '      state: if r.active == 1 then "firing" else "resolved",\n'
        '      subject: if exists r.exchange then r.exchange else if exists r.meter then r.meter'
        ' else "",\n'
        "      summary: r.text}))\n"
        '  |> keep(columns: ["_time", "alert", "severity", "state", "subject", "summary"])\n'
        '  |> sort(columns: ["_time"], desc: true)'
    )


def open_incidents_count(extra: str = "") -> str:
    """How many alerts are open (0 when none: a row is always returned)."""
    return (
        'import "array"\n\n'
        "open = " + latest_alert_state(extra).replace("\n", "\n  ")
        + "\n    |> filter(fn: (r) => r.active == 1)\n"
        '    |> map(fn: (r) => ({r with _value: 1}))\n'
        '    |> keep(columns: ["_value"])\n'
        "none = array.from(rows: [{_value: 0}])\n"
        "union(tables: [open, none])\n"
        "  |> sum()\n"
        '  |> map(fn: (r) => ({_value: r._value, _field: "open incidents"}))'
    )


def dq_alerts_table() -> str:
    """Data-quality alerts (silent / stuck / out of range / disagrees) per meter in the range."""
    return (
        _src()
        + f'  |> filter(fn: (r) => r._measurement == "alerts" and r.park == "{PARK}"'
        ' and r.alertname == "data_quality" and r._field == "active")\n'
        '  |> group(columns: ["meter", "enterprise", "dq_kind"])\n'
        '  |> reduce(identity: {changes: 0, firing: 0, last_time: time(v: 0), active: 0},\n'
        "      fn: (r, accumulator) => ({changes: accumulator.changes + 1,\n"
        "          firing: accumulator.firing + r._value,\n"
        "          last_time: if r._time > accumulator.last_time then r._time"
        " else accumulator.last_time,\n"
        "          active: if r._time > accumulator.last_time then r._value"
        " else accumulator.active}))\n"
        "  |> group()\n"
        '  |> rename(columns: {firing: "times_fired", active: "open_now", last_time: "last_change"})\n'
        '  |> keep(columns: ["meter", "enterprise", "dq_kind", "times_fired", "open_now",'
        ' "last_change"])'
    )


def _flux_rows(rows: list[dict[str, str]]) -> str:
    out = []
    for row in rows:
        out.append("{" + ", ".join(f"{k}: {json.dumps(v)}" for k, v in row.items()) + "}")
    return "[\n    " + ",\n    ".join(out) + ",\n]"


@dataclass(frozen=True)
class Edge:
    """One drawn edge: an exchange from a supplier enterprise to a consumer enterprise, whose
    live rate is read from `meter` (the consumer meter; the supplier meter when the exchange has
    several suppliers and one consumer)."""

    id: str
    exchange: str
    source: str
    target: str
    meter: str
    unit: str


def network_edges(park: object) -> list[Edge]:
    out: list[Edge] = []
    meters = park.meters_by_id  # type: ignore[attr-defined]
    for x in park.exchanges:  # type: ignore[attr-defined]
        if len(x.suppliers) > 1 and len(x.consumers) == 1:
            pairs = [(s, x.consumers[0], s) for s in x.suppliers]
        else:
            pairs = [(x.suppliers[0], c, c) for c in x.consumers]
        for sup, con, via in pairs:
            src, dst = meters[sup].enterprise, meters[con].enterprise
            out.append(Edge(f"{x.id}:{src}>{dst}", x.id, src, dst, via, f"{x.quantity_unit}/h"))
    return out


def node_graph_nodes(park: object) -> str:
    """Nodes frame: id, title, subtitle, mainstat (avoided t CO2e, latest 1 h view),
    secondarystat (scope 1 + 2 t CO2e, same view); enterprises without data keep 0."""
    rows = [{"id": e.id, "title": e.name, "subtitle": e.sector}
            for e in park.enterprises]  # type: ignore[attr-defined]
    return (
        'import "array"\nimport "join"\n\n'
        f"enterprises = array.from(rows: {_flux_rows(rows)})\n"
        f'live = from(bucket: "{BUCKET}")\n  ' + RANGE.strip() + "\n"
        f'  |> filter(fn: (r) => r._measurement == "kpi" and r.park == "{PARK}"'
        ' and r.scope == "enterprise" and r.view == "1h")\n'
        '  |> filter(fn: (r) => r._field == "avoided_t_co2e" or r._field == "scope1_t_co2e"'
        ' or r._field == "scope2_t_co2e")\n'
        "  |> last()\n"
        '  |> pivot(rowKey: ["entity"], columnKey: ["_field"], valueColumn: "_value")\n'
        "  |> group()\n"
        "join.left(left: enterprises, right: live, on: (l, r) => l.id == r.entity,\n"
        "    as: (l, r) => ({id: l.id, title: l.title, subtitle: l.subtitle,\n"
        "        mainstat: if exists r.avoided_t_co2e then r.avoided_t_co2e else 0.0,\n"
        "        secondarystat: (if exists r.scope1_t_co2e then r.scope1_t_co2e else 0.0)\n"
        "            + (if exists r.scope2_t_co2e then r.scope2_t_co2e else 0.0)}))"
    )


def node_graph_edges(park: object) -> str:
    """Edges frame: id, source, target, mainstat (live rate, mean of the last 15 min of the
    range), secondarystat (live / typical, typical = median over the range), thickness (1..6 px
    with that ratio), color and detail__state: normal / declining / dropped / no data."""
    edges = network_edges(park)
    rows = [{"id": e.id, "source": e.source, "target": e.target, "meter": e.meter,
             "exchange": e.exchange, "unit": e.unit} for e in edges]
    meters = json.dumps(sorted({e.meter for e in edges}))
    c = STATE_COLOURS
    return (
        'import "array"\nimport "date"\nimport "join"\n\n'
        f"topology = array.from(rows: {_flux_rows(rows)})\n"
        f'rates = from(bucket: "{BUCKET}")\n  ' + RANGE.strip() + "\n"
        f'  |> filter(fn: (r) => r._measurement == "meter_window" and r.park == "{PARK}"'
        ' and r._field == "rate_per_h")\n'
        f"  |> filter(fn: (r) => contains(value: r.meter, set: {meters}))\n"
        'typical = rates |> median() |> group() |> map(fn: (r) => ({meter: r.meter,'
        " typical: r._value}))\n"
        f"recent = rates |> filter(fn: (r) => r._time >= date.sub(d: {RECENT},"
        " from: v.timeRangeStop))\n"
        "  |> mean() |> group() |> map(fn: (r) => ({meter: r.meter, recent: r._value}))\n"
        "live = join.left(left: typical, right: recent, on: (l, r) => l.meter == r.meter,\n"
        "    as: (l, r) => ({meter: l.meter, typical: l.typical,\n"
        "        recent: if exists r.recent then r.recent else -1.0}))\n"
        "join.left(left: topology, right: live, on: (l, r) => l.meter == r.meter,\n"
        "    as: (l, r) => {\n"
        "        known = exists r.recent and r.recent >= 0.0\n"
        "        ratio = if known and r.typical > 0.0 then r.recent / r.typical"
        " else if known then 1.0 else 0.0\n"
        '        state = if not known then "no data"\n'
        f'            else if ratio < {DROPPED_BELOW} then "dropped"\n'
        f'            else if ratio < {DECLINING_BELOW} then "declining" else "normal"\n'
        "        return {id: l.id, source: l.source, target: l.target,\n"
        "            mainstat: if known then r.recent else 0.0, secondarystat: ratio,\n"
        "            thickness: 1.0 + 2.5 * (if ratio > 2.0 then 2.0 else ratio),\n"
        f'            color: if state == "normal" then "{c["normal"]}"'
        f' else if state == "declining" then "{c["declining"]}"\n'
        f'                else if state == "dropped" then "{c["dropped"]}" else "{c["no data"]}",\n'
        "            detail__state: state, detail__exchange: l.exchange, detail__meter: l.meter,\n"
        "            detail__unit: l.unit}\n"
        "    })"
    )


def tag_values(tag: str, predicate: str) -> str:
    """Values of a tag, for a dashboard variable."""
    return (
        'import "influxdata/influxdb/schema"\n\n'
        f'schema.tagValues(bucket: "{BUCKET}", tag: "{tag}",\n'
        f"    predicate: (r) => {predicate}, start: v.timeRangeStart, stop: v.timeRangeStop)"
    )


def substitute(query: str, *, bucket: str, start_iso: str, stop_iso: str,
               window: str = "5m", variables: dict[str, str] | None = None) -> str:
    """What Grafana does before running a query: dashboard variables and the panel's range."""
    q = query.replace("${bucket}", bucket)
    for name, value in (variables or {}).items():
        q = q.replace("${" + name + "}", value)
    return (q.replace("v.timeRangeStart", start_iso).replace("v.timeRangeStop", stop_iso)
            .replace("v.windowPeriod", window))
