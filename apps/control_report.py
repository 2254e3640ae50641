"""`parkmon report`: an HTML control-room snapshot from a live InfluxDB, for a time range.

The page shows what the Grafana control room shows, computed with the same Flux queries
(grafana/flux.py): the park's indicators (latest 1 h and 24 h views ending in the range), the
symbiosis network with each exchange's state, a Sankey of the flows exchanged over the range,
and the incidents (alert state changes). Connection: PARKMON_INFLUX_URL / _TOKEN / _ORG /
_BUCKET or --url/--token/--org/--bucket.
"""

from __future__ import annotations

import argparse
import html
import json
import math
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from grafana import flux

KPIS = [("material_circularity_ratio", "Material circularity", "pct"),
        ("waste_valorisation_rate", "Waste valorisation", "pct"),
        ("water_reuse_rate", "Water reuse", "pct"),
        ("energy_recovery_rate", "Energy recovery", "pct"),
        ("symbiotic_exchange_share", "Symbiotic exchange share", "pct"),
        ("scope1_t_co2e", "Scope 1, t CO2e", "num"),
        ("scope2_t_co2e", "Scope 2, t CO2e", "num"),
        ("carbon_intensity_t_co2e_per_t", "Carbon intensity, t CO2e / t", "num"),
        ("energy_intensity_mwh_per_t", "Energy intensity, MWh / t", "num"),
        ("avoided_t_co2e", "Avoided CO2e, t", "num")]
VIEWS = ("1h", "24h")


