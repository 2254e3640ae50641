"""`parkmon whatif PARK SCENARIO`: a what-if on the park model, baseline against changed park.

Both runs go through the same simulator (simulators.fleet.run_scenario), the same in-process
pipeline as `parkmon demo` and edge mode (apps.demo.replay -> EdgePipeline: validation, windows,
the KPI core, the detectors, the alert service with impact and alternatives) with the same seed:
the baseline is the declared park in normal operation, the changed run is the park with the
scenario's `park_changes` applied and its simulator `events` injected. No formula is repeated
here: every figure is read from the two pipelines' results.

Scenario file (docs/whatif.md; JSON Schema: `parkmon whatif --schema`):

    name: asnaes_trip
    description: the power station trips for 4 h
    hours: 24
    seed: 7
    events:                       # simulator events (docs/simulator.md), changed run only
      - {kind: trip, exchange: steam, at: 6h, duration: 4h}
    park_changes:                 # applied to the park file before the changed run
      - {kind: remove_exchange, exchange: fly_ash}
      - {kind: emission_factor, carrier: electricity, value: 0.3, unit: kg/kWh, source: "..."}
      - {kind: prices, exchange: gypsum, virgin_price: 250}
      - {kind: add_alternative, enterprise: import, external: true, carrier: material,
         material: gypsum, spare_capacity: "40 t/h", lead_time_h: 24, exchanges: [gypsum]}
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from parkmon.errors import ParkFileError, ParkmonError

EXAMPLES = Path(__file__).with_name("whatif_examples")
KPIS = [("material_circularity_ratio", "circularity", "{:.1%}"),
        ("waste_valorisation_rate", "valorised", "{:.1%}"),
        ("water_reuse_rate", "water reuse", "{:.1%}"),
        ("recovered_energy_share", "recovered energy", "{:.1%}"),
        ("scope1_t_co2e", "scope 1 t", "{:,.1f}"),
        ("scope2_t_co2e", "scope 2 t", "{:,.1f}"),
        ("carbon_intensity_t_co2e_per_t", "t CO2e/t", "{:.3f}"),
        ("avoided_t_co2e", "avoided t", "{:,.1f}"),
        ("credited_savings", "savings credited", "{:,.0f}")]


class _M(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RemoveExchange(_M):
    kind: Literal["remove_exchange"]
    exchange: str


class EmissionFactorChange(_M):
    kind: Literal["emission_factor"]
    carrier: str
    value: float = Field(ge=0)
    unit: str
    source: str = "what-if scenario"


class PriceChange(_M):
    kind: Literal["prices"]
    exchange: str
    virgin_price: float | None = Field(default=None, ge=0)
    disposal_price: float | None = Field(default=None, ge=0)


class AddAlternative(_M):
    kind: Literal["add_alternative"]
    enterprise: str
    external: bool = False
    carrier: str
    material: str | None = None
    spare_capacity: str
    lead_time_h: float = Field(default=0.0, ge=0)
    exchanges: list[str] = []


ParkChange = Annotated[RemoveExchange | EmissionFactorChange | PriceChange | AddAlternative,
                       Field(discriminator="kind")]


class WhatIf(_M):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    description: str = ""
    hours: float = Field(default=24.0, gt=0, le=24 * 31)
    seed: int = 1
    start: str = "2026-11-02T00:00:00Z"
    events: list[dict[str, Any]] = []
    park_changes: list[ParkChange] = []


class WhatIfError(ParkFileError):
    """A scenario file that cannot be used; one actionable line per problem."""


def load_whatif(path: str | Path) -> WhatIf:
    p = Path(path)
    if not p.is_file() and (EXAMPLES / f"{path}.yaml").is_file():
        p = EXAMPLES / f"{path}.yaml"
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        names = ", ".join(sorted(x.stem for x in EXAMPLES.glob("*.yaml")))
        raise WhatIfError(str(p), [f"{p}: file not found (shipped examples: {names})"]) from None
    except yaml.YAMLError as exc:
        raise WhatIfError(str(p), [f"(file): not valid YAML: {exc}"]) from None
    return parse_whatif(data, str(p))


def parse_whatif(data: Any, source: str = "<whatif>") -> WhatIf:
    if not isinstance(data, dict):
        raise WhatIfError(source, ["(file): expected a mapping with name, hours, events, "
                                   "park_changes"])
    try:
        return WhatIf.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ""
            for part in err["loc"]:
                if part in ("remove_exchange", "emission_factor", "prices", "add_alternative"):
                    continue  # pydantic's union tag, not a key of the file
                loc += f"[{part}]" if isinstance(part, int) else (f".{part}" if loc else str(part))
            problems.append(f"{loc or '(file)'}: {err['msg']}, got {err.get('input')!r}")
        raise WhatIfError(source, problems) from None


def changed_park_data(data: dict[str, Any], changes: list[Any]) -> dict[str, Any]:
    """The park file's mapping with the changes applied (validated afterwards by the loader)."""
    out = copy.deepcopy(data)
    ids = [x.get("id") for x in out.get("exchanges", [])]
    problems = []
    for i, c in enumerate(changes):
        loc = f"park_changes[{i}]"
        if isinstance(c, RemoveExchange | PriceChange) and c.exchange not in ids:
            problems.append(f"{loc}.exchange: no exchange {c.exchange!r}; exchanges are: "
                            f"{', '.join(str(x) for x in ids)}")
            continue
        if isinstance(c, RemoveExchange):
            # the flow stops: the consumers buy virgin input instead, the suppliers dispose of
            # what they sent (the meters go on measuring the same quantities)
            gone = next(x for x in out["exchanges"] if x.get("id") == c.exchange)
            for m in out.get("meters", []):
                if m.get("id") in gone.get("consumers", []):
                    m["origin"] = "virgin"
                elif m.get("id") in gone.get("suppliers", []) and m.get("carrier") in (
                        "material", "biomass"):
                    m["fate"] = "disposal"
            out["exchanges"] = [x for x in out["exchanges"] if x.get("id") != c.exchange]
            ids.remove(c.exchange)
            for a in out.get("alternatives", []):
                if c.exchange in a.get("exchanges", []):
                    a["exchanges"] = [e for e in a["exchanges"] if e != c.exchange]
            bs = out.get("benefit_sharing")
            if bs:
                chains = []
                for ch in bs.get("chains", []):
                    xs = [e for e in ch.get("exchanges", []) if e != c.exchange]
                    if len(xs) >= 2:
                        chains.append({**ch, "exchanges": xs})
                bs["chains"] = chains
        elif isinstance(c, EmissionFactorChange):
            out.setdefault("emission_factors", {})[c.carrier] = {
                "value": c.value, "unit": c.unit, "source": c.source}
        elif isinstance(c, PriceChange):
            x = next(x for x in out["exchanges"] if x.get("id") == c.exchange)
            if c.virgin_price is not None:
                x["virgin_price"] = c.virgin_price
            if c.disposal_price is not None:
                x["disposal_price"] = c.disposal_price
        else:
            out.setdefault("alternatives", []).append(c.model_dump(exclude={"kind"}))
    if problems:
        raise WhatIfError("park_changes", problems)
    return out


