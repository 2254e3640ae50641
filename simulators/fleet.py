"""The simulated sensor fleet: a deterministic generator of readings for a whole park.

    fleet = Fleet(park, seed=7, start_ms=t0, scenario=scenario)
    for r in fleet.readings(until_ms=t0 + 3_600_000):   # event-time order (device send order)
        ...                                               # r.meter, r.ts_ms, r.value, r.unit, r.seq
    fleet.labels                                          # ground truth (see scenarios.Label)

No I/O, no wall clock: the same (park, seed, start_ms, scenario, options) always yields the same
readings, whether generated in one call or in several consecutive `readings(until_ms)` calls.

The model, per simulation step (the gcd of the meters' sampling periods):

1. every meter has a *process target*: its nominal rate (exchange suppliers share the exchange's
   nominal rate) times its profile factor (shifts, weekdays, diurnal/seasonal heat demand), zero in
   planned maintenance; the process moves towards the target within a ramp limit;
2. multiplicative AR(1) noise, clipped to [0, capacity];
3. supply faults of the scenario multiply the supplier meters' output;
4. each consumer meter of an exchange receives sum(supplier output) x (1 - loss) x its share, so
   every exchange is mass-consistent; a consumer's shortfall against the undisturbed delivery is
   made up by its enterprise's own virgin/grid meter of the same carrier and material, if any;
5. counters integrate the rate (cumulative quantity; they start at an arbitrary register value,
   roll over at `rollover` and are occasionally reset to 0, both labelled);
6. meters whose period is due report their value in their declared unit; data-quality faults of the
   scenario then alter what is sent (silence, stuck, spikes, duplicates, out-of-order, late,
   clock skew, malformed payloads).
"""

from __future__ import annotations

import heapq
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import reduce
from typing import Any

import numpy as np

from parkmon.park import Park
from simulators.scenarios import (
    DEFAULT_MAGNITUDE,
    MALFORMED_VARIANTS,
    Label,
    ResolvedEvent,
    Scenario,
    label_for,
    parse_duration_ms,
    resolve,
)
from simulators.signals import (
    HOUR_MS,
    PROFILE_CODE,
    ar1_step,
    local_time,
    profile_factors,
    ramp_limit,
)


@dataclass(slots=True)
class SimReading:
    """One reading as a device sends it.

    ts_ms is the event time the device stamps (may be skewed); emit_ms the simulated wall time at
    which the device sends it (later than ts_ms for late / out-of-order / duplicate readings).
    tag is None for a normal reading, else the fault that produced or altered it: "duplicate",
    "out_of_order", "late", "clock_skew", "spike", "stuck", "malformed". For "malformed", `raw`
    holds the exact bytes to publish and value/unit are not meaningful.
    """

    meter: str
    enterprise: str
    ts_ms: int
    value: float
    unit: str
    seq: int
    emit_ms: int
    tag: str | None = None
    raw: bytes | None = None

    def payload(self) -> dict[str, Any]:
        """The reading as a JSON object of the payload schema (parkmon/schemas/reading.schema.json)."""
        return {"meter": self.meter, "ts_ms": self.ts_ms, "value": self.value, "unit": self.unit,
                "seq": self.seq}


@dataclass(frozen=True, slots=True)
class FleetOptions:
    noise: float = 0.03  # standard deviation of the multiplicative process noise
    noise_tau_s: float = 900.0  # correlation time of that noise
    ramp_per_h: float = 2.0  # largest change per hour, as a fraction of capacity
    counter_resets_per_day: float = 0.01  # per counter meter (meter replacement / power cycle)
    substitution: bool = True  # a consumer's shortfall is made up by its own virgin supply
    meter_bias: float = 0.0  # std of each meter's fixed relative calibration error (0.005 = 0.5 %)


