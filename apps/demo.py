"""`parkmon demo`: the whole monitor in one process on the embedded Kalundborg-like park.

A simulated fleet (with a labelled fault scenario) feeds the edge pipeline exactly as MQTT
messages would: payload bytes on the park's topics, validated, normalised, deduplicated, windowed
into KPIs and watched by the detectors; alerts go through the real lifecycle and outbox (and are
delivered to webhooks when `--webhook` is given). No services are needed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from parkmon.contracts import mqtt_topic
from parkmon.errors import ParkFileError, ParkmonError

DAY_MS = 86_400_000


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="parkmon demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--park", help="park YAML (default: the embedded Kalundborg-like park)")
    p.add_argument("--scenario", default="demo",
                   help="scenario name (shipped) or YAML file; 'none' for normal operation "
                        "(default: demo)")
    p.add_argument("--hours", type=float, help="simulated hours (default: the scenario's duration)")
    p.add_argument("--seed", type=int, help="random seed (default: the scenario's)")
    p.add_argument("--start", default="2026-11-02T00:00:00Z",
                   help="simulated start time, ISO 8601 UTC (default: a Monday)")
    p.add_argument("--report", default="parkmon-demo.html",
                   help="write an HTML report here ('' for none; default: parkmon-demo.html)")
    p.add_argument("--ledger", default="parkmon-demo-ledger.sqlite",
                   help="write the run's exchange ledger here, replacing the file ('' for none; "
                        "check it with `parkmon ledger verify FILE`)")
    p.add_argument("--json", dest="json_out", help="also write the summary as JSON to this file")
    p.add_argument("--webhook", action="append", default=[],
                   help="deliver alerts to this URL (signed; secret from PARKMON_WEBHOOK_SECRET)")
    p.add_argument("--allow-private-targets", action="store_true",
                   help="allow webhook targets on loopback/private addresses")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    return p


def _iso_to_ms(text: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def _fmt_ts(ts_ms: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M")


def run(args: argparse.Namespace) -> dict[str, Any]:
    from alerts.service import AlertService
    from parkmon.park import example_park_path, load_park
    from simulators.fleet import run_scenario
    from simulators.scenarios import load_scenario, scenario_path

    park = load_park(args.park or example_park_path("kalundborg"))
    scenario = None
    if args.scenario and args.scenario != "none":
        path = Path(args.scenario)
        scenario = load_scenario(path if path.suffix in (".yaml", ".yml") else scenario_path(args.scenario))
    start_ms = _iso_to_ms(args.start)
    if args.hours is not None:
        duration_ms = int(args.hours * 3_600_000)
    elif scenario is not None and scenario.duration_ms is not None:
        duration_ms = scenario.duration_ms
    else:
        duration_ms = 6 * 3_600_000
    readings, labels = run_scenario(park, scenario, seed=args.seed, start_ms=start_ms,
                                    duration_ms=duration_ms)

    clock = {"now": start_ms}

    def now_ms() -> int:
        return clock["now"]

    endpoints = []
    if args.webhook:
        from alerts.delivery.webhook import Endpoint

        secret = os.environ.get("PARKMON_WEBHOOK_SECRET")
        if not secret:
            raise ParkmonError("--webhook needs the signing secret in PARKMON_WEBHOOK_SECRET "
                               "(a 'whsec_...' value)")
        from pydantic import SecretStr

        from alerts.cli import parse_secrets

        first, *more = parse_secrets(secret)  # several during a rotation: each one signs
        endpoints = [Endpoint(name=f"hook{i}", url=u, secret=SecretStr(first),
                              extra_secrets=tuple(SecretStr(m) for m in more))
                     for i, u in enumerate(args.webhook)]
    workdir = tempfile.mkdtemp(prefix="parkmon-demo-")
    kw: dict[str, Any] = {}
    if args.allow_private_targets:
        from alerts.delivery.ssrf import SsrfPolicy

        kw["ssrf"] = SsrfPolicy(allow_loopback=True, allow_private=True)
    service = AlertService.create(park, Path(workdir) / "outbox.sqlite", endpoints,
                                  now_ms=now_ms, **kw)
    pipe, wall_s = replay(park, readings, service, clock, start_ms, duration_ms,
                          progress=not args.quiet and sys.stderr.isatty())
    end_ms = start_ms + duration_ms
    if endpoints:
        service.deliver_due()
    summary = summarise(park, pipe, labels, start_ms, end_ms, wall_s)
    service.close()
    if args.ledger:
        summary["ledger"] = write_ledger(Path(args.ledger), park, pipe.kpis.values())
    return summary


def replay(park: Any, readings: Iterable[Any], service: Any, clock: dict[str, int], start_ms: int,
           duration_ms: int, progress: bool = False) -> tuple[Any, float]:
    """Feed simulated readings through one in-process EdgePipeline (the live services' core) in
    emit order with the simulated clock, then close every window. Returns (pipeline, wall s).
    Shared by `parkmon demo` and `parkmon whatif`."""
    from apps.edge.pipeline import EdgePipeline

    pipe = EdgePipeline(park, now_ms=lambda: clock["now"], alerts=service)
    wall0 = time.perf_counter()
    last_tick = start_ms
    shown = 0.0
    for r in readings:
        clock["now"] = max(clock["now"], r.emit_ms)
        payload = r.raw if r.raw is not None else json.dumps(r.payload()).encode()
        pipe.feed(mqtt_topic(park.id, r.enterprise), payload)
        if clock["now"] - last_tick >= 10_000:
            last_tick = clock["now"]
            pipe.advance(clock["now"])
        if progress and time.perf_counter() - shown > 0.5:
            shown = time.perf_counter()
            done = (clock["now"] - start_ms) / duration_ms
            print(f"\r  simulated {_fmt_ts(clock['now'])}  {done:6.1%}  "
                  f"readings {pipe.counters.readings:,}  alerts {pipe.counters.notifications}",
                  end="", file=sys.stderr)
    clock["now"] = start_ms + duration_ms + 10 * 60_000
    pipe.advance(clock["now"], force_kpis=True)
    if progress:
        print(file=sys.stderr)
    return pipe, time.perf_counter() - wall0


def write_ledger(path: Path, park: Any, kpis: Any) -> dict[str, Any]:
    """A fresh ledger of the run's closed exchange windows (the demo's run is one replay)."""
    from streams.core.ledger import candidates_from_kpis
    from streams.ledger_store import LedgerStore, exchange_signers

    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    store = LedgerStore(path, park.id, signers=exchange_signers(park))
    try:
        n = store.append(candidates_from_kpis(kpis, {x.id: x.quantity_unit for x in park.exchanges}))
        verdict = store.verify()
    finally:
        store.close()
    return {"path": str(path), "entries": n, "verified": verdict.ok}


def summarise(park: Any, pipe: Any, labels: list[Any], start_ms: int, end_ms: int,
              wall_s: float) -> dict[str, Any]:
    c = pipe.counters
    park_kpis: dict[str, Any] = {}
    # the whole-run picture: the latest complete 24h (or 1h) view of the park and enterprises
    for view in ("24h", "1h"):
        found = [k for k in pipe.kpis.values() if k.view == view and k.window_end_ms <= end_ms]
        if found:
            latest = max(k.window_start_ms for k in found)
            for k in found:
                if k.window_start_ms == latest and k.scope in ("park", "enterprise"):
                    park_kpis.setdefault(f"{k.scope}:{k.entity}",
                                         {"view": view, "window_start": _fmt_ts(latest),
                                          **{n: v for n, v in k.values.items() if v is not None}})
            break
    notes = []
    for n in pipe.notifications:
        notes.append({
            "at": _fmt_ts(n.created_at_ms), "status": str(n.status), "reason": n.reason,
            "group": n.group_key,
            "alerts": [{"name": str(a.name), "state": str(a.state), "summary": a.summary,
                        "labels": a.labels, "impact": a.impact} for a in n.alerts],
        })
    # per exchange, per base window: supplier outflow and consumer inflow (rate per hour)
    series: dict[str, dict[str, Any]] = {}
    by_meter: dict[str, list[tuple[int, Any]]] = {}  # one pass, not one per exchange
    for (m, w), r in pipe.windows.items():
        by_meter.setdefault(m, []).append((w, r))
    for x in park.exchanges:
        sup: dict[int, float] = {}
        for m in x.suppliers:
            for w, r in by_meter.get(m, ()):
                sup[w] = sup.get(w, 0.0) + r.rate_per_h
        starts = sorted(sup)
        con = {w: 0.0 for w in starts}
        for m in x.consumers:
            if m in x.suppliers:
                continue
            for w, r in by_meter.get(m, ()):
                if w in con:
                    con[w] += r.rate_per_h
        series[x.id] = {"material": x.material or x.carrier, "unit": f"{x.quantity_unit}/h",
                        "t": [_fmt_ts(w) for w in starts],
                        "supplier": [round(sup[w], 4) for w in starts],
                        "consumer": [round(con[w], 4) for w in starts]}
    park_circ = sorted((k.window_start_ms, k.values.get("material_circularity_ratio"),
                        k.values.get("symbiotic_exchange_share"))
                       for k in pipe.kpis.values() if k.scope == "park" and k.view == "1h")
    sharing = getattr(park, "benefit_sharing", None)
    benefit = None
    if sharing is not None:
        benefit = {"currency": sharing.currency, "rule": sharing.rule.kind,
                   "chains": [c.id for c in sharing.chains],
                   "enterprises": {k.split(":", 1)[1]: {
                       "view": v["view"], "credited_savings": v.get("credited_savings"),
                       "credited_avoided_t_co2e": v.get("credited_avoided_t_co2e")}
                       for k, v in sorted(park_kpis.items()) if k.startswith("enterprise:")},
                   "park_savings": park_kpis.get(f"park:{park.id}", {}).get("savings")}
    return {
        "park": park.id,
        "series": series,
        "benefit": benefit,
        "park_kpi_1h": {"t": [_fmt_ts(t) for t, _a, _b in park_circ],
                        "material_circularity_ratio": [a for _t, a, _b in park_circ],
                        "symbiotic_exchange_share": [b for _t, _a, b in park_circ]},
        "simulated": {"start": _fmt_ts(start_ms), "end": _fmt_ts(end_ms),
                      "hours": (end_ms - start_ms) / 3_600_000},
        "wall_seconds": round(wall_s, 2),
        "messages": c.messages,
        "readings": c.readings,
        "accepted": c.accepted,
        "duplicates": c.duplicates,
        "rejected": dict(c.rejected),
        "readings_per_s": round(c.readings / wall_s) if wall_s > 0 else None,
        "late_beyond_grace": c.late_beyond_grace,
        "kpis": park_kpis,
        "notifications": notes,
        "labels": [lb.to_dict() for lb in labels],
    }


def print_summary(s: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console(width=None if sys.stdout.isatty() else 160)
    con.print(f"[bold]parkmon demo[/] park [bold]{s['park']}[/]: simulated {s['simulated']['start']}"
              f" .. {s['simulated']['end']} UTC ({s['simulated']['hours']:.1f} h) in "
              f"{s['wall_seconds']} s wall ({s['readings_per_s']:,} readings/s)")
    rej = ", ".join(f"{k} {v}" for k, v in sorted(s["rejected"].items())) or "none"
    con.print(f"readings {s['readings']:,}: accepted {s['accepted']:,}, duplicates "
              f"{s['duplicates']:,}, rejected {sum(s['rejected'].values()):,} ({rej}); "
              f"later than grace {s['late_beyond_grace']}")
    t = Table(title="Indicators (latest complete rolling window)")
    cols = [("material_circularity_ratio", "circularity", "{:.1%}"),
            ("waste_valorisation_rate", "valorised", "{:.1%}"),
            ("water_reuse_rate", "water reuse", "{:.1%}"),
            ("symbiotic_exchange_share", "symbiotic", "{:.1%}"),
            ("recovered_energy_share", "recovered energy", "{:.1%}"),
            ("scope1_t_co2e", "scope 1 t", "{:,.1f}"),
            ("scope2_t_co2e", "scope 2 t", "{:,.1f}"),
            ("avoided_t_co2e", "avoided t", "{:,.1f}")]
    t.add_column("entity")
    t.add_column("view")
    for _k, name, _f in cols:
        t.add_column(name, justify="right")
    for ent, vals in sorted(s["kpis"].items(), key=lambda kv: (kv[0].split(":")[0] != "park", kv[0])):
        row = [ent, vals["view"]]
        for key, _name, fmt in cols:
            v = vals.get(key)
            row.append("-" if v is None else fmt.format(v))
        t.add_row(*row)
    con.print(t)
    b = s.get("benefit")
    if b:
        bt = Table(title=f"Benefit sharing ({b['rule']} by default; chains: "
                         f"{', '.join(b['chains']) or 'none'}), {b['currency']}")
        for col in ("enterprise", "view", f"savings credited, {b['currency']}",
                    "avoided t CO2e credited"):
            bt.add_column(col, justify="left" if col in ("enterprise", "view") else "right")
        for ent, v in b["enterprises"].items():
            bt.add_row(ent, v["view"], f"{v['credited_savings'] or 0:,.0f}",
                       f"{v['credited_avoided_t_co2e'] or 0:,.2f}")
        con.print(bt)
    con.print(f"[bold]notifications[/] ({len(s['notifications'])}):")
    for n in s["notifications"]:
        colour = "red" if n["status"] == "firing" else "green"
        con.print(f"  {n['at']}  [{colour}]{n['status']:<8}[/] {n['reason']:<7} group {n['group']}")
        for a in n["alerts"]:
            con.print(f"      - {a['name']} [{a['state']}] {a['summary']}")
    con.print(f"[bold]injected faults[/] ({len(s['labels'])} labels):")
    for lb in s["labels"][:20]:
        con.print(f"  {lb.get('kind')} {lb.get('target')} "
                  f"{_fmt_ts(lb['start_ms']) if lb.get('start_ms') else ''}")


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        summary = run(args)
    except ParkFileError as exc:
        print("\n".join(exc.problems), file=sys.stderr)
        return 2
    except ParkmonError as exc:
        print(f"parkmon demo: {exc}", file=sys.stderr)
        return 2
    print_summary(summary)
    if summary.get("ledger"):
        lg = summary["ledger"]
        print(f"ledger: {lg['entries']} entries in {lg['path']} "
              f"({'chain verified' if lg['verified'] else 'CHAIN BROKEN'}); "
              f"`parkmon ledger verify {lg['path']}`")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(summary, indent=2, default=str))
    if args.report:
        from apps.report import write_report

        write_report(Path(args.report), summary)
        print(f"report: {Path(args.report).resolve()}")
    return 0
