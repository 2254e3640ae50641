"""Runs of the simulator's scenarios (simulators/, docs/simulator.md) for `parkmon evaluate`.

* `sim_labels(labels, park)` turns the simulator's JSONL labels into scoring Labels: supply
  kinds (step_drop, trip, gradual_decline, intermittent) keep their exchange target; meter
  outages (meter_silence, stuck_meter) are data-quality labels that must be answered; the other
  data-quality kinds (spikes, duplicates, out_of_order, late, clock_skew, malformed) and the
  natural ones (counter resets and roll-overs) are *neutral*: an alert on them is neither
  required nor a false alarm, but a supply alert during them still is one. Maintenance labels are
  benign. A gradual decline gets `exhausted_at_ms` from the exchange's buffer_h.
* `sim_readings(...)` yields (meter, ts_ms, canonical value, emit_ms) for what a gateway would
  accept: malformed payloads and readings in a unit other than the meter's declared one are
  dropped there (the gateway rejects them), values are converted with the meter's scale.
* `random_scenario(...)` writes a scenario in the simulator's format with random supply drops,
  trips, declines and meter outages, spaced per exchange.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from detect.scoring import Label
from detect.synthetic import HOUR_MS, buffer_exhaustion_ms

SUPPLY = {"step_drop": "supply_drop", "trip": "supply_drop", "gradual_decline": "supply_decline",
          "intermittent": "supply_drop"}
OUTAGES = {"meter_silence": "meter_silent", "stuck_meter": "meter_stuck"}


def sim_labels(labels: list[Any], park: Any) -> list[Label]:
    out = []
    for lb in labels:
        details = dict(lb.details or {})
        mag = float(lb.magnitude or 0.0)
        if lb.kind in SUPPLY:
            kind = SUPPLY[lb.kind]
            exhausted = None
            if lb.kind == "gradual_decline":
                x = park.exchange(lb.target)
                exhausted = buffer_exhaustion_ms(lb.start_ms, int(details.get("ramp_ms", 0)), mag,
                                                 lb.end_ms, float(x.buffer_h))
            extra = {"sim_kind": lb.kind, **details}
            if lb.kind == "intermittent":
                extra["goal"] = False  # on/off cycles: scored for recall, not as a >= 5 min drop
            out.append(Label(kind, lb.target, lb.start_ms, lb.end_ms, mag, exhausted, extra))
        elif lb.kind in OUTAGES:
            out.append(Label(OUTAGES[lb.kind], lb.target, lb.start_ms, lb.end_ms, 0.0, None,
                             {"sim_kind": lb.kind}))
        elif lb.category in ("data_quality", "natural") and lb.kind != "maintenance":
            out.append(Label(f"dq_minor_{lb.kind}", lb.target, lb.start_ms, lb.end_ms, mag, None,
                             {"sim_kind": lb.kind, "scored": False}))
        elif lb.kind == "maintenance":
            out.append(Label("maintenance", lb.target, lb.start_ms, lb.end_ms, 0.0, None,
                             {"sim_kind": lb.kind}))
    return out


def sim_readings(readings: Iterator[Any], park: Any) -> Iterator[tuple[str, int, float, int]]:
    meters = park.meters_by_id
    for r in readings:
        if r.raw is not None:
            continue
        m = meters.get(r.meter)
        if m is None or r.unit != m.unit:
            continue
        yield r.meter, r.ts_ms, m.to_canonical(r.value), r.emit_ms


def random_scenario(park: Any, name: str, seed: int, days: float, warmup_h: float = 6.0
                    ) -> dict[str, Any]:
    """A scenario (simulator YAML structure) with random supply and meter faults per exchange."""
    rng = np.random.default_rng(seed)
    events: list[dict[str, Any]] = []
    end_h = days * 24.0 - 1.0
    for x in park.exchanges:
        t = warmup_h + float(rng.uniform(0, 4))
        while True:
            kind = str(rng.choice(["step_drop", "step_drop", "trip", "gradual_decline",
                                   "meter_silence", "stuck_meter"]))
            if kind in ("step_drop", "trip"):
                dur = float(rng.uniform(5, 90)) / 60
                ev: dict[str, Any] = {"kind": kind, "exchange": x.id}
                if kind == "step_drop":
                    ev["magnitude"] = round(float(rng.uniform(0.2, 0.9)), 2)
            elif kind == "gradual_decline":
                ramp = float(rng.uniform(0.5, 4.0))
                mag = round(float(rng.uniform(0.4, 1.0)), 2)
                exh = buffer_exhaustion_ms(0, int(ramp * HOUR_MS), mag, 1 << 60, float(x.buffer_h))
                hold = (exh / HOUR_MS - ramp + 1.0) if exh is not None else 3.0
                dur = ramp + min(max(hold, 1.0), 16.0)
                ev = {"kind": kind, "exchange": x.id, "ramp": f"{round(ramp * 60)}m",
                      "magnitude": mag}
            else:
                dur = float(rng.uniform(10, 120)) / 60
                ev = {"kind": kind, "meter": str(rng.choice([*x.suppliers, *x.consumers]))}
            if t + dur > end_h:
                break
            ev["at"] = f"{round(t * 60)}m"
            ev["duration"] = f"{round(dur * 60)}m"
            if kind == "gradual_decline":  # the simulator's ramp is minutes; keep within window
                ev["duration"] = f"{max(round(dur * 60), int(ev['ramp'][:-1]))}m"
            events.append(ev)
            t += dur + float(rng.uniform(2, 10))
    return {"name": name, "description": "random supply and meter faults (parkmon evaluate)",
            "duration": f"{round(days * 24)}h", "seed": int(rng.integers(1 << 31)),
            "events": events}