class Fleet:
    def __init__(self, park: Park, seed: int = 0, start_ms: int = 0,
                 scenario: Scenario | None = None, options: FleetOptions | None = None,
                 scenario_source: str = "<scenario>") -> None:
        self.park = park
        self.seed = seed
        self.start_ms = int(start_ms)
        self.options = options or FleetOptions()
        self.scenario = scenario
        ss = np.random.SeedSequence(seed)
        phys, counters, faults, init = ss.spawn(4)
        self._rng = np.random.default_rng(phys)
        self._rng_counters = np.random.default_rng(counters)
        self._rng_faults = np.random.default_rng(faults)
        rng_init = np.random.default_rng(init)

        meters = park.meters
        self._meters = meters
        self._ids = [m.id for m in meters]
        self._ents = [m.enterprise for m in meters]
        self._units = [m.unit for m in meters]
        index = {m.id: i for i, m in enumerate(meters)}
        self._index = index
        n = len(meters)
        periods = [max(1000, int(round(m.period_s * 1000))) for m in meters]
        self.step_ms = reduce(math.gcd, periods)
        self._period_ms = np.array(periods, dtype=np.int64)
        self._step_h = self.step_ms / HOUR_MS

        self._capacity = np.array([m.capacity for m in meters], dtype=np.float64)
        base = np.array([m.nominal if m.nominal is not None else 0.6 * m.capacity for m in meters])
        # exchanges: suppliers share the nominal rate by capacity
        sup_idx: list[int] = []
        sup_ex: list[int] = []
        cons_idx: list[int] = []
        cons_ex: list[int] = []
        cons_share: list[float] = []
        for e_i, x in enumerate(park.exchanges):
            caps = [meters[index[s]].capacity for s in x.suppliers]
            total = sum(caps) or 1.0
            for s, cap in zip(x.suppliers, caps, strict=True):
                base[index[s]] = x.nominal_rate * cap / total
                sup_idx.append(index[s])
                sup_ex.append(e_i)
            for c, share in zip(x.consumers, x.consumer_shares, strict=True):
                cons_idx.append(index[c])
                cons_ex.append(e_i)
                cons_share.append(share)
        self._base = np.minimum(base, self._capacity)
        self._sup_idx = np.array(sup_idx, dtype=np.int64)
        self._sup_ex = np.array(sup_ex, dtype=np.int64)
        self._cons_idx = np.array(cons_idx, dtype=np.int64)
        self._cons_ex = np.array(cons_ex, dtype=np.int64)
        self._cons_share = np.array(cons_share, dtype=np.float64)
        self._keep = np.array([1.0 - x.loss_fraction for x in park.exchanges], dtype=np.float64)
        self._n_ex = len(park.exchanges)
        # substitution: consumer meter -> own virgin/grid meter of the same carrier and material
        in_exchange = set(park.exchange_of_meter)
        backup: list[int] = []
        for ci in cons_idx:
            cm = meters[ci]
            cand = [i for i in (index[m.id] for m in park.meters_of.get(cm.enterprise, ()))
                    if meters[i].direction == "input" and meters[i].carrier == cm.carrier
                    and meters[i].material == cm.material and meters[i].id not in in_exchange
                    and meters[i].dimension == cm.dimension]
            backup.append(cand[0] if cand else -1)
        self._backup = np.array(backup, dtype=np.int64)

        self._profile = np.array([PROFILE_CODE[m.profile] for m in meters], dtype=np.int64)
        self._sigma = np.full(n, self.options.noise)
        self._phi = math.exp(-self.step_ms / 1000.0 / max(1e-9, self.options.noise_tau_s))
        self._ramp_step = self._capacity * self.options.ramp_per_h * self._step_h
        self._is_counter = np.array([m.kind == "counter" for m in meters])
        self._scale = np.array([m.scale for m in meters], dtype=np.float64)
        self._rollover = [m.rollover for m in meters]
        self._maint = [(w, np.array([i for i, m in enumerate(meters) if (
            m.id in w.meters if w.meters else m.enterprise == w.enterprise)], dtype=np.int64))
            for w in park.maintenance]

        # state
        self._t = self.start_ms
        self._process = self._target(self.start_ms)
        self._noise = self._sigma * rng_init.standard_normal(n)
        self._cum = np.zeros(n)  # canonical quantity since start (counters)
        reg0 = []
        for k, m in enumerate(meters):  # arbitrary initial register, in canonical units
            if m.rollover is not None:  # close enough to the roll-over that it happens in a day
                reg0.append(m.rollover - float(self._base[k]) * float(rng_init.uniform(1.0, 20.0)))
            else:
                reg0.append(float(rng_init.uniform(0.0, 1000.0)) * m.capacity)
        self._reg0 = np.maximum(np.array(reg0), 0.0)
        self._last_register = self._reg0.copy()
        self._seq = [0] * n
        self._last_value: list[float | None] = [None] * n
        self._heap: list[tuple[int, int, SimReading]] = []
        self._heap_counter = 0
        # measurement: each meter's calibration bias (drawn last so that it changes nothing else)
        self._bias: np.ndarray | None = None
        if self.options.meter_bias > 0:
            self._bias = 1.0 + self.options.meter_bias * rng_init.standard_normal(n)

        # scenario
        self.labels: list[Label] = []
        self._events: list[ResolvedEvent] = []
        self._event_labels: dict[int, Label] = {}
        if scenario is not None:
            self._events = resolve(scenario, park, self.start_ms, source=scenario_source)
            for ev in self._events:
                label = label_for(ev, park, scenario.name)
                self.labels.append(label)
                self._event_labels[ev.index] = label
        self._supply_events = [ev for ev in self._events if ev.is_supply]
        self._supply_idx = {ev.index: np.array([index[m] for m in ev.meters], dtype=np.int64)
                            for ev in self._supply_events}
        self._dq_events = [ev for ev in self._events if not ev.is_supply]
        self._spike_ts: dict[int, set[int]] = {}
        for ev in self._dq_events:
            lab = self._event_labels[ev.index]
            i = index[ev.meters[0]]
            if ev.kind == "spikes":
                period = int(self._period_ms[i])
                first = self.start_ms + -(-(ev.start_ms - self.start_ms) // period) * period
                ticks = list(range(first, ev.end_ms, period))
                k = min(ev.event.count, len(ticks))
                chosen = sorted(int(ticks[j]) for j in rng_init.choice(len(ticks), k, replace=False)) \
                    if ticks else []
                self._spike_ts[ev.index] = set(chosen)
                lab.details["spike_ts_ms"] = chosen
            lab.details.setdefault("readings_affected", 0)
            if ev.kind == "duplicates":
                lab.details["duplicates"] = 0
            if ev.kind == "malformed":
                lab.details["malformed"] = {}
        self._maint_labelled: set[int] = set()

    # ------------------------------------------------------------------ physics

    def _target(self, ts_ms: int) -> np.ndarray:
        pf = profile_factors(local_time(ts_ms, self.park.timezone))
        target = np.minimum(self._base * pf[self._profile], self._capacity)
        for w, idx in self._maint:
            if w.start_ms <= ts_ms < w.end_ms and idx.size:
                target[idx] = 0.0
        return target

    def _rates(self, t: int) -> np.ndarray:
        """True flow rates (canonical per hour) of every meter over the step ending at t."""
        target = self._target(t)
        self._process = ramp_limit(self._process, target, self._ramp_step)
        self._noise = ar1_step(self._noise, self._rng, self._phi, self._sigma)
        rate = np.clip(self._process * (1.0 + self._noise), 0.0, self._capacity)
        undisturbed = None
        if self._supply_events:
            mult = np.ones_like(rate)
            for ev in self._supply_events:
                f = ev.supply_factor(t)
                if f != 1.0:
                    mult[self._supply_idx[ev.index]] *= f
            if self._cons_idx.size and self.options.substitution:
                undisturbed = np.bincount(self._sup_ex, weights=rate[self._sup_idx],
                                          minlength=self._n_ex)
            rate = rate * mult
        if self._cons_idx.size:
            supplied = np.bincount(self._sup_ex, weights=rate[self._sup_idx], minlength=self._n_ex)
            delivered = supplied[self._cons_ex] * self._keep[self._cons_ex] * self._cons_share
            rate[self._cons_idx] = delivered
            if undisturbed is not None:
                normal = undisturbed[self._cons_ex] * self._keep[self._cons_ex] * self._cons_share
                shortfall = np.maximum(normal - delivered, 0.0)
                has = self._backup >= 0
                if has.any():
                    b = self._backup[has]
                    np.add.at(rate, b, shortfall[has])
                    rate[b] = np.minimum(rate[b], self._capacity[b])
        return rate

    # ------------------------------------------------------------------ emission

    def _push(self, r: SimReading) -> None:
        self._heap_counter += 1
        heapq.heappush(self._heap, (r.emit_ms, self._heap_counter, r))

    def _step(self, t: int) -> list[SimReading]:
        rate = self._rates(t)
        if self._bias is not None:
            rate = rate * self._bias  # what the meters measure (flows stay mass-consistent)
        self._cum += rate * self._step_h
        due = np.nonzero(((t - self.start_ms) % self._period_ms) == 0)[0]
        if due.size == 0:
            return []
        # registers (canonical) of due counters, with resets and roll-overs
        register = self._reg0 + self._cum
        values = np.where(self._is_counter, register, rate) / self._scale
        vals = values[due].tolist()
        out: list[SimReading] = []
        p_reset = self.options.counter_resets_per_day * self.step_ms / 86_400_000
        active = [ev for ev in self._dq_events if ev.start_ms <= t < ev.end_ms] if self._dq_events else []
        by_meter: dict[int, list[ResolvedEvent]] = {}
        for ev in active:
            by_meter.setdefault(self._index[ev.meters[0]], []).append(ev)
        self._label_maintenance(t)
        for k, i in enumerate(due.tolist()):
            value = vals[k]
            if self._is_counter[i]:
                value = self._counter_value(i, t, register, p_reset)
            evs = by_meter.get(i)
            if evs is None:
                self._seq[i] += 1
                self._last_value[i] = value
                out.append(SimReading(self._ids[i], self._ents[i], t, value, self._units[i],
                                      self._seq[i], t))
                continue
            self._emit_with_faults(i, t, value, evs, out)
        return out

    def _counter_value(self, i: int, t: int, register: np.ndarray, p_reset: float) -> float:
        reg = float(register[i])
        if p_reset > 0.0 and self._rng_counters.random() < p_reset * (self._period_ms[i] / self.step_ms):
            # reset to 0: the register restarts from zero from here on
            self._reg0[i] -= reg
            reg = 0.0
            self.labels.append(Label(kind="counter_reset", category="natural", target=self._ids[i],
                                     enterprise=self._ents[i], meters=[self._ids[i]], start_ms=t,
                                     end_ms=t + 1, magnitude=None, unit=None,
                                     exchange=self._exchange_id(i), id=f"reset-{self._ids[i]}-{t}"))
        roll = self._rollover[i]
        if roll is not None:
            wraps_before = math.floor(float(self._last_register[i]) / roll)
            wraps_now = math.floor(reg / roll)
            if wraps_now > wraps_before and reg > 0.0:
                self.labels.append(Label(
                    kind="counter_rollover", category="natural", target=self._ids[i],
                    enterprise=self._ents[i], meters=[self._ids[i]], start_ms=t, end_ms=t + 1,
                    magnitude=roll / self._scale[i], unit=self._units[i],
                    exchange=self._exchange_id(i), id=f"rollover-{self._ids[i]}-{t}"))
            self._last_register[i] = reg
            reg = math.fmod(reg, roll)
        else:
            self._last_register[i] = reg
        return reg / float(self._scale[i])

    def _exchange_id(self, i: int) -> str | None:
        x = self.park.exchange_of_meter.get(self._ids[i])
        return x.id if x else None

    def _label_maintenance(self, t: int) -> None:
        for k, (w, idx) in enumerate(self._maint):
            if k not in self._maint_labelled and w.start_ms <= t < w.end_ms:
                self._maint_labelled.add(k)
                self.labels.append(Label(
                    kind="maintenance", category="natural", target=w.enterprise,
                    enterprise=w.enterprise, meters=[self._ids[j] for j in idx.tolist()],
                    start_ms=w.start_ms, end_ms=w.end_ms, id=f"maintenance-{k}",
                    details={"description": w.description} if w.description else {}))

    def _emit_with_faults(self, i: int, t: int, value: float, evs: list[ResolvedEvent],
                          out: list[SimReading]) -> None:
        kinds = {ev.kind: ev for ev in evs}
        rng = self._rng_faults
        if "meter_silence" in kinds:
            self._event_labels[kinds["meter_silence"].index].details["readings_affected"] += 1
            return
        self._seq[i] += 1
        r = SimReading(self._ids[i], self._ents[i], t, value, self._units[i], self._seq[i], t)
        if "stuck_meter" in kinds:
            ev = kinds["stuck_meter"]
            lab = self._event_labels[ev.index]
            if "stuck_value" not in lab.details:
                lab.details["stuck_value"] = self._last_value[i] if self._last_value[i] is not None else value
            r.value = lab.details["stuck_value"]
            r.tag = "stuck"
            lab.details["readings_affected"] += 1
        else:
            self._last_value[i] = value
        if "spikes" in kinds and t in self._spike_ts[kinds["spikes"].index]:
            ev = kinds["spikes"]
            factor = ev.event.magnitude if ev.event.magnitude is not None else DEFAULT_MAGNITUDE["spikes"]
            r.value = r.value * factor if r.value != 0 else factor * float(self._capacity[i]) / float(self._scale[i])
            r.tag = "spike"
            self._event_labels[ev.index].details["readings_affected"] += 1
        if "clock_skew" in kinds:
            ev = kinds["clock_skew"]
            skew_s = ev.event.magnitude if ev.event.magnitude is not None else DEFAULT_MAGNITUDE["clock_skew"]
            r.ts_ms = t + int(round(skew_s * 1000))
            r.tag = "clock_skew"
            self._event_labels[ev.index].details["readings_affected"] += 1
        if "malformed" in kinds:
            ev = kinds["malformed"]
            if rng.random() < ev.event.fraction:
                variant = ev.event.variants[int(rng.integers(len(ev.event.variants)))]
                r.raw = malformed_payload(r, variant, self.park.meter(r.meter).dimension)
                r.tag = "malformed"
                lab = self._event_labels[ev.index]
                lab.details["readings_affected"] += 1
                lab.details["malformed"][variant] = lab.details["malformed"].get(variant, 0) + 1
        period = int(self._period_ms[i])
        if "late" in kinds:
            ev = kinds["late"]
            delay_s = ev.event.magnitude if ev.event.magnitude is not None else DEFAULT_MAGNITUDE["late"]
            r.emit_ms = t + int(round(delay_s * 1000))
            r.tag = r.tag or "late"
            self._event_labels[ev.index].details["readings_affected"] += 1
        elif "out_of_order" in kinds:
            ev = kinds["out_of_order"]
            if rng.random() < ev.event.fraction:
                max_s = ev.event.magnitude if ev.event.magnitude is not None else DEFAULT_MAGNITUDE["out_of_order"]
                hi = max(period + 1, int(max_s * 1000))
                r.emit_ms = t + int(rng.integers(period, hi + 1))
                r.tag = r.tag or "out_of_order"
                self._event_labels[ev.index].details["readings_affected"] += 1
        if r.emit_ms > t:
            self._push(r)
        else:
            out.append(r)
        if "duplicates" in kinds and r.raw is None:
            ev = kinds["duplicates"]
            if rng.random() < ev.event.fraction:
                dup = SimReading(r.meter, r.enterprise, r.ts_ms, r.value, r.unit, r.seq,
                                 r.emit_ms + int(rng.integers(0, period)), "duplicate")
                self._push(dup)
                lab = self._event_labels[ev.index]
                lab.details["duplicates"] += 1
                lab.details["readings_affected"] += 1

    # ------------------------------------------------------------------ public iteration

    @property
    def now_ms(self) -> int:
        """The next simulation step's event time (everything before it has been generated)."""
        return self._t

    def batches(self, until_ms: int) -> Iterator[list[SimReading]]:
        """Readings grouped by simulation step, for steps with event time < until_ms, in send
        (emit) order. Delayed readings come out in the step at or after their emit time."""
        while self._t < until_ms:
            t = self._t
            fresh = self._step(t)
            self._t = t + self.step_ms
            if self._heap and self._heap[0][0] <= t:
                batch: list[SimReading] = []
                while self._heap and self._heap[0][0] <= t:
                    batch.append(heapq.heappop(self._heap)[2])
                batch.extend(fresh)
                fresh = batch
            if fresh:
                yield fresh

    def readings(self, until_ms: int) -> Iterator[SimReading]:
        """Readings of every meter for event times in [current position, until_ms), one by one."""
        for batch in self.batches(until_ms):
            yield from batch

    def pending(self) -> int:
        """Readings generated but held back (late / out-of-order / duplicates not yet sent)."""
        return len(self._heap)

    def drain(self) -> list[SimReading]:
        """Everything still held back, in emit order (call at the end of a run)."""
        out = [heapq.heappop(self._heap)[2] for _ in range(len(self._heap))]
        return out


def malformed_payload(r: SimReading, variant: str, dimension: str) -> bytes:
    """A broken payload for reading r, of one of MALFORMED_VARIANTS (what a faulty device sends)."""
    good = r.payload()
    if variant == "invalid_json":
        return json.dumps(good).encode()[:-7]
    if variant == "missing_field":
        good.pop("unit")
    elif variant == "wrong_unit":
        good["unit"] = {"energy": "t", "mass": "MWh", "volume": "MWh"}[dimension]
    elif variant == "unknown_unit":
        good["unit"] = "zorkmid"
    elif variant == "not_finite":
        good["value"] = math.nan
    elif variant == "unknown_meter":
        good["meter"] = f"{r.enterprise}.ghost_meter"
    elif variant == "wrong_type":
        good["value"] = str(good["value"])
    else:  # pragma: no cover - validated by the scenario model
        raise ValueError(f"unknown malformed variant {variant!r}; expected one of {MALFORMED_VARIANTS}")
    return json.dumps(good).encode()


def run_scenario(park: Park, scenario: Scenario | None = None, *, seed: int | None = None,
                 start_ms: int, duration_ms: int | None = None,
                 options: FleetOptions | None = None) -> tuple[Iterator[SimReading], list[Label]]:
    """In-process run: (readings in send order, labels).

    The labels list holds the scenario's events from the start; natural events (counter resets,
    roll-overs, maintenance) and the counts in `details` are added while the iterator runs, so the
    list is complete once the iterator is exhausted. Held-back readings are sent at the end.
    """
    if duration_ms is None:
        duration_ms = scenario.duration_ms if scenario is not None else None
    if duration_ms is None:
        raise ValueError("duration_ms is required when the scenario has no duration")
    if seed is None:
        seed = scenario.seed if scenario is not None and scenario.seed is not None else 0
    fleet = Fleet(park, seed=seed, start_ms=start_ms, scenario=scenario, options=options)

    def gen() -> Iterator[SimReading]:
        yield from fleet.readings(start_ms + duration_ms)
        yield from fleet.drain()

    return gen(), fleet.labels


__all__ = ["Fleet", "FleetOptions", "SimReading", "malformed_payload", "parse_duration_ms",
           "run_scenario"]
