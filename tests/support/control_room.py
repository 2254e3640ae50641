"""A simulated Kalundborg run written to a real InfluxDB bucket, for the control-room tests.

The run goes through the same in-process pipeline as `parkmon demo` / `parkmon edge` (validator,
dedup, windows, KPIs, detectors, alert lifecycle); its meter windows and indicators are written
with `streams.influx_sink.InfluxSink` and its alert state changes with the alert service's
InfluxDB annotation writer, exactly what the edge mode stores (docs/influxdb-schema.md).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from parkmon.contracts import mqtt_topic

MIN_MS = 60_000
START_MS = 1_793_577_600_000  # 2026-11-02T00:00:00Z, a Monday (the demo's default)
HOURS = 8
# the demo's faults plus one of each data-quality kind the detectors know
SCENARIO: dict[str, Any] = {
    "name": "control_room", "park": "kalundborg", "duration": f"{HOURS}h", "seed": 7,
    "events": [
        {"kind": "trip", "exchange": "steam", "at": "4h", "duration": "1h"},
        {"kind": "gradual_decline", "exchange": "gypsum", "at": "5h", "duration": "3h",
         "magnitude": 0.6, "ramp": "2h"},
        {"kind": "meter_silence", "meter": "gyproc.power_in", "at": "2h", "duration": "40m"},
        {"kind": "stuck_meter", "meter": "refinery.steam_in", "at": "1h", "duration": "1h"},
        {"kind": "spikes", "meter": "novo.power_in", "at": "3h", "duration": "2h", "count": 4,
         "magnitude": 10},
        {"kind": "duplicates", "meter": "asnaes.flyash_out", "at": "1h", "duration": "1h",
         "fraction": 0.2},
        {"kind": "late", "meter": "cement.flyash_in", "at": "6h", "duration": "30m",
         "magnitude": 90},
        {"kind": "malformed", "meter": "bioenergy.biogas_out", "at": "3h", "duration": "30m",
         "fraction": 0.3},
    ],
}


@dataclass(frozen=True)
class FilledRun:
    park: Any
    start_ms: int
    stop_ms: int  # end of the simulated range + the closing margin (3 min)
    points: int
    alerts: int  # alert state changes written to InfluxDB
    last_state: dict[str, str]  # fingerprint -> firing | resolved, as the run ended
    pipeline: Any


class _CountingAnnotations:
    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.written = 0
        self.last_state: dict[str, str] = {}  # fingerprint -> the last state written

    def write(self, alerts: list[Any]) -> None:
        self.inner.write(alerts)
        self.written += len(alerts)
        for a in alerts:
            self.last_state[a.fingerprint] = str(a.state.value)


def fill_bucket(url: str, token: str, org: str, bucket: str, *, start_ms: int = START_MS,
                hours: int = HOURS) -> FilledRun:
    from alerts.influx_annotations import InfluxAnnotationWriter
    from alerts.service import AlertService
    from apps.edge.pipeline import EdgePipeline
    from apps.edge.sinks import BufferSink
    from parkmon.park import example_park_path, load_park
    from simulators.fleet import run_scenario
    from simulators.scenarios import parse_scenario
    from streams.influx_sink import InfluxSink

    park = load_park(example_park_path("kalundborg"))
    scenario = parse_scenario({**SCENARIO, "duration": f"{hours}h"})
    duration_ms = hours * 3_600_000
    readings, _labels = run_scenario(park, scenario, seed=None, start_ms=start_ms,
                                     duration_ms=duration_ms)
    clock = {"now": start_ms}
    buffer = BufferSink()
    sink = InfluxSink.connect(url, token, org, bucket, timeout_ms=60_000)
    written = 0
    with tempfile.TemporaryDirectory(prefix="parkmon-ctl-") as tmp, \
            InfluxAnnotationWriter(url, token, org, bucket) as writer:
        notes = _CountingAnnotations(writer)
        service = AlertService.create(park, Path(tmp) / "outbox.sqlite", [],
                                      now_ms=lambda: clock["now"], annotations=notes)
        pipe = EdgePipeline(park, now_ms=lambda: clock["now"], alerts=service, sink=buffer)
        last_tick = start_ms
        for r in readings:
            clock["now"] = max(clock["now"], r.emit_ms)
            payload = r.raw if r.raw is not None else json.dumps(r.payload()).encode()
            pipe.feed(mqtt_topic(park.id, r.enterprise), payload)
            if clock["now"] - last_tick >= 10_000:
                last_tick = clock["now"]
                pipe.advance(clock["now"])
            if len(buffer) >= 20_000:
                pts = buffer.take()
                sink.write(pts)
                written += len(pts)
        # close every window (base + grace) without running the clock into the meters' silence
        clock["now"] = start_ms + duration_ms + 3 * MIN_MS
        pipe.advance(clock["now"], force_kpis=True)
        pts = buffer.take()
        sink.write(pts)
        written += len(pts)
        service.close()
    return FilledRun(park, start_ms, clock["now"], written, notes.written, notes.last_state,
                     pipe)