def _parser() -> argparse.ArgumentParser:
    from parkmon.config import InfluxSettings

    s = InfluxSettings()
    p = argparse.ArgumentParser(prog="parkmon report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default=s.url)
    p.add_argument("--token", default=s.token.get_secret_value() if s.token else None)
    p.add_argument("--org", default=s.org)
    p.add_argument("--bucket", default=s.bucket)
    p.add_argument("--park", help="park file (default: the embedded Kalundborg-like park)")
    p.add_argument("--start", required=True, help="range start, ISO 8601 UTC")
    p.add_argument("--stop", required=True, help="range stop, ISO 8601 UTC")
    p.add_argument("--out", default="parkmon-report.html")
    p.add_argument("--json", dest="json_out", help="also write the figures as JSON")
    return p


def _iso(text: str) -> str:
    dt = datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


class Queries:
    def __init__(self, url: str, token: str, org: str, bucket: str, park: Any, start: str,
                 stop: str) -> None:
        from influxdb_client import InfluxDBClient

        self.client = InfluxDBClient(url=url, token=token, org=org, timeout=60_000)
        self.org, self.bucket, self.park = org, bucket, park
        self.start, self.stop = start, stop

    def rows(self, query: str) -> list[dict[str, Any]]:
        q = flux.substitute(query, bucket=self.bucket, start_iso=self.start, stop_iso=self.stop,
                            variables={"park": self.park.id})
        return [dict(r.values) for t in self.client.query_api().query(q, org=self.org)
                for r in t.records]

    def close(self) -> None:
        self.client.close()


def collect(q: Queries) -> dict[str, Any]:
    """Every figure of the page, from InfluxDB."""
    park = q.park
    kpis: dict[str, dict[str, Any]] = {}
    for view in VIEWS:
        latest: dict[str, Any] = {}
        for r in q.rows(flux.kpi_query("park", park.id, view, [k for k, _, _ in KPIS])):
            if r["_field"] not in latest or r["_time"] >= latest[r["_field"]][0]:
                latest[r["_field"]] = (r["_time"], float(r["_value"]))
        kpis[view] = {f: {"value": v, "view_end": t.strftime("%Y-%m-%dT%H:%M:%SZ")}
                      for f, (t, v) in latest.items()}
    nodes = q.rows(flux.node_graph_nodes(park))
    edges = q.rows(flux.node_graph_edges(park))
    flows = _flows(q, flux.network_edges(park))
    incidents = q.rows(flux.alerts_annotation_query())
    open_now = q.rows(flux.open_incidents_table())
    keep = ("id", "title", "subtitle", "mainstat", "secondarystat")
    return {
        "park": park.id, "start": q.start, "stop": q.stop, "kpis": kpis,
        "nodes": [{k: n.get(k) for k in keep} for n in nodes],
        "edges": [{k: v for k, v in e.items() if k not in ("result", "table")} for e in edges],
        "flows": flows,
        "incidents": [{"time": r["_time"].strftime("%Y-%m-%d %H:%M"), "title": r["title"],
                       "state": r.get("state"), "text": r["text"]}
                      for r in sorted(incidents, key=lambda r: r["_time"])],
        "open": [{"alert": r["alert"], "subject": r["subject"], "summary": r["summary"]}
                 for r in open_now],
    }


def _flows(q: Queries, edges: list[flux.Edge]) -> list[dict[str, Any]]:
    """Quantity exchanged over the range per drawn edge (sum of its meter's windows)."""
    meters = json.dumps(sorted({e.meter for e in edges}))
    rows = q.rows(
        f'from(bucket: "{flux.BUCKET}")\n' + flux.RANGE
        + f'  |> filter(fn: (r) => r._measurement == "meter_window" and r.park == "{flux.PARK}"'
        ' and r._field == "quantity")\n'
        f"  |> filter(fn: (r) => contains(value: r.meter, set: {meters}))\n"
        '  |> group(columns: ["meter"])\n  |> sum()')
    total = {r["meter"]: float(r["_value"]) for r in rows}
    return [{"id": e.id, "source": e.source, "target": e.target, "exchange": e.exchange,
             "unit": e.unit.removesuffix("/h"), "quantity": total.get(e.meter, 0.0)}
            for e in edges]


def _fmt(v: float, kind: str) -> str:
    return f"{v:.1%}" if kind == "pct" else f"{v:,.2f}"


def _network_figure(data: dict[str, Any]) -> Any:
    import plotly.graph_objects as go

    nodes = data["nodes"]
    pos = {n["id"]: (math.cos(2 * math.pi * i / len(nodes)), math.sin(2 * math.pi * i / len(nodes)))
           for i, n in enumerate(nodes)}
    fig = go.Figure()
    for e in data["edges"]:
        (x0, y0), (x1, y1) = pos[e["source"]], pos[e["target"]]
        fig.add_scatter(x=[x0, x1], y=[y0, y1], mode="lines", showlegend=False,
                        line={"color": e["color"], "width": e["thickness"]},
                        hovertext=f"{e['id']}: {e['detail__state']}, {e['mainstat']:.2f} "
                                  f"{e['detail__unit']}", hoverinfo="text")
    fig.add_scatter(x=[pos[n["id"]][0] for n in nodes], y=[pos[n["id"]][1] for n in nodes],
                    mode="markers+text", text=[n["id"] for n in nodes], textposition="top center",
                    marker={"size": 18, "color": "#3274D9"}, showlegend=False,
                    hovertext=[n["title"] for n in nodes], hoverinfo="text")
    fig.update_layout(title="Symbiosis network (edge colour: exchange state at the range's end)",
                      height=560, xaxis={"visible": False}, yaxis={"visible": False})
    return fig


def _sankey_figure(data: dict[str, Any]) -> Any:
    import plotly.graph_objects as go

    ids = [n["id"] for n in data["nodes"]]
    flows = [f for f in data["flows"] if f["quantity"] > 0]
    fig = go.Figure(go.Sankey(
        node={"label": ids},
        link={"source": [ids.index(f["source"]) for f in flows],
              "target": [ids.index(f["target"]) for f in flows],
              "value": [f["quantity"] for f in flows],
              "label": [f"{f['exchange']} ({f['unit']})" for f in flows]}))
    fig.update_layout(title="Flows exchanged over the range (canonical quantities; units differ "
                            "per exchange)", height=520)
    return fig


def write_html(path: Path, data: dict[str, Any]) -> None:
    from plotly.io import to_html
    from plotly.offline import get_plotlyjs

    cards = []
    for view in VIEWS:
        for key, label, kind in KPIS:
            k = data["kpis"][view].get(key)
            if k is None:
                continue
            cards.append(f'<tr><td>{html.escape(label)}</td><td>{view}</td>'
                         f'<td class="kpi" id="kpi-{view}-{key}" data-value="{k["value"]!r}">'
                         f'{_fmt(k["value"], kind)}</td><td>{k["view_end"]}</td></tr>')
    edges = "".join(
        f'<tr class="{html.escape(e["detail__state"].replace(" ", "-"))}">'
        f'<td>{html.escape(e["id"])}</td><td>{html.escape(e["detail__state"])}</td>'
        f'<td class="rate" id="rate-{html.escape(e["id"])}" data-value="{e["mainstat"]!r}">'
        f'{e["mainstat"]:,.2f} {html.escape(e["detail__unit"])}</td></tr>' for e in data["edges"])
    incidents = "".join(
        f'<tr class="{html.escape(str(i["state"]))}"><td>{i["time"]}</td>'
        f'<td>{html.escape(i["title"])}</td><td>{html.escape(i["text"])}</td></tr>'
        for i in data["incidents"]) or "<tr><td colspan=3>none</td></tr>"
    figs = "".join(f'<div id="{fid}">{to_html(fig, include_plotlyjs=False, full_html=False)}</div>'
                   for fid, fig in (("network", _network_figure(data)),
                                    ("sankey", _sankey_figure(data))))
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>parkmon control room: {html.escape(data['park'])}</title>
<script>window.__errors = []; window.addEventListener("error", e => window.__errors.push(String(e.message)));</script>
<script type="text/javascript">{get_plotlyjs()}</script>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px}} .dropped td{{background:#fbd}} .declining td{{background:#fed}}</style>
</head><body>
<h1>parkmon control room: {html.escape(data['park'])}</h1>
<p>Range {data['start']} .. {data['stop']} (UTC). Same queries as the Grafana dashboards
(grafana/flux.py).</p>
<h2>Indicators (latest views ending in the range)</h2>
<table id="kpis"><tr><th>indicator</th><th>view</th><th>value</th><th>view end</th></tr>{''.join(cards)}</table>
<h2>Open incidents: <span id="open-count" data-value="{len(data['open'])}">{len(data['open'])}</span></h2>
<h2>Network</h2>{figs}
<table id="edges"><tr><th>exchange edge</th><th>state</th><th>live rate</th></tr>{edges}</table>
<h2>Incidents (alert state changes)</h2>
<table id="incidents"><tr><th>at</th><th>alert</th><th>summary</th></tr>{incidents}</table>
<div id="js-errors"></div>
<script>window.addEventListener("load", () => {{
  document.getElementById("js-errors").textContent = window.__errors.join("\\n"); }});</script>
</body></html>
"""
    path.write_text(page)


def main(argv: list[str] | None = None) -> int:
    from parkmon.park import example_park_path, load_park

    args = _parser().parse_args(argv)
    if not args.token:
        print("parkmon report: no InfluxDB token (PARKMON_INFLUX_TOKEN or --token)",
              file=sys.stderr)
        return 2
    park = load_park(args.park or example_park_path("kalundborg"))
    q = Queries(args.url, args.token, args.org, args.bucket, park, _iso(args.start),
                _iso(args.stop))
    try:
        data = collect(q)
    finally:
        q.close()
    write_html(Path(args.out), data)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(data, indent=2, default=str))
    print(f"wrote {args.out}: {sum(len(v) for v in data['kpis'].values())} indicators, "
          f"{len(data['edges'])} exchange edges, {len(data['incidents'])} alert changes")
    return 0