def _run_one(park: Any, events: list[dict[str, Any]], w: WhatIf) -> dict[str, Any]:
    from alerts.service import AlertService
    from apps.demo import _iso_to_ms, replay, summarise
    from simulators.fleet import run_scenario
    from simulators.scenarios import parse_scenario

    start_ms = _iso_to_ms(w.start)
    duration_ms = int(w.hours * 3_600_000)
    scenario = parse_scenario({"name": w.name, "park": park.id, "events": events},
                              source="events") if events else None
    readings, labels = run_scenario(park, scenario, seed=w.seed, start_ms=start_ms,
                                    duration_ms=duration_ms)
    clock = {"now": start_ms}
    with tempfile.TemporaryDirectory(prefix="parkmon-whatif-") as tmp:
        service = AlertService.create(park, Path(tmp) / "outbox.sqlite", [],
                                      now_ms=lambda: clock["now"])
        pipe, wall = replay(park, readings, service, clock, start_ms, duration_ms)
        s = summarise(park, pipe, labels, start_ms, start_ms + duration_ms, wall)
        service.close()
    return s


def run(park_path: str | Path, w: WhatIf) -> dict[str, Any]:
    from parkmon.park import build_park

    data = yaml.safe_load(Path(park_path).read_text(encoding="utf-8"))
    base_park = build_park(data, str(park_path))
    try:
        changed_park = build_park(changed_park_data(data, w.park_changes),
                                  f"{park_path} with the scenario's park_changes")
    except ParkFileError as exc:
        if isinstance(exc, WhatIfError):
            raise
        raise WhatIfError(exc.source, exc.problems) from None
    t0 = time.perf_counter()
    base = _run_one(base_park, [], w)
    changed = _run_one(changed_park, w.events, w)
    return compare(w, base, changed, time.perf_counter() - t0)


