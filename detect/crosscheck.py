"""Supplier vs consumer meters of one exchange: is it the supply or a meter? Pure, no I/O.

Both sides of an exchange meter the same physical flow (the consumers get the suppliers' output
minus losses). When one side drops, the other side's residuals since the change start decide:

    other side mean residual <= -confirm x magnitude   -> CONFIRMED (a real supply change)
    other side mean residual >= -refute  x magnitude   -> METER_SUSPECT (after `min_samples`
                                                          samples: the dropping side's meter lies)
    other side unavailable (silent, stuck, no meters)  -> UNCHECKED (trust the dropping side)
    otherwise                                          -> PENDING (wait, up to a timeout)
"""

from __future__ import annotations

import math
from enum import StrEnum


class Verdict(StrEnum):
    CONFIRMED = "confirmed"
    METER_SUSPECT = "meter_suspect"
    UNCHECKED = "unchecked"
    PENDING = "pending"


def cross_check(magnitude: float, other_mean_r: float, other_samples: int,
                other_available: bool, other_in_alarm: bool = False, confirm: float = 0.5,
                refute: float = 0.25, min_samples: int = 3) -> Verdict:
    """Verdict on a drop of `magnitude` (0..1) seen on one side, from the other side's evidence."""
    if not other_available:
        return Verdict.UNCHECKED
    if other_in_alarm:
        return Verdict.CONFIRMED
    if other_samples == 0 or math.isnan(other_mean_r):
        return Verdict.PENDING
    mag = max(magnitude, 1e-9)
    if other_mean_r <= -confirm * mag:
        return Verdict.CONFIRMED
    if other_samples >= min_samples and other_mean_r >= -refute * mag:
        return Verdict.METER_SUSPECT
    return Verdict.PENDING


def suspect_meter(before: dict[str, float], now: dict[str, float]) -> str | None:
    """Of one side's meters, the one whose rate fell most relative to its rate before the change."""
    best, best_drop = None, -math.inf
    for m, b in before.items():
        if m not in now:
            continue
        drop = (b - now[m]) / max(abs(b), 1e-9)
        if drop > best_drop:
            best, best_drop = m, drop
    return best
