"""A small internal generator of labelled scenarios for `parkmon evaluate`. Pure numpy, seeded.

It stands in for the simulator's scenario runs: it produces the readings of every meter of every
exchange of a park (rate meters per hour, counter meters cumulative, `period_s` apart) with

* the declared production profile of the supplier meter (`declared_profile`) times the exchange's
  nominal rate, a shared AR(1) process noise (both sides of an exchange see the same flow, the
  consumers receive it minus losses) and independent white measurement noise per meter;
* one-sample glitches (a reading 70 % low) now and then: noise that must not fire;
* labelled events: `supply_drop` (abrupt, magnitude m for a duration), `supply_decline` (linear
  ramp to m over `ramp_ms`, then held; its label carries `exhausted_at_ms`, when the consumers'
  buffer of `buffer_h` hours actually runs out), meter faults `meter_silent`, `meter_stuck`,
  `meter_dead` (reads zero / register frozen) and `meter_out_of_range`, and the benign
  `maintenance` (declared, supply goes to zero) and `planned_change` (declared cut to a factor).

A scenario is a JSON-able `ScenarioSpec`; the readings are regenerated from it deterministically.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from detect.scoring import Label
from detect.suppression import PlannedWindow

HOUR_MS = 3_600_000
DAY_MS = 86_400_000
T0_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z: a Thursday


def declared_profile(profile: str, ts_ms: int) -> float:
    """Relative production level for a meter's declared profile at UTC ts_ms (park local time is
    approximated by UTC+1). Mean over a week is about 1 for `continuous` and `heat_demand`."""
    local = ts_ms + HOUR_MS
    h = (local % DAY_MS) / HOUR_MS
    workday = ((local // DAY_MS) + 3) % 7 < 5

    def step(x: float, edge: float) -> float:
        return 0.5 * (1.0 + math.tanh((x - edge) / 0.25))

    if profile == "shifts":
        return (0.3 + 0.7 * step(h, 6.0) * (1.0 - step(h, 22.0))) if workday else 0.25
    if profile == "daytime":
        return (0.15 + 0.85 * step(h, 8.0) * (1.0 - step(h, 17.0))) if workday else 0.15
    if profile == "heat_demand":
        return (1.0 + 0.15 * math.exp(-((h - 7.5) ** 2) / 4.0)
                + 0.1 * math.exp(-((h - 19.0) ** 2) / 6.0) - 0.12 * math.exp(-((h - 3.0) ** 2) / 6.0))
    if profile == "weekdays":
        return 1.0 if workday else 0.6
    return 1.0


@dataclass
class ScenarioSpec:
    name: str
    seed: int
    start_ms: int
    days: float
    period_s: float = 10.0
    warmup_h: float = 6.0
    events: list[dict[str, Any]] = field(default_factory=list)
    process_sigma: float = 0.02
    meter_sigma: float = 0.01
    glitch_per_day: float = 1.0

    @property
    def end_ms(self) -> int:
        return self.start_ms + int(self.days * DAY_MS)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, raw: str) -> ScenarioSpec:
        return cls(**json.loads(raw))


def _exchange_profile(park: Any, x: Any) -> str:
    return str(park.meter(x.suppliers[0]).profile)


def prior_for(park: Any) -> Any:
    """Per-exchange seasonal prior (the declared profile) for ParkMonitor(prior_for=...)."""
    def make(x: Any) -> Any:
        prof = _exchange_profile(park, x)
        return None if prof == "continuous" else (lambda ts: declared_profile(prof, ts))
    return make


def buffer_exhaustion_ms(start_ms: int, ramp_ms: int, magnitude: float, end_ms: int,
                         buffer_h: float) -> int | None:
    """When a buffer of buffer_h hours runs out under a shortfall ramping linearly from 0 to
    `magnitude` over ramp_ms after start_ms and held until end_ms; None when it never does."""
    if buffer_h <= 0:
        return None  # no buffer: the consumer is hit at once, no warning is possible
    ramp_h = ramp_ms / HOUR_MS
    full = 0.5 * magnitude * ramp_h  # deficit at the end of the ramp
    if ramp_h > 0 and full >= buffer_h:
        t_h = math.sqrt(2.0 * buffer_h * ramp_h / magnitude)
        return start_ms + int(t_h * HOUR_MS)
    if magnitude <= 0:
        return None
    t = start_ms + ramp_ms + int((buffer_h - full) / magnitude * HOUR_MS)
    return t if t <= end_ms else None


def labels_of(spec: ScenarioSpec, park: Any) -> list[Label]:
    out = []
    for e in spec.events:
        exhausted = None
        if e["kind"] == "supply_decline":
            x = park.exchange(e["target"])
            exhausted = buffer_exhaustion_ms(e["start_ms"], e.get("ramp_ms", 0), e["magnitude"],
                                             e["end_ms"], float(x.buffer_h))
        out.append(Label(e["kind"], e["target"], e["start_ms"], e["end_ms"],
                         float(e.get("magnitude", 0.0)), exhausted,
                         {k: v for k, v in e.items()
                          if k not in ("kind", "target", "start_ms", "end_ms", "magnitude")}))
    return out


def planned_windows(spec: ScenarioSpec, park: Any) -> list[PlannedWindow]:
    """The declared windows of a scenario (maintenance, planned changes) for the detector."""
    out = []
    for e in spec.events:
        if e["kind"] not in ("maintenance", "planned_change"):
            continue
        x = park.exchange(e["target"])
        meters = frozenset((*x.suppliers, *x.consumers))
        factor = None if e["kind"] == "maintenance" else float(e.get("factor", 1.0))
        out.append(PlannedWindow(meters, e["start_ms"], e["end_ms"], factor, e["kind"]))
    return out


def readings(spec: ScenarioSpec, park: Any) -> Iterator[tuple[int, list[tuple[str, int, float]]]]:
    """Yields (step time, [(meter, ts_ms, value), ...]) in time order."""
    rng = np.random.default_rng(spec.seed)
    step_ms = int(spec.period_s * 1000)
    n = int(spec.days * DAY_MS // step_ms)
    t = spec.start_ms + np.arange(n, dtype=np.int64) * step_ms
    phi = 0.97
    series: dict[str, np.ndarray] = {}
    kinds: dict[str, str] = {}
    offsets: dict[str, int] = {}
    for x in park.exchanges:
        prof = _exchange_profile(park, x)
        stride = max(1, 60_000 // step_ms)
        coarse = np.array([declared_profile(prof, int(ts)) for ts in t[::stride]])
        base = np.repeat(coarse, stride)[:n]
        factor = np.ones(n)
        for e in spec.events:
            if e["target"] != x.id:
                continue
            i0 = int(np.searchsorted(t, e["start_ms"]))
            i1 = int(np.searchsorted(t, e["end_ms"]))
            k = e["kind"]
            if k == "supply_drop":
                factor[i0:i1] *= 1.0 - e["magnitude"]
            elif k == "supply_decline":
                ramp = max(1, int(e["ramp_ms"] // step_ms))
                shape = np.minimum(np.arange(i1 - i0) / ramp, 1.0)
                factor[i0:i1] *= 1.0 - e["magnitude"] * shape
            elif k == "maintenance":
                factor[i0:i1] *= 0.0
            elif k == "planned_change":
                ramp = max(1, 180_000 // step_ms)
                m = 1.0 - float(e["factor"])
                up = np.minimum(np.arange(i1 - i0) / ramp, 1.0)
                factor[i0:i1] *= 1.0 - m * up
                back = min(ramp, n - i1)
                factor[i1:i1 + back] *= 1.0 - m * (1.0 - np.arange(back) / ramp)
        eps = rng.standard_normal(n) * spec.process_sigma * math.sqrt(1 - phi * phi)
        ar = np.zeros(n)
        acc = 0.0
        for i in range(n):  # AR(1) process noise shared by both sides
            acc = phi * acc + eps[i]
            ar[i] = acc
        flow = x.nominal_rate * base * factor * (1.0 + ar)
        flow = np.maximum(flow, 0.0)
        sides = [(m, 1.0 / len(x.suppliers)) for m in x.suppliers] + [
            (m, (1.0 - x.loss_fraction) * s) for m, s in zip(x.consumers, x.consumer_shares, strict=True)]
        for mid, share in sides:
            v = flow * share * (1.0 + spec.meter_sigma * rng.standard_normal(n))
            v = np.maximum(v, 0.0)
            glitches = rng.random(n) < spec.glitch_per_day * step_ms / DAY_MS
            v[glitches] *= 0.3
            series[mid] = v
            kinds[mid] = park.meter(mid).kind
            offsets[mid] = int(rng.integers(0, min(step_ms, 5000)))
    # counters: cumulative register of the (true-ish) rate
    values: dict[str, np.ndarray] = {}
    for mid, v in series.items():
        if kinds[mid] == "counter":
            values[mid] = 1000.0 + np.round(np.cumsum(v * step_ms / HOUR_MS), 4)
        else:
            values[mid] = np.round(v, 4)
    silent = {mid: np.zeros(n, dtype=bool) for mid in series}
    for e in spec.events:
        mid = e["target"]
        if mid not in values:
            continue
        i0 = int(np.searchsorted(t, e["start_ms"]))
        i1 = int(np.searchsorted(t, e["end_ms"]))
        k = e["kind"]
        v = values[mid]
        if k == "meter_silent":
            silent[mid][i0:i1] = True
        elif k == "meter_stuck":
            v[i0:i1] = v[max(i0 - 1, 0)]
            if kinds[mid] == "counter":  # the register resumes where it would be
                pass
        elif k == "meter_dead":
            v[i0:i1] = v[max(i0 - 1, 0)] if kinds[mid] == "counter" else 0.0
        elif k == "meter_out_of_range":
            v[i0:i1] = -1.0
    order = list(values)
    cols = [values[m].tolist() for m in order]
    sil = [silent[m].tolist() for m in order]
    offs = [offsets[m] for m in order]
    tl = t.tolist()
    for i in range(n):
        batch = [(order[j], tl[i] + offs[j], cols[j][i]) for j in range(len(order)) if not sil[j][i]]
        yield tl[i], batch


def default_scenarios(park: Any, seed: int = 1, normal_days: float = 30.0,
                      event_runs: int = 12, run_days: float = 2.0,
                      period_s: float = 10.0) -> list[ScenarioSpec]:
    """The default evaluation set: one long run of normal operation (with glitches, declared
    maintenance and planned changes, which must not fire) and `event_runs` runs with labelled
    supply drops, gradual declines and meter faults."""
    rng = np.random.default_rng(seed)
    xs = list(park.exchanges)
    specs = []
    start = T0_MS
    warm_ms = 6 * HOUR_MS
    normal = ScenarioSpec("normal", int(rng.integers(1 << 31)), start, normal_days, period_s)
    for _ in range(max(1, int(normal_days // 3))):
        x = xs[int(rng.integers(len(xs)))]
        s0 = start + warm_ms + int(rng.uniform(0, normal_days * DAY_MS - 2 * warm_ms))
        if rng.random() < 0.5:
            normal.events.append({"kind": "maintenance", "target": x.id, "start_ms": s0,
                                  "end_ms": s0 + int(rng.uniform(2, 8) * HOUR_MS)})
        else:
            normal.events.append({"kind": "planned_change", "target": x.id, "start_ms": s0,
                                  "end_ms": s0 + int(rng.uniform(2, 12) * HOUR_MS),
                                  "factor": round(float(rng.uniform(0.4, 0.8)), 2)})
    specs.append(normal)
    for r in range(event_runs):
        spec = ScenarioSpec(f"events-{r:02d}", int(rng.integers(1 << 31)),
                            start + (r + 1) * 7 * DAY_MS, run_days, period_s)
        busy: dict[str, int] = {}
        for x in xs:
            t_free = spec.start_ms + warm_ms + int(rng.uniform(0, 4) * HOUR_MS)
            while True:
                kind = str(rng.choice(["supply_drop", "supply_drop", "supply_decline",
                                       "meter_silent", "meter_stuck", "meter_dead",
                                       "meter_out_of_range"]))
                if kind == "supply_drop":
                    dur = int(rng.uniform(5, 90) * 60_000)
                    ev = {"kind": kind, "target": x.id, "magnitude": round(float(rng.uniform(0.2, 1.0)), 2)}
                elif kind == "supply_decline":
                    ramp = int(rng.uniform(0.5, 4.0) * HOUR_MS)
                    mag = round(float(rng.uniform(0.4, 1.0)), 2)
                    exh = buffer_exhaustion_ms(0, ramp, mag, 1 << 60, float(x.buffer_h))
                    hold = (exh - ramp + HOUR_MS) if exh is not None else 3 * HOUR_MS
                    dur = ramp + int(min(max(hold, HOUR_MS), 16 * HOUR_MS))
                    ev = {"kind": kind, "target": x.id, "ramp_ms": ramp, "magnitude": mag}
                else:
                    meters = [*x.suppliers, *x.consumers]
                    dur = int(rng.uniform(10, 120) * 60_000)
                    ev = {"kind": kind, "target": str(rng.choice(meters))}
                if t_free + dur > spec.end_ms - HOUR_MS:
                    break
                ev["start_ms"] = t_free
                ev["end_ms"] = t_free + dur
                spec.events.append(ev)
                t_free += dur + int(rng.uniform(2, 10) * HOUR_MS)
            busy[x.id] = t_free
        specs.append(spec)
    return specs


def write_scenarios(specs: list[ScenarioSpec], directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for s in specs:
        (directory / f"{s.name}.scenario.json").write_text(s.to_json())


def read_scenarios(directory: Path) -> list[ScenarioSpec]:
    return [ScenarioSpec.from_json(p.read_text()) for p in sorted(directory.glob("*.scenario.json"))]