def compare(w: WhatIf, base: dict[str, Any], changed: dict[str, Any],
            wall_s: float) -> dict[str, Any]:
    """Side by side: every indicator of every entity in both runs with its delta, and the alerts
    each run raised (the changed run's carry impact: consumers hit, buffer, alternatives)."""
    kpis: dict[str, dict[str, dict[str, float | None]]] = {}
    for ent in sorted(set(base["kpis"]) | set(changed["kpis"])):
        b, c = base["kpis"].get(ent, {}), changed["kpis"].get(ent, {})
        row: dict[str, dict[str, float | None]] = {}
        for k in sorted((set(b) | set(c)) - {"view", "window_start"}):
            bv, cv = b.get(k), c.get(k)
            if isinstance(bv, bool) or isinstance(cv, bool):
                continue
            row[k] = {"baseline": bv, "changed": cv,
                      "delta": None if bv is None or cv is None else cv - bv}
        kpis[ent] = row

    def alerts(s: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"at": n["at"], "status": n["status"], "name": a["name"], "state": a["state"],
                 "summary": a["summary"]} for n in s["notifications"] for a in n["alerts"]]

    return {"scenario": w.name, "description": w.description, "hours": w.hours, "seed": w.seed,
            "view": next((v["view"] for v in changed["kpis"].values()), None),
            "kpis": kpis, "alerts": {"baseline": alerts(base), "changed": alerts(changed)},
            "readings": {"baseline": base["readings"], "changed": changed["readings"]},
            "wall_seconds": round(wall_s, 2)}


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
    for run_name in ("changed", "baseline"):
        al = r["alerts"][run_name]
        con.print(f"[bold]alerts, {run_name} run[/] ({len(al)}):")
        for a in al:
            con.print(f"  {a['at']} {a['status']:<8} {a['name']}: {a['summary']}")


def write_html(path: Path, r: dict[str, Any]) -> None:
    import html

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
    rows = "".join(f"<tr><td>{html.escape(a['at'])}</td><td>{html.escape(a['status'])}</td>"
                   f"<td>{html.escape(a['name'])}</td><td>{html.escape(a['summary'])}</td></tr>"
                   for a in r["alerts"]["changed"])
    path.write_text(f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>parkmon whatif: {html.escape(r['scenario'])}</title>
<script type="text/javascript">{get_plotlyjs()}</script></head><body style="font-family:sans-serif">
<h1>What if: {html.escape(r['scenario'])}</h1><p>{html.escape(r['description'])}</p>
<h2>Alerts the detectors raise in the changed run</h2>
<table id="alerts" border="1">{rows or '<tr><td>none</td></tr>'}</table>
<h2>Indicators that change</h2>{''.join(parts) or '<p>no indicator changes</p>'}
</body></html>
""")


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="parkmon whatif", description=__doc__.split("\n\n")[0])
    ap.add_argument("park", nargs="?", help="park file (default: the embedded Kalundborg park)")
    ap.add_argument("scenario", nargs="?", help="what-if file, or the name of a shipped example")
    ap.add_argument("--seed", type=int, help="override the scenario's seed")
    ap.add_argument("--hours", type=float, help="override the scenario's hours")
    ap.add_argument("--json", dest="json_out", help="write the comparison as JSON here ('-': stdout)")
    ap.add_argument("--html", help="write an HTML report here")
    ap.add_argument("--schema", action="store_true", help="print the scenario file's JSON Schema")
    ap.add_argument("--list", action="store_true", help="list the shipped example scenarios")
    a = ap.parse_args(argv)
    if a.park and not a.scenario:  # `parkmon whatif SCENARIO` on the embedded park
        a.park, a.scenario = None, a.park
    if a.schema:
        print(json.dumps(WhatIf.model_json_schema(), indent=1))
        return 0
    if a.list or not a.scenario:
        for p in sorted(EXAMPLES.glob("*.yaml")):
            w = load_whatif(p)
            print(f"{p.stem:<28} {w.description}")
        return 0 if a.list else 2
    from parkmon.park import example_park_path

    try:
        w = load_whatif(a.scenario)
        upd: dict[str, Any] = {}
        if a.seed is not None:
            upd["seed"] = a.seed
        if a.hours is not None:
            upd["hours"] = a.hours
        w = w.model_copy(update=upd)
        r = run(a.park or example_park_path("kalundborg"), w)
    except ParkFileError as exc:
        print(f"parkmon whatif: {exc.source}:\n" + "\n".join(f"  {p}" for p in exc.problems),
              file=sys.stderr)
        return 2
    except ParkmonError as exc:
        print(f"parkmon whatif: {exc}", file=sys.stderr)
        return 2
    if a.json_out == "-":
        print(json.dumps(r, indent=1))
    else:
        print_report(r)
        if a.json_out:
            Path(a.json_out).write_text(json.dumps(r, indent=1))
    if a.html:
        write_html(Path(a.html), r)
    return 0
