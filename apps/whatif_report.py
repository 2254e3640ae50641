"""What-if output for people: the terminal table (rich) and the HTML report (plotly: KPI deltas,
a Sankey of the park's flows before and after, the impact timeline)."""

from __future__ import annotations

import html
import sys
from pathlib import Path
from typing import Any

KPIS = [("material_circularity_ratio", "circularity", "{:.1%}"),
        ("waste_valorisation_rate", "valorised", "{:.1%}"),
        ("water_reuse_rate", "water reuse", "{:.1%}"),
        ("recovered_energy_share", "recovered energy", "{:.1%}"),
        ("scope1_t_co2e", "scope 1 t", "{:,.1f}"),
        ("scope2_t_co2e", "scope 2 t", "{:,.1f}"),
        ("carbon_intensity_t_co2e_per_t", "t CO2e/t", "{:.3f}"),
        ("avoided_t_co2e", "avoided t", "{:,.1f}"),
        ("credited_savings", "savings credited", "{:,.0f}")]


def _hours(h: float | None) -> str:
    return "-" if h is None else f"{h:.1f} h"


def impact_lines(r: dict[str, Any]) -> list[str]:
    """The changed run's incidents in plain lines (terminal and HTML share them)."""
    out = []
    for imp in r.get("impacts", []):
        out.append(f"{imp['at']} {imp['exchange']} from {imp['supplier']}: "
                   f"{imp['magnitude']:.0%} lost ({imp['lost_rate']:.3g} {imp['rate_unit']})")
        for c in imp["consumers"]:
            out.append(f"  hit: {c['enterprise']} ({c['meter']}) {c['share_at_risk']:.0%} of its "
                       f"input at risk, buffer exhausted after {_hours(c['hours_to_exhaustion'])}")
        for c in imp["second_order"]:
            out.append(f"  then: {c['enterprise']} via {c['via']} ({c['exchange']}) after "
                       f"{_hours(c['hours_to_exhaustion'])}")
        for a in imp["alternatives"]:
            cost = "" if a["switch_cost_per_h"] is None else f", {a['switch_cost_per_h']:,.0f}/h"
            co2 = "" if a["switch_co2_t_per_h"] is None else \
                f", {a['switch_co2_t_per_h']:.3g} t CO2e/h foregone"
            out.append(f"  alternative #{a['rank']}: {a['enterprise']} spare "
                       f"{a['spare_capacity']:.3g} {a['rate_unit']} (covers "
                       f"{a['covers_fraction']:.0%}, lead {a['lead_time_h']:g} h{cost}{co2})")
    return out


