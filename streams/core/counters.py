"""Quantities from consecutive readings of one meter: counter deltas and integrated rates.

The quantity of the interval (prev, cur] is attributed to the window that holds `cur`, so the sum
over all windows equals the total counter increase (or integrated rate) exactly: nothing is lost
or counted twice at window boundaries, whatever the arrival order.
"""

from __future__ import annotations

from dataclasses import dataclass

MS_PER_HOUR = 3_600_000.0


@dataclass(frozen=True, slots=True)
class Step:
    quantity: float
    reset: bool = False  # counter went down: reset to zero or roll-over at the register limit
    gap: bool = False  # rate interval longer than max_gap_ms, not integrated


def counter_delta(prev: float, cur: float, rollover: float | None = None) -> Step:
    """Increase of a cumulative counter from `prev` to `cur`.

    A decrease is a roll-over when the register has a known limit and `prev` was in its upper
    half (delta = limit - prev + cur); otherwise a reset to zero (delta = cur).
    """
    d = cur - prev
    if d >= 0:
        return Step(d)
    if rollover is not None and rollover > 0 and prev >= rollover / 2:
        return Step(rollover - prev + cur, reset=True)
    return Step(max(cur, 0.0), reset=True)


def rate_integral(prev_ts_ms: int, prev_rate: float, ts_ms: int, rate: float,
                  max_gap_ms: int) -> Step:
    """Quantity of a rate meter (quantity per hour) over (prev_ts, ts]: trapezoid rule.

    Intervals longer than `max_gap_ms` are not integrated (reported as a gap): the meter was
    silent and nothing is known about the flow in between.
    """
    dt = ts_ms - prev_ts_ms
    if dt <= 0:
        return Step(0.0)
    if dt > max_gap_ms:
        return Step(0.0, gap=True)
    return Step((prev_rate + rate) / 2.0 * dt / MS_PER_HOUR)


def step(kind: str, prev: tuple[int, float] | None, ts_ms: int, value: float,
         rollover: float | None = None, max_gap_ms: int = 300_000) -> Step:
    """The quantity a reading adds given its predecessor (None: the first reading, adds 0)."""
    if prev is None:
        return Step(0.0)
    if kind == "counter":
        return counter_delta(prev[1], value, rollover)
    return rate_integral(prev[0], prev[1], ts_ms, value, max_gap_ms)
