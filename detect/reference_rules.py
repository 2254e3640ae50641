"""Two simple alert rules the detectors are compared with, fed the same readings. Pure, no I/O.

* `StaticThreshold`: alert when the suppliers' summed rate of an exchange stays below
  `fraction` x the exchange's nominal rate (park file) for `hold_samples` consecutive samples;
  resolve when it is back above.
* `TrailingMean`: alert when the rate stays below `fraction` x its trailing mean over
  `window_ms` for `hold_ms` ("below X % of the trailing mean for N minutes"); resolve when back
  above.

Both watch the supplier meters only and know nothing about data quality. Declared maintenance and
planned windows silence them exactly like the detectors (suppression.py), so the comparison is
about detection, not about silencing.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from typing import Any

from detect.rates import CounterRate
from detect.suppression import PlannedWindow, Suppressor

RuleEvent = tuple[str, str, int]  # (exchange, "fire" | "resolve", ts_ms)


class _SupplierRate:
    """Summed supplier rate of one exchange, updated per reading of its supplier meters."""

    def __init__(self, meters: Iterable[Any]) -> None:
        ms = list(meters)
        self.counters = {m.id: CounterRate(m.rollover) for m in ms if m.kind == "counter"}
        self.latest: dict[str, float] = {}
        self.n = len(ms)

    def update(self, meter: str, ts_ms: int, value: float) -> float | None:
        c = self.counters.get(meter)
        rate = c.update(ts_ms, value) if c is not None else value
        if rate is None or not math.isfinite(rate):
            return None
        self.latest[meter] = rate
        if len(self.latest) < self.n:
            return None
        return sum(self.latest.values())


class _Rule:
    name = "rule"

    def __init__(self, park: Any, windows: Iterable[PlannedWindow], grace_ms: int) -> None:
        self.rates: dict[str, _SupplierRate] = {}
        self.route: dict[str, str] = {}
        self.nominal: dict[str, float] = {}
        self.firing: dict[str, bool] = {}
        ws = list(windows)
        self.suppress: dict[str, Suppressor] = {}
        for x in park.exchanges:
            self.rates[x.id] = _SupplierRate(park.meter(m) for m in x.suppliers)
            for m in x.suppliers:
                self.route[m] = x.id
            self.nominal[x.id] = float(x.nominal_rate)
            self.firing[x.id] = False
            self.suppress[x.id] = Suppressor(ws, [*x.suppliers, *x.consumers], grace_ms)

    def observe(self, meter: str, ts_ms: int, value: float) -> list[RuleEvent]:
        xid = self.route.get(meter)
        if xid is None:
            return []
        rate = self.rates[xid].update(meter, ts_ms, value)
        if rate is None:
            return []
        sup = self.suppress[xid]
        if sup.suppressed(ts_ms) or sup.factor(ts_ms) != 1.0:
            self._reset(xid)
            return []
        low = self._low(xid, ts_ms, rate)
        if low is None:
            return []
        if low and not self.firing[xid]:
            self.firing[xid] = True
            return [(xid, "fire", ts_ms)]
        if not low and self.firing[xid] and self._recovered(xid, ts_ms, rate):
            self.firing[xid] = False
            return [(xid, "resolve", ts_ms)]
        return []

    def _reset(self, xid: str) -> None:
        pass

    def _low(self, xid: str, ts_ms: int, rate: float) -> bool | None:
        raise NotImplementedError

    def _recovered(self, xid: str, ts_ms: int, rate: float) -> bool:
        return True


class StaticThreshold(_Rule):
    name = "static-threshold"

    def __init__(self, park: Any, windows: Iterable[PlannedWindow] = (), fraction: float = 0.8,
                 hold_samples: int = 3, grace_ms: int = 1_800_000) -> None:
        super().__init__(park, windows, grace_ms)
        self.fraction = fraction
        self.hold = hold_samples
        self.run: dict[str, int] = dict.fromkeys(self.rates, 0)

    def _reset(self, xid: str) -> None:
        self.run[xid] = 0

    def _low(self, xid: str, ts_ms: int, rate: float) -> bool | None:
        if rate < self.fraction * self.nominal[xid]:
            self.run[xid] += 1
        else:
            self.run[xid] = 0
        return self.run[xid] >= self.hold


class TrailingMean(_Rule):
    name = "trailing-mean"

    def __init__(self, park: Any, windows: Iterable[PlannedWindow] = (), fraction: float = 0.8,
                 window_ms: int = 3_600_000, hold_ms: int = 120_000,
                 grace_ms: int = 1_800_000) -> None:
        super().__init__(park, windows, grace_ms)
        self.fraction = fraction
        self.window_ms = window_ms
        self.hold_ms = hold_ms
        self.hist: dict[str, deque[tuple[int, float]]] = {x: deque() for x in self.rates}
        self.sums: dict[str, float] = dict.fromkeys(self.rates, 0.0)
        self.low_since: dict[str, int | None] = dict.fromkeys(self.rates)

    def _reset(self, xid: str) -> None:
        self.low_since[xid] = None

    def _low(self, xid: str, ts_ms: int, rate: float) -> bool | None:
        h = self.hist[xid]
        h.append((ts_ms, rate))
        self.sums[xid] += rate
        while h and h[0][0] <= ts_ms - self.window_ms:
            self.sums[xid] -= h.popleft()[1]
        if ts_ms - h[0][0] < self.window_ms // 2:
            return None  # not enough history yet
        mean = self.sums[xid] / len(h)
        if rate < self.fraction * mean:
            if self.low_since[xid] is None:
                self.low_since[xid] = ts_ms
        else:
            self.low_since[xid] = None
        since = self.low_since[xid]
        return since is not None and ts_ms - since >= self.hold_ms
