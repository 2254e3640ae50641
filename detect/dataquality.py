"""Data quality of one meter: silent, stuck, out of range. Pure, no I/O.

* silent        no reading for max(silent_periods x period_s, silent_min_ms) of event time
                (checked by `tick(now_ms)`); ends with the next reading.
* stuck         a rate meter repeating exactly the same non-zero value for stuck_min_ms, after it
                was seen changing (a quiet constant meter is not called stuck); ends when the
                value changes. A register frozen at zero, or a counter that stops counting, reads
                like a real stop: that is left to the cross-check of the exchange (crosscheck.py).
* out_of_range  out_of_range_count of the last 10 readings outside [range_min, range_max] or not
                finite (a counter going backwards counts too); ends after dq_resolve_ms of good
                readings.

`observe` / `tick` return the list of (kind, started: bool, since_ms) transitions; `usable` says
whether the meter may feed the supply detectors, `last_bad` whether the latest reading was bad
(never used, even before out_of_range_count bad readings make it an alert).
"""

from __future__ import annotations

import math
from collections import deque

from detect.config import DetectorConfig

Transition = tuple[str, bool, int]  # (kind, True = begins / False = ends, since_ms)


class MeterHealth:
    __slots__ = ("meter", "kind", "period_ms", "range_min", "range_max", "cfg", "last_ts",
                 "_last_value", "_same_since", "_changes", "_oor", "_good_since", "active",
                 "_since", "_silent_ms", "last_bad")

    def __init__(self, meter: str, kind: str = "rate", period_s: float = 10.0,
                 range_min: float | None = None, range_max: float | None = None,
                 cfg: DetectorConfig | None = None) -> None:
        self.meter = meter
        self.kind = kind
        self.period_ms = int(period_s * 1000)
        self.range_min = -math.inf if range_min is None else range_min
        self.range_max = math.inf if range_max is None else range_max
        self.cfg = cfg or DetectorConfig()
        self._silent_ms = max(int(self.cfg.silent_periods * self.period_ms), self.cfg.silent_min_ms)
        self.last_ts: int | None = None
        self._last_value: float | None = None
        self._same_since: int | None = None
        self._changes = 0
        self._oor: deque[bool] = deque(maxlen=10)
        self._good_since: int | None = None
        self.active: set[str] = set()
        self._since: dict[str, int] = {}
        self.last_bad = False

    @property
    def usable(self) -> bool:
        """False while the meter is silent, stuck or out of range."""
        return not self.active

    def _begin(self, kind: str, since_ms: int, out: list[Transition]) -> None:
        if kind not in self.active:
            self.active.add(kind)
            self._since[kind] = since_ms
            out.append((kind, True, since_ms))

    def _end(self, kind: str, out: list[Transition]) -> None:
        if kind in self.active:
            self.active.discard(kind)
            out.append((kind, False, self._since.pop(kind)))

    def observe(self, ts_ms: int, value: float, invalid: bool = False) -> list[Transition]:
        """Feed one reading (canonical units). invalid=True marks it bad for another reason (a
        counter that went backwards)."""
        out: list[Transition] = []
        if self.last_ts is not None and ts_ms <= self.last_ts:
            return out  # duplicate / out of order: ignored here
        prev_ts = self.last_ts
        self.last_ts = ts_ms
        self._end("silent", out)
        bad = invalid or not math.isfinite(value) or not (self.range_min <= value <= self.range_max)
        self._oor.append(bad)
        self.last_bad = bad
        if bad:
            self._good_since = None
            if sum(self._oor) >= self.cfg.out_of_range_count:
                self._begin("out_of_range", ts_ms, out)
            return out
        if "out_of_range" in self.active:
            if self._good_since is None:
                self._good_since = ts_ms
            elif ts_ms - self._good_since >= self.cfg.dq_resolve_ms:
                self._end("out_of_range", out)
                self._oor.clear()
        if self.kind == "rate":
            if self._last_value is not None and value == self._last_value:
                if self._same_since is None:
                    self._same_since = prev_ts if prev_ts is not None else ts_ms
                if (value != 0.0 and self._changes >= self.cfg.stuck_min_changes
                        and ts_ms - self._same_since >= self.cfg.stuck_min_ms):
                    self._begin("stuck", self._same_since, out)
            else:
                if self._last_value is not None:
                    self._changes += 1
                self._same_since = None
                self._end("stuck", out)
        self._last_value = value
        return out

    def tick(self, now_ms: int) -> list[Transition]:
        out: list[Transition] = []
        if self.last_ts is not None and now_ms - self.last_ts > self._silent_ms:
            self._begin("silent", self.last_ts, out)
        return out

    def stuck_since(self) -> int | None:
        """Start of the current run of identical non-zero values of a meter that was seen
        changing (stuck, or on its way to being called stuck); None otherwise."""
        if (self._same_since is None or not self._last_value
                or self._changes < self.cfg.stuck_min_changes):
            return None
        return self._same_since
