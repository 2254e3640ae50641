r"""Edge mode: the whole pipeline in one process, on the same pure core the services run.

    payload bytes --Validator--> Readings --Deduplicator--> KpiEngine (windows, KPIs)
                                                       \--> ParkMonitor (detectors) --> AlertService

`EdgePipeline.feed(topic, payload, now_ms)` is what the MQTT callback would call; `parkmon demo`
feeds it from the simulated fleet. Nothing here does I/O except the optional AlertService
delivery and the optional point sink (InfluxDB) given by the caller.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from alerts.lifecycle import Notification
from detect.park_monitor import ParkMonitor
from ingest.dedup import Deduplicator
from ingest.validate import Limits, Validator
from streams.core.engine import KpiEngine, KpiResult
from streams.core.model import KpiModel
from streams.core.points import PointSpec, to_points
from streams.core.windows import LateReading, WindowResult


class PointSink(Protocol):
    def write(self, points: list[PointSpec]) -> None: ...


class AlertHandler(Protocol):
    def handle(self, event: Any) -> list[Notification]: ...

    def handle_many(self, events: list[Any]) -> list[Notification]: ...

    def tick(self) -> list[Notification]: ...


@dataclass
class EdgeCounters:
    messages: int = 0
    readings: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    late_beyond_grace: int = 0
    window_results: int = 0
    kpi_results: int = 0
    detector_events: int = 0
    notifications: int = 0

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())


class EdgePipeline:
    def __init__(self, park: Any, *, now_ms: Callable[[], int],
                 alerts: AlertHandler | None = None, sink: PointSink | None = None,
                 base_window_ms: int = 60_000, grace_ms: int = 120_000,
                 limits: Limits | None = None, dedup_per_meter: int = 65_536) -> None:
        self.park = park
        self.now_ms = now_ms
        self.validator = Validator(park, now_ms=now_ms, limits=limits)
        self.dedup = Deduplicator(dedup_per_meter)
        self.engine = KpiEngine(KpiModel.from_park(park), base_window_ms=base_window_ms,
                                grace_ms=grace_ms)
        self.monitor = ParkMonitor(park)
        self.alerts = alerts
        self.sink = sink
        self.counters = EdgeCounters()
        self.kpis: dict[tuple[str, str, str, int], KpiResult] = {}
        self.windows: dict[tuple[str, int], WindowResult] = {}
        self.events: list[Any] = []
        self.notifications: list[Notification] = []
        self._pending: list[WindowResult] = []
        self._kpi_epoch = -1
        self.max_ts_ms: int | None = None  # largest event time of an accepted reading
        self.last_late: LateReading | None = None  # the latest reading late beyond grace

    # -- intake ------------------------------------------------------------------------------
    def feed(self, topic: str, payload: bytes) -> None:
        c = self.counters
        c.messages += 1
        res = self.validator.validate(topic, payload)
        c.readings += res.readings_total
        for rej in res.rejections:
            c.rejected[str(rej.reason)] += 1
        fresh = []
        for r in res.accepted:
            if self.dedup.seen_or_add(r.meter, r.idempotency_key[1]):
                c.duplicates += 1
                continue
            fresh.append(r)
        self.validator.observe_accepted(fresh)
        c.accepted += len(fresh)
        for r in fresh:
            if self.max_ts_ms is None or r.ts_ms > self.max_ts_ms:
                self.max_ts_ms = r.ts_ms
            # windows close per meter; indicators are recomputed once per `advance`, not per
            # closed meter window (the KPI aggregator's work is per base window, not per meter)
            outs = self.engine.windows.ingest(r.meter, r.ts_ms, r.value)
            self._pending.extend(o for o in outs if isinstance(o, WindowResult))
            self._collect(outs)
            self._detect(self.monitor.observe(r.meter, r.ts_ms, r.value))

    def advance(self, watermark_ms: int, force_kpis: bool = False) -> None:
        """Event time has reached `watermark_ms`: close windows, tick detectors and alerts."""
        outs = self.engine.windows.advance(watermark_ms)
        self._pending.extend(o for o in outs if isinstance(o, WindowResult))
        self._collect(outs)
        base = self.engine.kpis.base_ms
        if watermark_ms // base != self._kpi_epoch or force_kpis:
            # indicators once per base window (not per closed meter window)
            self._kpi_epoch = watermark_ms // base
            wins, self._pending = self._pending, []
            self._collect(self.engine.kpis.update(wins))
        self._detect(self.monitor.tick(watermark_ms))
        if self.alerts is not None:
            self._notes(self.alerts.tick())

    # -- outputs -----------------------------------------------------------------------------
    def _detect(self, events: list[Any]) -> None:
        for ev in events:
            self.counters.detector_events += 1
            self.events.append(ev)
        if self.alerts is not None and events:
            # one detection step, one durable step of the alert service (not one per event)
            self._notes(self.alerts.handle_many(events))

    def _notes(self, notes: list[Notification]) -> None:
        self.counters.notifications += len(notes)
        self.notifications.extend(notes)

    def _collect(self, outputs: list[Any]) -> None:
        if not outputs:
            return
        for o in outputs:
            if isinstance(o, WindowResult):
                self.counters.window_results += 1
                self.windows[(o.meter, o.window_start_ms)] = o
            elif isinstance(o, KpiResult):
                self.counters.kpi_results += 1
                self.kpis[(o.scope, o.entity, o.view, o.window_start_ms)] = o
            elif isinstance(o, LateReading):
                self.counters.late_beyond_grace += 1
                self.last_late = o
        if self.sink is not None:
            self.sink.write(to_points(self.park.id, outputs))

    # -- state (checkpoints of `parkmon edge`) ------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Plain data (JSON-able) of the state every later result depends on: windows and
        indicators, deduplication memory, counter baselines, window results waiting for the next
        indicator update. Not included: the detectors (`monitor`, see apps.edge.service) and
        the alert lifecycle (the AlertService keeps its own durable outbox)."""
        snap = self.snapshot_small()
        snap["engine"] = self.engine.snapshot()
        snap["dedup"] = self.dedup.snapshot()
        return snap

    def snapshot_small(self) -> dict[str, Any]:
        """`snapshot()` without its two large parts, "engine" and "dedup" (a caller that stores
        those incrementally, per meter and per window, adds them back before `restore`)."""
        c = self.counters
        baselines = []
        for mid in self.validator.meters:
            last = self.validator.counters.last(mid)
            if last is not None:
                baselines.append([mid, last[0], last[1]])
        return {
            "v": 1, "park": self.park.id, "dedup_per_meter": self.dedup.per_meter,
            "counter_baselines": baselines, "pending": [w.to_dict() for w in self._pending],
            "kpi_epoch": self._kpi_epoch, "max_ts_ms": self.max_ts_ms,
            "counters": {"messages": c.messages, "readings": c.readings, "accepted": c.accepted,
                         "duplicates": c.duplicates, "rejected": dict(c.rejected),
                         "late_beyond_grace": c.late_beyond_grace,
                         "window_results": c.window_results, "kpi_results": c.kpi_results,
                         "detector_events": c.detector_events,
                         "notifications": c.notifications},
        }

    def restore(self, snap: dict[str, Any]) -> None:
        """Continue from `snapshot()` data (same park). Outputs already handed to the sink are
        not replayed; the detectors are left as they are."""
        if snap.get("v") != 1 or snap.get("park") != self.park.id:
            raise ValueError(f"not an edge snapshot of park {self.park.id!r}")
        self.engine = KpiEngine.restore(self.engine.model, snap["engine"], self.engine.kpis.views)
        self.dedup = Deduplicator.from_snapshot(snap["dedup"], int(snap["dedup_per_meter"]))
        for mid, ts, value in snap["counter_baselines"]:
            self.validator.counters.commit(mid, int(ts), float(value))
        self._pending = [WindowResult.from_dict(d) for d in snap["pending"]]
        self._kpi_epoch = int(snap["kpi_epoch"])
        self.max_ts_ms = snap["max_ts_ms"]
        cs = dict(snap["counters"])
        rejected = Counter({str(k): int(v) for k, v in cs.pop("rejected").items()})
        self.counters = EdgeCounters(rejected=rejected, **{k: int(v) for k, v in cs.items()})
