"""Windows in which supply alarms are suppressed: declared maintenance and planned production
changes. Pure, no I/O.

A `PlannedWindow` covers some meters over [start_ms, end_ms). With `expected_factor` None the
exchange is not judged at all inside the window (maintenance: anything goes) and for
`grace_ms` after it (ramp-up); with a factor, the baseline expectation is multiplied by it (a
planned cut to 60 % -> factor 0.6), so a further unplanned drop still fires.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PlannedWindow:
    meters: frozenset[str]
    start_ms: int
    end_ms: int
    expected_factor: float | None = None
    description: str = ""


class Suppressor:
    """Answers, for an exchange's meters, 'is this time suppressed?' and 'what factor applies?'."""

    __slots__ = ("windows", "grace_ms")

    def __init__(self, windows: Iterable[PlannedWindow], meters: Sequence[str],
                 grace_ms: int) -> None:
        mine = set(meters)
        self.windows = sorted((w for w in windows if w.meters & mine), key=lambda w: w.start_ms)
        self.grace_ms = grace_ms

    def suppressed(self, ts_ms: int) -> bool:
        """Inside a maintenance window (no factor) or its ramp-up grace."""
        for w in self.windows:
            if w.start_ms > ts_ms:
                break
            if w.expected_factor is None and ts_ms < w.end_ms + self.grace_ms:
                return True
        return False

    def factor(self, ts_ms: int) -> float:
        f = 1.0
        for w in self.windows:
            if w.start_ms > ts_ms:
                break
            if w.expected_factor is not None and ts_ms < w.end_ms:
                f *= w.expected_factor
        return f

    def changed_recently(self, ts_ms: int) -> bool:
        """A planned factor started or ended within grace_ms: the level is in transition."""
        for w in self.windows:
            if w.start_ms > ts_ms:
                break
            if w.expected_factor is not None and (
                    0 <= ts_ms - w.start_ms < self.grace_ms // 6
                    or 0 <= ts_ms - w.end_ms < self.grace_ms // 6):
                return True
        return False
