"""A self-contained HTML report of a demo run (plotly), for a person to look at."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any


def write_report(path: Path, summary: dict[str, Any]) -> None:
    import plotly.graph_objects as go
    from plotly.io import to_html

    parts: list[str] = []
    parts.extend(_flow_charts(summary))
    kpis = summary["kpis"]
    names = [("material_circularity_ratio", "Material circularity"),
             ("water_reuse_rate", "Water reuse"),
             ("symbiotic_exchange_share", "Symbiotic exchange share"),
             ("recovered_energy_share", "Recovered energy share")]
    ents = sorted(kpis)
    fig = go.Figure()
    pk = summary.get("park_kpi_1h") or {}
    if pk.get("t"):
        trend = go.Figure()
        trend.add_scatter(name="Material circularity", x=pk["t"], y=pk["material_circularity_ratio"])
        trend.add_scatter(name="Symbiotic exchange share", x=pk["t"], y=pk["symbiotic_exchange_share"])
        trend.update_layout(title="Park indicators over time (1 h rolling)", yaxis_tickformat=".0%",
                            height=360)
        parts.append(to_html(trend, include_plotlyjs=False, full_html=False))
    for key, label in names:
        fig.add_bar(name=label, x=ents, y=[kpis[e].get(key) for e in ents])
    fig.update_layout(title="Circularity indicators by entity (latest complete window)",
                      barmode="group", yaxis_tickformat=".0%", height=420)
    parts.append(to_html(fig, include_plotlyjs=False, full_html=False))
    carbon = go.Figure()
    carbon.add_bar(name="Scope 1", x=ents, y=[kpis[e].get("scope1_t_co2e") for e in ents])
    carbon.add_bar(name="Scope 2", x=ents, y=[kpis[e].get("scope2_t_co2e") for e in ents])
    carbon.add_bar(name="Avoided", x=ents, y=[kpis[e].get("avoided_t_co2e") for e in ents])
    carbon.update_layout(title="Emissions, t CO2e (latest complete window)", barmode="group",
                         height=420)
    parts.append(to_html(carbon, include_plotlyjs=False, full_html=False))

    benefit_html = ""
    b = summary.get("benefit")
    if b:
        bents = list(b["enterprises"])
        bfig = go.Figure()
        bfig.add_bar(name=f"Savings credited ({b['currency']})", x=bents,
                     y=[b["enterprises"][e]["credited_savings"] for e in bents])
        bfig.update_layout(title=f"Benefit sharing: savings credited per enterprise "
                                 f"({b['currency']}, latest complete window)", height=380)
        brows = "".join(
            f"<tr><td>{html.escape(e)}</td><td>{v['credited_savings'] or 0:,.0f}</td>"
            f"<td>{v['credited_avoided_t_co2e'] or 0:,.2f}</td></tr>"
            for e, v in b["enterprises"].items())
        benefit_html = (f"<h2>Benefit sharing</h2><p>Default rule {html.escape(b['rule'])}; "
                        f"chains shared by the Shapley value: "
                        f"{html.escape(', '.join(b['chains']) or 'none')}.</p>"
                        f"<table id='benefit'><tr><th>enterprise</th><th>savings credited, "
                        f"{html.escape(b['currency'])}</th><th>avoided t CO2e credited</th></tr>"
                        f"{brows}</table>"
                        + to_html(bfig, include_plotlyjs=False, full_html=False))
    rows = []
    for n in summary["notifications"]:
        for a in n["alerts"]:
            rows.append(
                f"<tr class='{html.escape(n['status'])}'><td>{html.escape(n['at'])}</td>"
                f"<td>{html.escape(n['status'])}</td><td>{html.escape(a['name'])}</td>"
                f"<td>{html.escape(a['state'])}</td><td>{html.escape(a['summary'])}</td></tr>")
    rej = "".join(f"<li>{html.escape(k)}: {v}</li>" for k, v in sorted(summary["rejected"].items()))
    sim = summary["simulated"]
    from plotly.offline import get_plotlyjs

    doc = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>parkmon demo: {html.escape(summary['park'])}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}
tr.firing td{{background:#fde8e8}}tr.resolved td{{background:#e8f6e8}}</style>
<script type="text/javascript">{get_plotlyjs()}</script></head>
<body>
<h1>parkmon demo: park {html.escape(summary['park'])}</h1>
<p id="run">Simulated {html.escape(sim['start'])} to {html.escape(sim['end'])} UTC
({sim['hours']:.1f} h) in {summary['wall_seconds']} s.</p>
<h2>Data</h2>
<p id="counts">Readings {summary['readings']}: accepted {summary['accepted']},
duplicates {summary['duplicates']}, rejected {sum(summary['rejected'].values())}.</p>
<ul>{rej}</ul>
<h2>Alerts</h2>
<table id="alerts"><tr><th>at</th><th>notification</th><th>alert</th><th>state</th><th>summary</th></tr>
{''.join(rows) or '<tr><td colspan=5>no alerts</td></tr>'}</table>
<h2>Symbiotic flows and indicators</h2>
{''.join(parts)}
{benefit_html}
</body></html>
"""
    path.write_text(doc)


def _alert_spans(summary: dict[str, Any]) -> dict[str, list[tuple[str, str | None]]]:
    """exchange id -> [(firing at, resolved at or None)] from the notifications."""
    spans: dict[str, list[tuple[str, str | None]]] = {}
    open_: dict[tuple[str, str], str] = {}
    for n in summary["notifications"]:
        for a in n["alerts"]:
            x = a["labels"].get("exchange")
            if not x:
                continue
            key = (x, a["name"])
            if a["state"] == "firing" and key not in open_:
                open_[key] = n["at"]
            elif a["state"] == "resolved" and key in open_:
                spans.setdefault(x, []).append((open_.pop(key), n["at"]))
    for (x, _name), start in open_.items():
        spans.setdefault(x, []).append((start, None))
    return spans


def _flow_charts(summary: dict[str, Any]) -> list[str]:
    """One chart per exchange that raised an alert (else the three largest), alerts shaded."""
    import plotly.graph_objects as go
    from plotly.io import to_html

    series = summary.get("series") or {}
    spans = _alert_spans(summary)
    chosen = [x for x in series if x in spans]
    if not chosen:
        chosen = sorted(series, key=lambda x: -max(series[x]["supplier"] or [0]))[:3]
    out = []
    for x in chosen:
        s = series[x]
        if not s["t"]:
            continue
        fig = go.Figure()
        fig.add_scatter(name="supplier output", x=s["t"], y=s["supplier"], mode="lines")
        fig.add_scatter(name="consumer input", x=s["t"], y=s["consumer"], mode="lines")
        for start, end in spans.get(x, []):
            fig.add_vrect(x0=start, x1=end or s["t"][-1], fillcolor="red", opacity=0.12,
                          line_width=0, annotation_text="alert", annotation_position="top left")
        fig.update_layout(title=f"Exchange {x} ({s['material']}), {s['unit']} per minute window",
                          height=320, margin={"t": 50, "b": 40})
        out.append(f'<div class="flow" id="flow-{html.escape(x)}">'
                   + to_html(fig, include_plotlyjs=False, full_html=False) + "</div>")
    return out
