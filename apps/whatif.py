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
import json
import multiprocessing
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from apps.whatif_model import (
    EXAMPLES,
    WhatIf,
    WhatIfError,
    baseline_park_data,
    changed_park_data,
    load_whatif,
)
from apps.whatif_report import print_report, write_html
from parkmon.errors import ParkFileError, ParkmonError


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
    s["flows"] = flows(park, s["series"], w.hours)
    s["impacts"] = impacts(park, s["notifications"])
    return s


def flows(park: Any, series: dict[str, Any], hours: float) -> dict[str, dict[str, Any]]:
    """Per exchange: who sends to whom and the quantity delivered over the run (the mean of the
    consumer meters' windowed rate x the run's hours), for the Sankey of the park's flows."""
    out = {}
    for x in park.exchanges:
        s = series.get(x.id) or {}
        con = s.get("consumer") or []
        out[x.id] = {
            "from": sorted({park.meter(m).enterprise for m in x.suppliers}),
            "to": sorted({park.meter(m).enterprise for m in x.consumers}),
            "carrier": x.carrier, "material": x.material, "unit": x.quantity_unit,
            "delivered": (sum(con) / len(con) * hours) if con else 0.0}
    return out


def impacts(park: Any, notifications: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The first impact of every supply incident (the alert service's, from alerts.impact): the
    consumers hit with their share at risk and time to buffer exhaustion, second-order effects in
    time order, and the alternatives as ranked, each with what switching to it costs per hour:
    the covered rate times the exchange's declared virgin price, and the CO2 the exchange avoided
    on that rate (baseline minus allocated factor, the same numbers the avoided-CO2 KPI uses),
    foregone while the alternative, a virgin source, covers."""
    from streams.core.model import KpiModel

    model = KpiModel.from_park(park)
    xinfo = {x.id: x for x in model.exchanges}
    seen: set[str] = set()
    out = []
    for n in notifications:
        for a in n["alerts"]:
            imp = a.get("impact")
            if not imp or imp["exchange"] in seen or a["state"] != "firing":
                continue
            seen.add(imp["exchange"])
            x = xinfo.get(imp["exchange"])
            per_unit_co2 = (x.baseline_t_per_unit - x.allocated_t_per_unit
                            if x is not None and x.baseline_t_per_unit is not None else None)
            price = x.virgin_price if x is not None else 0.0
            alts = []
            for rank, o in enumerate(imp["alternatives"], 1):
                covered = min(o["spare_capacity"], imp["lost_rate"])
                alts.append({**o, "rank": rank, "covered_rate": covered,
                             "switch_cost_per_h": covered * price if price else None,
                             "switch_co2_t_per_h": (covered * per_unit_co2
                                                    if per_unit_co2 is not None else None)})
            second = sorted(imp["second_order"],
                            key=lambda c: (c["buffer_exhausted_at_ms"] or 0, c["depth"]))
            out.append({"at": n["at"], "alert": a["name"], "exchange": imp["exchange"],
                        "supplier": imp["supplier"], "lost_rate": imp["lost_rate"],
                        "rate_unit": imp["rate_unit"], "magnitude": imp["magnitude"],
                        "consumers": imp["consumers"], "second_order": second,
                        "alternatives": alts})
    return out


def run(park_path: str | Path, w: WhatIf, jobs: int = 1) -> dict[str, Any]:
    """Baseline and changed run, compared; `jobs` 2 runs them in two processes."""
    from parkmon.park import build_park

    data = yaml.safe_load(Path(park_path).read_text(encoding="utf-8"))
    try:
        changed_park = build_park(changed_park_data(data, w.park_changes),
                                  f"{park_path} with the scenario's park_changes")
        base_park = build_park(baseline_park_data(data, w.park_changes), str(park_path))
    except ParkFileError as exc:
        if isinstance(exc, WhatIfError):
            raise
        raise WhatIfError(exc.source, exc.problems) from None
    if w.events:  # checked here, so a wrong event is reported before any run starts
        from simulators.scenarios import parse_scenario

        parse_scenario({"name": w.name, "park": changed_park.id, "events": w.events},
                       source="events")
    t0 = time.perf_counter()
    if jobs > 1:
        # the two runs are independent: one process each (same seed, same results as in series)
        ctx = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
        with ProcessPoolExecutor(2, mp_context=ctx) as ex:
            fb = ex.submit(_run_one, base_park, [], w)
            fc = ex.submit(_run_one, changed_park, w.events, w)
            base, changed = fb.result(), fc.result()
    else:
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
            "impacts": changed["impacts"],
            "flows": {"baseline": base["flows"], "changed": changed["flows"]},
            "readings": {"baseline": base["readings"], "changed": changed["readings"]},
            "wall_seconds": round(wall_s, 2)}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="parkmon whatif", description=__doc__.split("\n\n")[0])
    ap.add_argument("park", nargs="?", help="park file (default: the embedded Kalundborg park)")
    ap.add_argument("scenario", nargs="?", help="what-if file, or the name of a shipped example")
    ap.add_argument("--seed", type=int, help="override the scenario's seed")
    ap.add_argument("--hours", type=float, help="override the scenario's hours")
    ap.add_argument("--json", dest="json_out", help="write the comparison as JSON here ('-': stdout)")
    ap.add_argument("--html", help="write an HTML report here")
    ap.add_argument("--schema", action="store_true", help="print the scenario file's JSON Schema")
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                    help="processes: 2 runs baseline and changed side by side (default on 2+ cores)")
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
        r = run(a.park or example_park_path("kalundborg"), w, jobs=a.jobs)
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
