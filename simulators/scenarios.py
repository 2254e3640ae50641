"""Fault scenarios with ground truth: what to inject into a simulated run, and the labels it yields.

A scenario file (YAML)::

    name: gypsum_trip
    description: the power station's gypsum line trips for 4 hours
    park: kalundborg            # optional: an example name or a path (the CLI's default park)
    duration: 2d                # optional: default run length
    seed: 7                     # optional: default seed
    events:
      - {kind: trip, exchange: gypsum, at: 6h, duration: 4h}
      - {kind: step_drop, exchange: steam, at: 1d, duration: 6h, magnitude: 0.4}
      - {kind: meter_silence, meter: gyproc.power_in, at: 3h, duration: 30m}

`at` is an offset from the run's start, `duration` the length of the event window. Durations are
`<number><unit>` with unit ms, s, m, h or d (`90s`, `30m`, `1.5h`, `2d`, `1d6h`) or a plain
number of seconds.

Every event becomes one `Label` (written as one JSON line, see docs/simulator.md); the run adds
labels for natural events it produces (counter resets and roll-overs, planned maintenance).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from parkmon.errors import ParkmonError
from parkmon.park import Park

SUPPLY_KINDS = ("step_drop", "gradual_decline", "trip", "intermittent")
DATA_QUALITY_KINDS = ("meter_silence", "stuck_meter", "spikes", "duplicates", "out_of_order",
                      "late", "clock_skew", "malformed")
NATURAL_KINDS = ("counter_reset", "counter_rollover", "maintenance")
EventKind = Literal["step_drop", "gradual_decline", "trip", "intermittent", "meter_silence",
                    "stuck_meter", "spikes", "duplicates", "out_of_order", "late", "clock_skew",
                    "malformed"]
MALFORMED_VARIANTS = ("invalid_json", "missing_field", "wrong_unit", "unknown_unit", "not_finite",
                      "unknown_meter", "wrong_type")

LABEL_SCHEMA_VERSION = 1

_DURATION = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(ms|s|m|min|h|d)?\s*$")
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|min|s|m|h|d)")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "min": 60_000, "h": 3_600_000, "d": 86_400_000}


class ScenarioError(ParkmonError):
    """A scenario file that cannot be used; `problems` holds one line per problem."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = list(problems)
        super().__init__(f"{source}: {len(problems)} problem(s)\n" + "\n".join(problems))

    def __reduce__(self) -> tuple[type, tuple[str, list[str]]]:  # picklable across processes
        return (type(self), (self.source, self.problems))


def parse_duration_ms(text: str | int | float) -> int:
    """'90s' -> 90000, '30m' -> 1800000, '1.5h', '2d', 3600 (seconds) -> ms."""
    if isinstance(text, bool):
        raise ValueError(f"expected a duration such as '30m', got {text!r}")
    if isinstance(text, int | float):
        return int(round(float(text) * 1000))
    s = str(text).strip()
    m = _DURATION.match(s)
    if m:
        return int(round(float(m.group(1)) * _UNIT_MS[m.group(2) or "s"]))
    parts = _PART.findall(s)
    if parts and "".join(a + b for a, b in parts) == s.replace(" ", ""):
        return int(round(sum(float(a) * _UNIT_MS[b] for a, b in parts)))
    raise ValueError(f"expected a duration such as '90s', '30m', '6h', '2d' or '1d6h', got {text!r}")


