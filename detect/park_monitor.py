"""ParkMonitor: one ExchangeMonitor per exchange of a park plus data-quality watch of every other
meter. Pure, no I/O: route readings in, get events out.

    mon = ParkMonitor(park)                      # parkmon.park.Park
    events = mon.observe(meter, ts_ms, value)    # raw reading (counter: cumulative)
    events += mon.tick(now_ms)                   # event time advances: silent meters
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

from detect.config import DetectorConfig
from detect.dataquality import MeterHealth
from detect.events import DataQuality, Event, Resolved
from detect.exchange import ExchangeMonitor, maintenance_windows
from detect.suppression import PlannedWindow


class ParkMonitor:
    def __init__(self, park: Any, cfg: DetectorConfig | None = None,
                 planned: Iterable[PlannedWindow] = (),
                 prior_for: Callable[[Any], Callable[[int], float] | None] | None = None) -> None:
        """planned: extra windows (planned production changes) on top of park.maintenance.
        prior_for(exchange) may return a seasonal prior (ts_ms -> relative rate) per exchange."""
        self.cfg = cfg or DetectorConfig()
        windows = [*maintenance_windows(park), *planned]
        self.exchanges: dict[str, ExchangeMonitor] = {}
        self._route: dict[str, ExchangeMonitor] = {}
        for x in park.exchanges:
            prior = prior_for(x) if prior_for is not None else None
            mon = ExchangeMonitor.from_park(park, x.id, self.cfg, windows, prior)
            self.exchanges[x.id] = mon
            for m in mon.meters:
                self._route.setdefault(m, mon)
        self._health: dict[str, MeterHealth] = {}
        for m in park.meters:
            if m.id in self._route:
                continue
            rmax = None if math.isinf(m.range_max) else m.range_max
            kind = m.kind
            self._health[m.id] = MeterHealth(m.id, kind, m.period_s, m.range_min, rmax, self.cfg)

    def observe(self, meter: str, ts_ms: int, value: float) -> list[Event]:
        mon = self._route.get(meter)
        if mon is not None:
            return mon.observe(meter, ts_ms, value)
        h = self._health.get(meter)
        if h is None:
            return []
        return self._dq(meter, h.observe(ts_ms, value), ts_ms)

    def observe_rate(self, meter: str, ts_ms: int, rate: float) -> list[Event]:
        mon = self._route.get(meter)
        return mon.observe_rate(meter, ts_ms, rate) if mon is not None else []

    def tick(self, now_ms: int) -> list[Event]:
        out: list[Event] = []
        for mon in self.exchanges.values():
            out.extend(mon.tick(now_ms))
        for mid, h in self._health.items():
            out.extend(self._dq(mid, h.tick(now_ms), now_ms))
        return out

    @staticmethod
    def _dq(meter: str, trans: list[tuple[str, bool, int]], t: int) -> list[Event]:
        out: list[Event] = []
        for kind, begins, since in trans:
            if begins:
                out.append(DataQuality(meter, kind, t, since))  # type: ignore[arg-type]
            else:
                out.append(Resolved(f"dq:{meter}:{kind}", "data_quality", t, None, meter, kind))
        return out