def print_report(r: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console(width=None if sys.stdout.isatty() else 180)
    con.print(f"[bold]parkmon whatif[/] {r['scenario']}: {r['description']} "
              f"({r['hours']:g} h, seed {r['seed']}, {r['view']} view; {r['wall_seconds']} s)")
    t = Table(title="Indicators: baseline -> changed (delta)")
    t.add_column("entity")
    for _k, name, _f in KPIS:
        t.add_column(name, justify="right")
    for ent, row in sorted(r["kpis"].items(), key=lambda kv: (not kv[0].startswith("park"), kv[0])):
        cells = []
        for key, _n, fmt in KPIS:
            v = row.get(key)
            if v is None or v["changed"] is None:
                cells.append("-")
                continue
            d = v["delta"]
            cells.append(fmt.format(v["changed"]) + ("" if not d else f" ({'+' if d > 0 else ''}"
                                                     f"{fmt.format(d)})"))
        t.add_row(ent, *cells)
    con.print(t)
    lines = impact_lines(r)
    if lines:
        con.print("[bold]impact in the changed run[/] (consumers, second order, alternatives):")
        for line in lines:
            con.print(f"  {line}", highlight=False)
    for run_name in ("changed", "baseline"):
        al = r["alerts"][run_name]
        con.print(f"[bold]alerts, {run_name} run[/] ({len(al)}):")
        for a in al:
            con.print(f"  {a['at']} {a['status']:<8} {a['name']}: {a['summary']}")


def sankey_figure(r: dict[str, Any]) -> Any:
    """The park's exchanges as a Sankey, baseline and changed side by side; one row per quantity
    unit (t, MWh, m3), since widths compare only within a unit."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    units = sorted({f["unit"] for run in r["flows"].values() for f in run.values()})
    fig = make_subplots(rows=len(units), cols=2, specs=[[{"type": "sankey"}] * 2] * len(units),
                        subplot_titles=[f"{run} ({u})" for u in units
                                        for run in ("baseline", "changed")],
                        vertical_spacing=0.06, horizontal_spacing=0.06)
    for row, unit in enumerate(units, 1):
        for col, run in enumerate(("baseline", "changed"), 1):
            fl = {x: f for x, f in r["flows"][run].items() if f["unit"] == unit}
            nodes = sorted({e for f in fl.values() for e in (*f["from"], *f["to"])})
            idx = {e: i for i, e in enumerate(nodes)}
            src, dst, val, lab = [], [], [], []
            for x, f in sorted(fl.items()):
                share = f["delivered"] / max(1, len(f["from"]) * len(f["to"]))
                for a in f["from"]:
                    for b in f["to"]:
                        src.append(idx[a])
                        dst.append(idx[b])
                        val.append(max(share, 0.0))
                        lab.append(f"{x}: {share:,.1f} {unit}")
            fig.add_trace(go.Sankey(node={"label": nodes, "pad": 12},
                                    link={"source": src, "target": dst, "value": val,
                                          "label": lab}), row=row, col=col)
    fig.update_layout(title="The park's flows over the run: baseline vs changed",
                      height=320 * len(units))
    return fig


def timeline_figure(r: dict[str, Any]) -> Any:
    """When each consumer runs out of buffer after each incident (hours from the drop)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for imp in r.get("impacts", []):
        hit = [*imp["consumers"], *imp["second_order"]]
        fig.add_scatter(name=imp["exchange"], mode="markers+text",
                        x=[c["hours_to_exhaustion"] or 0.0 for c in hit],
                        y=[c["enterprise"] for c in hit],
                        text=[f"{c['exchange']} (depth {c['depth']})" for c in hit],
                        textposition="top center")
    fig.update_layout(title="Impact timeline: hours from the drop to buffer exhaustion",
                      xaxis_title="hours", height=360)
    return fig


def write_html(path: Path, r: dict[str, Any]) -> None:
    import plotly.graph_objects as go
    from plotly.io import to_html
    from plotly.offline import get_plotlyjs

    parts = []
    for key, label, _f in KPIS:
        ents = [e for e, row in sorted(r["kpis"].items())
                if row.get(key) and row[key]["delta"] is not None]
        if not any(r["kpis"][e][key]["delta"] for e in ents):
            continue
        fig = go.Figure()
        fig.add_bar(name="baseline", x=ents, y=[r["kpis"][e][key]["baseline"] for e in ents])
        fig.add_bar(name="changed", x=ents, y=[r["kpis"][e][key]["changed"] for e in ents])
        fig.update_layout(title=f"{label}: baseline vs changed", barmode="group", height=340)
        parts.append(to_html(fig, include_plotlyjs=False, full_html=False))
    sankey = to_html(sankey_figure(r), include_plotlyjs=False, full_html=False,
                     div_id="sankey") if r.get("flows") else ""
    timeline = to_html(timeline_figure(r), include_plotlyjs=False, full_html=False,
                       div_id="timeline") if r.get("impacts") else ""
    rows = "".join(f"<tr><td>{html.escape(a['at'])}</td><td>{html.escape(a['status'])}</td>"
                   f"<td>{html.escape(a['name'])}</td><td>{html.escape(a['summary'])}</td></tr>"
                   for a in r["alerts"]["changed"])
    impact = "".join(f"<li>{html.escape(line)}</li>" for line in impact_lines(r))
    path.write_text(f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>parkmon whatif: {html.escape(r['scenario'])}</title>
<script type="text/javascript">{get_plotlyjs()}</script></head><body style="font-family:sans-serif">
<h1>What if: {html.escape(r['scenario'])}</h1><p>{html.escape(r['description'])}</p>
<h2>Alerts the detectors raise in the changed run</h2>
<table id="alerts" border="1">{rows or '<tr><td>none</td></tr>'}</table>
<h2>Impact: consumers hit, second-order effects, alternatives</h2>
<ul id="impact">{impact or '<li>no supply incident</li>'}</ul>{timeline}
<h2>Indicators that change</h2>{''.join(parts) or '<p>no indicator changes</p>'}
<h2>Flows before and after</h2>{sankey}
</body></html>
""")