class Event(BaseModel):
    """One injected fault. Which fields matter depends on `kind` (see docs/simulator.md)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: EventKind
    exchange: str | None = None
    meter: str | None = None
    at: str | float = 0
    duration: str | float
    magnitude: float | None = None
    period: str | float | None = None  # intermittent: on/off cycle length
    duty: float = Field(default=0.5, gt=0.0, lt=1.0)  # intermittent: share of the cycle on
    ramp: str | float | None = None  # gradual_decline: time to reach the bottom (default: window)
    count: int = Field(default=3, ge=1)  # spikes
    fraction: float = Field(default=0.5, gt=0.0, le=1.0)  # duplicates, out_of_order, malformed
    variants: tuple[str, ...] = MALFORMED_VARIANTS  # malformed

    @field_validator("at", "duration", "period", "ramp")
    @classmethod
    def _duration(cls, v: str | float | None) -> str | float | None:
        if v is not None:
            parse_duration_ms(v)
        return v

    @field_validator("variants")
    @classmethod
    def _variants(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [x for x in v if x not in MALFORMED_VARIANTS]
        if bad or not v:
            raise ValueError(f"unknown malformed variants {bad}; expected some of "
                             f"{', '.join(MALFORMED_VARIANTS)}")
        return v


class Scenario(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    description: str = ""
    park: str | None = None
    duration: str | float | None = None
    seed: int | None = None
    events: tuple[Event, ...] = ()

    @property
    def duration_ms(self) -> int | None:
        return None if self.duration is None else parse_duration_ms(self.duration)


@dataclass(slots=True)
class Label:
    """Ground truth for one event of a run (one JSON line of the label file).

    kind: an event kind (SUPPLY_KINDS, DATA_QUALITY_KINDS) or a natural kind (NATURAL_KINDS).
    category: "supply" | "data_quality" | "natural".
    target: the exchange id for supply events, the meter id for data-quality events and counter
      resets/roll-overs, the enterprise id for maintenance.
    exchange: the exchange concerned (supply events; data-quality events on a meter that is part
      of an exchange), else None.
    meters: the meters whose readings are affected.
    start_ms, end_ms: the event window in event time, end exclusive.
    magnitude, unit: size of the event (see docs/simulator.md for each kind).
    details: kind-specific facts (consumers hit, spike timestamps, counts actually produced).
    """

    kind: str
    category: str
    target: str
    start_ms: int
    end_ms: int
    magnitude: float | None = None
    unit: str | None = None
    exchange: str | None = None
    enterprise: str | None = None
    meters: list[str] = field(default_factory=list)
    scenario: str | None = None
    id: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["v"] = LABEL_SCHEMA_VERSION
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Label:
        d = {k: v for k, v in d.items() if k != "v"}
        return cls(**d)


def write_labels(path: str | Path, labels: list[Label]) -> None:
    """Write labels as JSONL, sorted by (start_ms, id)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with p.open("w", encoding="utf-8") as f:
        for label in sorted(labels, key=lambda lb: (lb.start_ms, lb.id)):
            f.write(label.to_json() + "\n")


def read_labels(path: str | Path) -> list[Label]:
    with Path(path).open(encoding="utf-8") as f:
        return [Label.from_dict(json.loads(line)) for line in f if line.strip()]


@dataclass(frozen=True, slots=True)
class ResolvedEvent:
    """An event bound to a park and a run start: absolute window and meter ids."""

    index: int
    event: Event
    start_ms: int
    end_ms: int
    exchange: str | None
    meters: tuple[str, ...]  # supply: the supplier meters hit; data quality: the one meter

    @property
    def kind(self) -> str:
        return self.event.kind

    @property
    def is_supply(self) -> bool:
        return self.event.kind in SUPPLY_KINDS

    def supply_factor(self, ts_ms: int) -> float:
        """Multiplier on the supplier's output at ts_ms (1 outside the window)."""
        if not (self.start_ms <= ts_ms < self.end_ms):
            return 1.0
        e = self.event
        kind = e.kind
        if kind == "trip":
            return 0.0
        depth = 1.0 if e.magnitude is None else e.magnitude
        if kind == "step_drop":
            return 1.0 - depth
        if kind == "gradual_decline":
            ramp_ms = parse_duration_ms(e.ramp) if e.ramp is not None else self.end_ms - self.start_ms
            progress = min(1.0, (ts_ms - self.start_ms) / max(1, ramp_ms))
            return 1.0 - depth * progress
        if kind == "intermittent":
            period_ms = parse_duration_ms(e.period) if e.period is not None else 3_600_000
            phase = ((ts_ms - self.start_ms) % period_ms) / period_ms
            return 1.0 if phase < e.duty else 1.0 - depth
        return 1.0


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file (ScenarioError with one line per problem)."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ScenarioError(str(p), [f"{p}: file not found"]) from None
    except yaml.YAMLError as exc:
        raise ScenarioError(str(p), [f"(file): not valid YAML: {exc}"]) from None
    return parse_scenario(data, source=str(p))


def parse_scenario(data: Any, source: str = "<scenario>") -> Scenario:
    if not isinstance(data, dict):
        raise ScenarioError(source, ["(file): expected a mapping with name, events, ..."])
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ""
            for part in err["loc"]:
                loc += f"[{part}]" if isinstance(part, int) else (f".{part}" if loc else str(part))
            problems.append(f"{loc or '(file)'}: {err['msg']}, got {err.get('input')!r}")
        raise ScenarioError(source, problems) from None


def scenario_path(name: str) -> Path:
    """Path of a scenario shipped in simulators/scenarios/ (by name, without .yaml)."""
    path = Path(__file__).parent / "scenarios" / f"{name}.yaml"
    if not path.exists():
        known = sorted(x.stem for x in path.parent.glob("*.yaml"))
        raise FileNotFoundError(f"no scenario {name!r}; scenarios are: {', '.join(known)}")
    return path


