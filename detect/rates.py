"""Rates from counter registers: rate = delta quantity / delta hours. Pure, no I/O."""

from __future__ import annotations

import math

_H_MS = 3_600_000.0


class CounterRate:
    """Turns cumulative readings (canonical quantity) into rates (quantity per hour).

    update(ts_ms, value) returns the rate over the interval ending at ts_ms, None for the first
    reading, a duplicate or out-of-order timestamp, or a register that went backwards without a
    known rollover (`went_backwards` is then set so the caller can flag data quality).
    """

    __slots__ = ("rollover", "_ts", "_v", "went_backwards")

    def __init__(self, rollover: float | None = None) -> None:
        self.rollover = rollover if rollover and math.isfinite(rollover) else None
        self._ts: int | None = None
        self._v = 0.0
        self.went_backwards = False

    def reset(self) -> None:
        """Forget the previous register value (after a bad reading): the next one starts over."""
        self._ts = None

    def update(self, ts_ms: int, value: float) -> float | None:
        self.went_backwards = False
        if self._ts is None:
            self._ts, self._v = ts_ms, value
            return None
        if ts_ms <= self._ts:
            return None
        delta = value - self._v
        if delta < 0.0:
            if self.rollover is not None and self._v > 0.5 * self.rollover:
                delta += self.rollover
            else:
                self.went_backwards = True
                self._ts, self._v = ts_ms, value
                return None
        rate = delta / ((ts_ms - self._ts) / _H_MS)
        self._ts, self._v = ts_ms, value
        return rate
