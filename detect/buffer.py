"""When does a consumer's buffer run out? Pure arithmetic on relative supply shortfalls.

A consumer holds `buffer_h` hours of its normal intake (storage pile, tank, line pack). While
supply is short by a fraction d(t) of the expected flow, the buffer drains by d(t) hours per hour
(demand = the expected flow). Shortfalls are relative residuals r = observed / expected - 1, so
d(t) = clip(-r(t), 0, 1).

* `deficit_hours(samples)` integrates the shortfall already suffered (trapezoids).
* `linear_trend(samples)` fits r(t) = a + b (t - t_last) by least squares (b per hour).
* `project_exhaustion(...)` extrapolates the trend (a decline keeps declining, floored at total
  loss; a flat or recovering trend keeps the current shortfall) and returns the epoch ms at which
  the buffer is empty, None when it never empties within the horizon.
"""

from __future__ import annotations

from collections.abc import Sequence

_H_MS = 3_600_000.0


def _shortfall(r: float) -> float:
    return 0.0 if r >= 0.0 else (1.0 if r <= -1.0 else -r)


def deficit_hours(samples: Sequence[tuple[int, float]]) -> float:
    """Hours of normal intake already lost over samples (ts_ms, r), in time order."""
    total = 0.0
    for (t0, r0), (t1, r1) in zip(samples, samples[1:], strict=False):
        total += 0.5 * (_shortfall(r0) + _shortfall(r1)) * (t1 - t0) / _H_MS
    return total


def linear_trend(samples: Sequence[tuple[int, float]]) -> tuple[float, float]:
    """(r at the last sample, slope per hour) of a least-squares line; slope 0 for < 3 points."""
    n = len(samples)
    if n == 0:
        return 0.0, 0.0
    t_last = samples[-1][0]
    if n < 3:
        return samples[-1][1], 0.0
    xs = [(t - t_last) / _H_MS for t, _ in samples]
    ys = [r for _, r in samples]
    mx = sum(xs) / n
    my = sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx <= 0.0:
        return my, 0.0
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    return my - b * mx, b


def project_exhaustion(now_ms: int, used_h: float, buffer_h: float, r_now: float,
                       slope_per_h: float, horizon_h: float = 168.0,
                       step_h: float = 1.0 / 60.0) -> int | None:
    """Epoch ms at which used_h + future shortfall reaches buffer_h; None beyond horizon_h.

    The shortfall follows r(tau) = r_now + min(slope, 0) x tau (a recovery is not assumed).
    """
    if used_h >= buffer_h:
        return now_ms
    b = min(slope_per_h, 0.0)
    remaining = buffer_h - used_h
    if b == 0.0:
        d = _shortfall(r_now)
        if d <= 0.0:
            return None
        tau = remaining / d
        return now_ms + int(tau * _H_MS) if tau <= horizon_h else None
    tau = 0.0
    prev = _shortfall(r_now)
    while tau < horizon_h:
        nxt = _shortfall(r_now + b * (tau + step_h))
        gain = 0.5 * (prev + nxt) * step_h
        if gain >= remaining:
            frac = remaining / gain if gain > 0 else 1.0
            return now_ms + int((tau + frac * step_h) * _H_MS)
        remaining -= gain
        tau += step_h
        prev = nxt
        if nxt >= 1.0:  # total loss from here on: closed form
            t_end = tau + remaining
            return now_ms + int(t_end * _H_MS) if t_end <= horizon_h else None
    return None