def resolve(scenario: Scenario, park: Park, start_ms: int, source: str = "<scenario>"
            ) -> list[ResolvedEvent]:
    """Bind a scenario's events to a park and a run start; ScenarioError lists every problem."""
    problems: list[str] = []
    out: list[ResolvedEvent] = []
    ex_ids = [x.id for x in park.exchanges]
    for i, e in enumerate(scenario.events):
        loc = f"events[{i}]"
        start = start_ms + parse_duration_ms(e.at)
        end = start + parse_duration_ms(e.duration)
        if end <= start:
            problems.append(f"{loc}.duration: must be positive, got {e.duration!r}")
            continue
        if e.kind in SUPPLY_KINDS:
            if e.exchange is None:
                problems.append(f"{loc}.exchange: required for a {e.kind} event; exchanges are: "
                                f"{', '.join(ex_ids)}")
                continue
            if e.exchange not in park.exchanges_by_id:
                problems.append(f"{loc}.exchange: no exchange {e.exchange!r}; exchanges are: "
                                f"{', '.join(ex_ids[:20])}" + (" ..." if len(ex_ids) > 20 else ""))
                continue
            x = park.exchanges_by_id[e.exchange]
            if e.meter is not None and e.meter not in x.suppliers:
                problems.append(f"{loc}.meter: {e.meter!r} is not a supplier of exchange "
                                f"{x.id!r}; suppliers are: {', '.join(x.suppliers)}")
                continue
            if e.magnitude is not None and not 0.0 < e.magnitude <= 1.0:
                problems.append(f"{loc}.magnitude: the share of supply lost, 0 < magnitude <= 1, "
                                f"got {e.magnitude}")
                continue
            meters = (e.meter,) if e.meter else x.suppliers
            out.append(ResolvedEvent(i, e, start, end, x.id, tuple(meters)))
        else:
            if e.meter is None:
                problems.append(f"{loc}.meter: required for a {e.kind} event")
                continue
            if e.meter not in park.meters_by_id:
                problems.append(f"{loc}.meter: no meter {e.meter!r} in park {park.id!r}")
                continue
            x2 = park.exchange_of_meter.get(e.meter)
            out.append(ResolvedEvent(i, e, start, end, x2.id if x2 else None, (e.meter,)))
    if problems:
        raise ScenarioError(source, problems)
    return out


_MAGNITUDE_UNITS = {
    "step_drop": "fraction", "gradual_decline": "fraction", "trip": "fraction",
    "intermittent": "fraction", "spikes": "factor", "duplicates": "fraction",
    "out_of_order": "s", "late": "s", "clock_skew": "s", "malformed": "fraction",
}

DEFAULT_MAGNITUDE = {"spikes": 8.0, "out_of_order": 300.0, "late": 7200.0, "clock_skew": 600.0}


def event_magnitude(e: Event) -> float | None:
    if e.kind == "trip":
        return 1.0
    if e.kind in ("step_drop", "gradual_decline", "intermittent"):
        return 1.0 if e.magnitude is None else e.magnitude
    if e.kind in ("duplicates", "malformed"):
        return e.fraction
    if e.kind in DEFAULT_MAGNITUDE:
        return DEFAULT_MAGNITUDE[e.kind] if e.magnitude is None else e.magnitude
    return e.magnitude


def label_for(ev: ResolvedEvent, park: Park, scenario_name: str) -> Label:
    e = ev.event
    if ev.is_supply:
        x = park.exchange(ev.exchange or "")
        return Label(
            kind=e.kind, category="supply", target=x.id, exchange=x.id,
            enterprise=park.meter(ev.meters[0]).enterprise, meters=list(ev.meters),
            start_ms=ev.start_ms, end_ms=ev.end_ms, magnitude=event_magnitude(e),
            unit=_MAGNITUDE_UNITS[e.kind], scenario=scenario_name, id=f"e{ev.index}",
            details={"consumers": list(x.consumers),
                     "consumer_enterprises": sorted({park.meter(c).enterprise for c in x.consumers}),
                     **({"period_ms": parse_duration_ms(e.period or 3600), "duty": e.duty}
                        if e.kind == "intermittent" else {}),
                     **({"ramp_ms": parse_duration_ms(e.ramp)} if e.ramp is not None else {})})
    meter = park.meter(ev.meters[0])
    return Label(
        kind=e.kind, category="data_quality", target=meter.id, exchange=ev.exchange,
        enterprise=meter.enterprise, meters=[meter.id], start_ms=ev.start_ms, end_ms=ev.end_ms,
        magnitude=event_magnitude(e), unit=_MAGNITUDE_UNITS.get(e.kind), scenario=scenario_name,
        id=f"e{ev.index}", details={})
