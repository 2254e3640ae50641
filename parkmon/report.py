"""A self-contained HTML report of a demo run (plotly), for a person to look at."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any


def write_report(path: Path, summary: dict[str, Any]) -> None:
    import plotly.graph_objects as go
    from plotly.io import to_html

    parts: list[str] = []
    kpis = summary["kpis"]
    names = [("material_circularity_ratio", "Material circularity"),
             ("water_reuse_rate", "Water reuse"),
             ("symbiotic_exchange_share", "Symbiotic exchange share"),
             ("recovered_energy_share", "Recovered energy share")]
    ents = sorted(kpis)
    fig = go.Figure()
    for key, label in names:
        fig.add_bar(name=label, x=ents, y=[kpis[e].get(key) for e in ents])
    fig.update_layout(title="Circularity indicators by entity (latest complete window)",
                      barmode="group", yaxis_tickformat=".0%", height=420)
    parts.append(to_html(fig, include_plotlyjs="inline", full_html=False))
    carbon = go.Figure()
    carbon.add_bar(name="Scope 1", x=ents, y=[kpis[e].get("scope1_t_co2e") for e in ents])
    carbon.add_bar(name="Scope 2", x=ents, y=[kpis[e].get("scope2_t_co2e") for e in ents])
    carbon.add_bar(name="Avoided", x=ents, y=[kpis[e].get("avoided_t_co2e") for e in ents])
    carbon.update_layout(title="Emissions, t CO2e (latest complete window)", barmode="group",
                         height=420)
    parts.append(to_html(carbon, include_plotlyjs=False, full_html=False))

    rows = []
    for n in summary["notifications"]:
        for a in n["alerts"]:
            rows.append(
                f"<tr class='{html.escape(n['status'])}'><td>{html.escape(n['at'])}</td>"
                f"<td>{html.escape(n['status'])}</td><td>{html.escape(a['name'])}</td>"
                f"<td>{html.escape(a['state'])}</td><td>{html.escape(a['summary'])}</td></tr>")
    rej = "".join(f"<li>{html.escape(k)}: {v}</li>" for k, v in sorted(summary["rejected"].items()))
    sim = summary["simulated"]
    doc = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>parkmon demo: {html.escape(summary['park'])}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}
tr.firing td{{background:#fde8e8}}tr.resolved td{{background:#e8f6e8}}</style></head>
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
<h2>Indicators</h2>
{''.join(parts)}
</body></html>
"""
    path.write_text(doc)
