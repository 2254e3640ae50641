"""`parkmon evaluate --scenarios DIR`: score the detectors on labelled scenarios, next to two
baseline rules computed on the same readings. Accelerated and in-process: no services.

    parkmon evaluate --scenarios DIR [--generate [--internal]] [--park kalundborg|PATH]
                     [--normal-days 30] [--event-runs 12] [--run-days 2] [--period 10]
                     [--exchanges a,b] [--seed 1] [--no-prior] [--json]

DIR holds simulator scenarios (`*.yaml`, docs/simulator.md; e.g. simulators/scenarios). Each is
run in-process by the simulator's Fleet with every meter sampled every `--period` seconds, plus
one run of `--normal-days` of normal operation (no scenario: only natural events such as counter
resets). `--generate` first writes `--event-runs` random scenarios (supply drops, trips, gradual
declines, meter outages) into DIR. With `--internal`, the small numpy generator of
detect/synthetic.py is used instead of the simulator (`*.scenario.json`; its set includes the
normal-operation run, declared maintenance and planned changes, and one-sample glitches).

The readings a gateway would accept (canonical units) go through detect.ParkMonitor, the
StaticThreshold and the TrailingMean rules (detect/reference_rules.py); every alert is matched to the
labels by alerts.scoring and the figures are printed side by side, with the issue's goals.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detect import (
    DataQuality,
    DetectorConfig,
    ParkMonitor,
    PlannedWindow,
    SupplyDecline,
    SupplyDrop,
    maintenance_windows,
)
from detect.reference_rules import StaticThreshold, TrailingMean
from detect.scoring import (
    AlertRecord,
    CategoryScore,
    Label,
    dq_classified,
    percentile,
    score_category,
)
from detect.simrun import random_scenario, sim_labels, sim_readings
from detect.synthetic import (
    DAY_MS,
    HOUR_MS,
    ScenarioSpec,
    default_scenarios,
    labels_of,
    planned_windows,
    prior_for,
    read_scenarios,
    readings,
    write_scenarios,
)

# the simulator is imported lazily (run_sim, load_runs): the internal generator works without it

GOAL_DROP = 0.2
GOAL_DROP_MS = 300_000
DETECTOR = "detector"
STATIC = "static-threshold"
TRAILING = "trailing-mean"
METHODS = (DETECTOR, STATIC, TRAILING)


def with_period(park: Any, period_s: float) -> Any:
    """A copy of the park whose meters all report every period_s (the scenario's sampling)."""
    d = park.model_dump()
    for m in d["meters"]:
        m["period_s"] = period_s
    return type(park).model_validate(d)


def restrict(park: Any, exchange_ids: Sequence[str]) -> Any:
    """The park cut down to some exchanges and the meters they use (unknown ids: KeyError)."""
    for xid in exchange_ids:
        park.exchange(xid)
    d = park.model_dump()
    d["exchanges"] = [x for x in d["exchanges"] if x["id"] in exchange_ids]
    used = {m for x in d["exchanges"] for m in (*x["suppliers"], *x["consumers"])}
    d["meters"] = [m for m in d["meters"] if m["id"] in used]
    d["products"] = [p for p in d["products"] if p["meter"] in used]
    d["alternatives"] = []
    d["maintenance"] = [w for w in d["maintenance"]
                        if any(m["enterprise"] == w["enterprise"] for m in d["meters"])]
    return type(park).model_validate(d)


@dataclass
class RunResult:
    name: str
    days: float
    normal: bool
    labels: list[Label]
    alerts: dict[str, list[AlertRecord]] = field(default_factory=dict)
    readings: int = 0


def replay(name: str, days: float, normal: bool, labels: list[Label], p: Any,
           windows: list[PlannedWindow], stream: Iterable[tuple[str, int, float, int]],
           warm_end: int, cfg: DetectorConfig | None, prior: Any) -> RunResult:
    """Feed (meter, ts_ms, canonical value, now_ms) readings to the detectors and both rules."""
    mon = ParkMonitor(p, cfg, windows, prior)
    rules = {STATIC: StaticThreshold(p, windows), TRAILING: TrailingMean(p, windows)}
    res = RunResult(name, days, normal, labels, {m: [] for m in METHODS})
    det = res.alerts[DETECTOR]
    next_tick = None
    for meter, ts, value, now in stream:
        res.readings += 1
        for ev in mon.observe(meter, ts, value):
            _record(ev, det, warm_end)
        for rname, rule in rules.items():
            for xid, what, ets in rule.observe(meter, ts, value):
                if what == "fire" and ets >= warm_end:
                    res.alerts[rname].append(AlertRecord("supply", xid, ets, rname))
        if next_tick is None or now >= next_tick:
            for ev in mon.tick(now):
                _record(ev, det, warm_end)
            next_tick = now + 60_000
    return res


def run_scenario(spec: ScenarioSpec, park: Any, cfg: DetectorConfig | None = None,
                 use_prior: bool = True) -> RunResult:
    """Replay one internal-generator scenario through the detectors and both baseline rules."""
    p = with_period(park, spec.period_s)
    windows = planned_windows(spec, p)
    warm_end = spec.start_ms + int(spec.warmup_h * HOUR_MS)

    def stream() -> Iterator[tuple[str, int, float, int]]:
        for t, batch in readings(spec, p):
            for meter, ts, value in batch:
                yield meter, ts, value, t

    return replay(spec.name, spec.days, spec.name.startswith("normal"), labels_of(spec, p), p,
                  windows, stream(), warm_end, cfg, prior_for(p) if use_prior else None)


def run_sim(scenario: Any, park: Any, start_ms: int, period_s: float = 10.0,
            duration_ms: int | None = None, seed: int | None = None,
            cfg: DetectorConfig | None = None, use_prior: bool = True,
            warmup_h: float = 0.0, normal: bool = False) -> RunResult:
    """Run a simulator scenario (None: normal operation) in-process and replay it."""
    from simulators import run_scenario as sim_run

    p = with_period(park, period_s)
    it, sim_lbls = sim_run(p, scenario, seed=seed, start_ms=start_ms, duration_ms=duration_ms)
    dur = duration_ms if duration_ms is not None else scenario.duration_ms
    res = replay(scenario.name if scenario is not None else "normal", dur / DAY_MS, normal, [], p,
                 maintenance_windows(p), sim_readings(it, p), start_ms + int(warmup_h * HOUR_MS),
                 cfg, sim_prior_for(p) if use_prior else None)
    res.labels = sim_labels(sim_lbls, p)  # complete once the readings are exhausted
    return res


def sim_prior_for(park: Any) -> Any:
    """Seasonal priors from the simulator's declared profiles (simulators.signals)."""
    from simulators.signals import PROFILE_CODE, local_time, profile_factors

    tz = getattr(park, "timezone", "UTC") or "UTC"

    def make(x: Any) -> Any:
        prof = str(park.meter(x.suppliers[0]).profile)
        if prof == "continuous" or prof not in PROFILE_CODE:
            return None
        code = PROFILE_CODE[prof]
        return lambda ts: float(profile_factors(local_time(int(ts), tz))[code])
    return make


def _record(ev: Any, out: list[AlertRecord], warm_end: int) -> None:
    if isinstance(ev, SupplyDrop | SupplyDecline):
        if ev.detected_ms >= warm_end:
            out.append(AlertRecord("supply", ev.exchange, ev.detected_ms, ev.kind))
    elif isinstance(ev, DataQuality) and ev.detected_ms >= warm_end:
        out.append(AlertRecord("data_quality", ev.meter, ev.detected_ms, ev.dq_kind))


def is_goal_drop(lb: Label) -> bool:
    """The issue's recall goal: drops of >= 20 % lasting >= 5 minutes."""
    return (lb.kind == "supply_drop" and lb.magnitude >= GOAL_DROP
            and lb.end_ms - lb.start_ms >= GOAL_DROP_MS and lb.extra.get("goal", True) is not False)


@dataclass
class MethodFigures:
    supply: CategoryScore
    goal_drops: CategoryScore
    declines: CategoryScore
    false_alarms_normal: int
    dq: CategoryScore | None = None
    dq_classified: tuple[int, int] | None = None

    def as_dict(self, normal_days: float, days: float) -> dict[str, Any]:
        def sec(v: float) -> float | None:
            return None if math.isnan(v) else round(v / 1000.0, 1)
        leads = [v / 60000.0 for v in self.declines.leads_ms]
        d: dict[str, Any] = {
            "precision": _r(self.supply.precision), "recall": _r(self.supply.recall),
            "f1": _r(self.supply.f1), "goal_drop_recall": _r(self.goal_drops.recall),
            "goal_drops": self.goal_drops.labels,
            "false_alarms": self.supply.false_alarms,
            "false_alarms_per_day": _r(self.supply.false_alarms / days if days else math.nan),
            "false_alarms_per_30_normal_days": _r(
                30.0 * self.false_alarms_normal / normal_days if normal_days else math.nan),
            "delay_median_s": sec(percentile(self.goal_drops.delays_ms, 50)),
            "delay_p95_s": sec(percentile(self.goal_drops.delays_ms, 95)),
            "decline_recall": _r(self.declines.recall),
            "lead_median_min": _r(percentile(leads, 50)), "lead_min_min": _r(min(leads, default=math.nan)),
            "declines_warned_30min": f"{sum(1 for v in leads if v >= 30)}/{self._declines_with_exhaustion}",
        }
        if self.dq is not None and self.dq_classified is not None:
            d["dq_precision"] = _r(self.dq.precision)
            d["dq_recall"] = _r(self.dq.recall)
            d["dq_false_alarms"] = self.dq.false_alarms
            d["meter_faults_classified_dq"] = f"{self.dq_classified[0]}/{self.dq_classified[1]}"
        return d

    _declines_with_exhaustion: int = 0


def _r(v: float) -> float | None:
    return None if math.isnan(v) else round(v, 3)


def figures(results: Sequence[RunResult], park: Any) -> dict[str, MethodFigures]:
    supply_of_meter = {m: x.id for x in park.exchanges for m in (*x.suppliers, *x.consumers)}
    out: dict[str, MethodFigures] = {}
    labels = [lb for r in results for lb in r.labels]
    with_exh = sum(1 for lb in labels if lb.kind == "supply_decline" and lb.exhausted_at_ms)
    for method in METHODS:
        # score run by run (targets repeat across runs), then add up
        parts = []
        for r in results:
            al = r.alerts[method]
            parts.append((
                score_category(al, r.labels, "supply"),
                score_category(al, r.labels, "supply", label_filter=is_goal_drop),
                score_category(al, r.labels, "supply",
                               label_filter=lambda lb: lb.kind == "supply_decline"),
                score_category(al, r.labels, "data_quality"),
                dq_classified(al, r.labels, supply_of_meter),
                score_category(al, r.labels, "supply").false_alarms if r.normal else 0,
            ))
        mf = MethodFigures(
            supply=_sum([p[0] for p in parts]), goal_drops=_sum([p[1] for p in parts]),
            declines=_sum([p[2] for p in parts]), false_alarms_normal=sum(p[5] for p in parts),
            dq=_sum([p[3] for p in parts]) if method == DETECTOR else None,
            dq_classified=(sum(p[4][0] for p in parts), sum(p[4][1] for p in parts))
            if method == DETECTOR else None)
        mf._declines_with_exhaustion = with_exh
        out[method] = mf
    return out


def _sum(scores: Sequence[CategoryScore]) -> CategoryScore:
    return CategoryScore(
        labels=sum(s.labels for s in scores), detected=sum(s.detected for s in scores),
        alerts=sum(s.alerts for s in scores), matched_alerts=sum(s.matched_alerts for s in scores),
        repeats=sum(s.repeats for s in scores), false_alarms=sum(s.false_alarms for s in scores),
        delays_ms=tuple(d for s in scores for d in s.delays_ms),
        leads_ms=tuple(d for s in scores for d in s.leads_ms))


ROWS = [
    ("precision", "supply precision"),
    ("recall", "supply recall (all supply events)"),
    ("f1", "supply F1"),
    ("goal_drop_recall", "recall, drops >= 20 % lasting >= 5 min"),
    ("delay_median_s", "median detection delay (s), those drops"),
    ("delay_p95_s", "p95 detection delay (s), those drops"),
    ("false_alarms", "supply false alarms (all runs)"),
    ("false_alarms_per_day", "supply false alarms per simulated day"),
    ("false_alarms_per_30_normal_days", "false alarms per 30 days, normal operation"),
    ("decline_recall", "recall, gradual declines"),
    ("lead_median_min", "early-warning lead time, median (min)"),
    ("lead_min_min", "early-warning lead time, minimum (min)"),
    ("declines_warned_30min", "declines warned >= 30 min before buffer empty"),
    ("meter_faults_classified_dq", "meter faults classified as data quality"),
    ("dq_precision", "data-quality precision"),
    ("dq_recall", "data-quality recall"),
    ("dq_false_alarms", "data-quality false alarms"),
]


def table(figs: dict[str, dict[str, Any]]) -> str:
    head = f"{'':46}" + "".join(f"{m:>18}" for m in METHODS)
    lines = [head, "-" * len(head)]
    for key, title in ROWS:
        cells = []
        for m in METHODS:
            v = figs[m].get(key)
            cells.append(f"{'-' if v is None else v!s:>18}")
        lines.append(f"{title:46}" + "".join(cells))
    return "\n".join(lines)


def goals(figs: dict[str, dict[str, Any]]) -> list[tuple[str, bool]]:
    d, s, t = figs[DETECTOR], figs[STATIC], figs[TRAILING]

    def ge(a: Any, b: float) -> bool:
        return a is not None and a >= b

    def le(a: Any, b: float) -> bool:
        return a is not None and a <= b

    warned, total = (int(x) for x in str(d["declines_warned_30min"]).split("/"))
    dq_ok, dq_all = (int(x) for x in str(d["meter_faults_classified_dq"]).split("/"))
    return [
        ("recall >= 0.98 for drops >= 20 % lasting >= 5 min", ge(d["goal_drop_recall"], 0.98)),
        ("<= 1 false alarm per 30 simulated days of normal operation",
         le(d["false_alarms_per_30_normal_days"], 1.0)),
        ("median detection delay <= 60 s", le(d["delay_median_s"], 60.0)),
        (">= 30 min warning before a buffer runs out (every gradual decline)",
         total > 0 and warned == total),
        ("every meter outage classified as data quality", dq_all > 0 and dq_ok == dq_all),
        ("F1 better than both baselines",
         ge(d["f1"], 0) and d["f1"] > (s["f1"] or 0) and d["f1"] > (t["f1"] or 0)),
        ("median delay better than both baselines",
         le(d["delay_median_s"], math.inf)
         and d["delay_median_s"] < (s["delay_median_s"] if s["delay_median_s"] is not None else math.inf)
         and d["delay_median_s"] < (t["delay_median_s"] if t["delay_median_s"] is not None else math.inf)),
    ]


def summarise(results: Sequence[RunResult], park: Any) -> dict[str, dict[str, Any]]:
    days = sum(r.days for r in results)
    normal_days = sum(r.days for r in results if r.normal)
    return {m: f.as_dict(normal_days, days) for m, f in figures(results, park).items()}


def evaluate(specs: Sequence[ScenarioSpec], park: Any, cfg: DetectorConfig | None = None,
             use_prior: bool = True) -> tuple[dict[str, dict[str, Any]], list[RunResult]]:
    """Internal-generator scenarios: run them all and compute the figures."""
    results = [run_scenario(s, park, cfg, use_prior) for s in specs]
    return summarise(results, park), results


SIM_T0_MS = 1_767_571_200_000  # 2026-01-05T00:00:00Z, a Monday


def load_runs(args: argparse.Namespace, park: Any) -> tuple[str, list[Any]]:
    """What to run: ("sim", [Scenario, ...]) for simulator YAML files, ("internal", [ScenarioSpec])
    for the internal generator's files; generating them into DIR first when asked or empty."""
    import yaml

    d: Path = args.scenarios
    if args.generate and not args.internal:
        d.mkdir(parents=True, exist_ok=True)
        for i in range(args.event_runs):
            sc = random_scenario(park, f"random-{i:02d}", args.seed * 1000 + i, args.run_days)
            (d / f"random-{i:02d}.yaml").write_text(yaml.safe_dump(sc, sort_keys=False))
        print(f"generated {args.event_runs} simulator scenarios into {d}", file=sys.stderr)
    if args.generate and args.internal:
        specs = default_scenarios(park, args.seed, args.normal_days, args.event_runs,
                                  args.run_days)
        write_scenarios(specs, d)
        print(f"generated {len(specs)} internal scenarios into {d}", file=sys.stderr)
    yamls = sorted(d.glob("*.yaml")) + sorted(d.glob("*.yml")) if d.is_dir() else []
    if yamls:
        from simulators import load_scenario

        return "sim", [load_scenario(p) for p in yamls]
    specs = read_scenarios(d) if d.is_dir() else []
    if specs:
        return "internal", specs
    raise FileNotFoundError(
        f"no scenarios in {d} (*.yaml simulator scenarios or *.scenario.json); "
        f"try --scenarios simulators/scenarios, or add --generate")


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="parkmon evaluate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenarios", type=Path, required=True,
                    help="directory of simulator scenarios (*.yaml) or internal *.scenario.json")
    ap.add_argument("--generate", action="store_true",
                    help="first write --event-runs random scenarios into DIR")
    ap.add_argument("--internal", action="store_true",
                    help="with --generate: use the internal numpy generator (detect/synthetic.py) "
                         "instead of the simulator")
    ap.add_argument("--park", default="kalundborg", help="example park name or park file path")
    ap.add_argument("--normal-days", type=float, default=30.0,
                    help="length of the normal-operation run (simulator scenarios; 0 = none)")
    ap.add_argument("--event-runs", type=int, default=12)
    ap.add_argument("--run-days", type=float, default=2.0, help="length of each generated run")
    ap.add_argument("--period", type=float, default=10.0, help="sampling period of every meter, s")
    ap.add_argument("--exchanges", default="", help="comma-separated exchange ids (default all)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-prior", action="store_true",
                    help="learn seasonal profiles from scratch instead of seeding them with the "
                         "declared meter profiles")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args(argv)
    from parkmon.errors import ParkFileError
    from parkmon.park import example_park_path, load_park

    try:
        path = Path(args.park) if Path(args.park).exists() else example_park_path(args.park)
        park = load_park(path)
        if args.exchanges:
            park = restrict(park, [x.strip() for x in args.exchanges.split(",") if x.strip()])
    except (FileNotFoundError, ParkFileError, KeyError) as exc:
        print(f"parkmon evaluate: {exc}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    try:
        mode, runs = load_runs(args, park)
        prior = not args.no_prior
        if mode == "internal":
            figs, results = evaluate(runs, park, use_prior=prior)
        else:
            results = [run_sim(sc, park, SIM_T0_MS, args.period, use_prior=prior) for sc in runs]
            if args.normal_days > 0:
                results.append(run_sim(None, park, SIM_T0_MS, args.period,
                                       duration_ms=int(args.normal_days * DAY_MS),
                                       seed=args.seed, use_prior=prior, normal=True))
            figs = summarise(results, park)
    except Exception as exc:  # a scenario that does not fit the park, a bad file
        from simulators import ScenarioError

        if isinstance(exc, FileNotFoundError | ScenarioError | KeyError | ValueError):
            print(f"parkmon evaluate: {exc}", file=sys.stderr)
            return 2
        raise
    elapsed = time.perf_counter() - t0
    n_read = sum(r.readings for r in results)
    days = sum(r.days for r in results)
    normal = sum(r.days for r in results if r.normal)
    if args.json:
        print(json.dumps({"figures": figs, "goals": dict(goals(figs)), "days": days,
                          "normal_days": normal, "readings": n_read, "source": mode}, indent=1))
        return 0
    labels = [lb for r in results for lb in r.labels if lb.scored]
    kinds: dict[str, int] = {}
    for lb in labels:
        k = str(lb.extra.get("sim_kind", lb.kind))
        kinds[k] = kinds.get(k, 0) + 1
    src = "simulator" if mode == "sim" else "internal generator"
    print(f"parkmon evaluate: park {park.id}, {len(results)} runs ({src}, {args.period:g} s "
          f"sampling), {days:g} simulated days ({normal:g} of normal operation), "
          f"{n_read} readings in {elapsed:.0f} s")
    print("labels: " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())))
    print()
    print(table(figs))
    print()
    for text, ok in goals(figs):
        print(f"  [{'x' if ok else ' '}] {text}")
    return 0
