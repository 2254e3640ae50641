"""Rolling views (15 min, 1 h, 24 h) derived from base windows, never from raw readings.

A view is a hopping window of `size_ms` advancing by `step_ms`; both are multiples of the base
window, so a view is the merge of the base windows it covers. Every timestamp (and every base
window) lies in exactly size/step views.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class View:
    name: str
    size_ms: int
    step_ms: int


BASE_VIEW = "1m"
DEFAULT_VIEWS: tuple[View, ...] = (
    View("15m", 15 * 60_000, 60_000),
    View("1h", 3_600_000, 5 * 60_000),
    View("24h", 86_400_000, 3_600_000),
)


def hopping_window_starts(ts_ms: int, size_ms: int, step_ms: int) -> list[int]:
    """Starts s (multiples of step) of every window [s, s + size) that contains ts_ms."""
    if size_ms <= 0 or step_ms <= 0 or size_ms % step_ms:
        raise ValueError("size_ms and step_ms must be positive and size a multiple of step")
    last = ts_ms - ts_ms % step_ms
    first = last - size_ms + step_ms
    return list(range(first, last + 1, step_ms))


def base_windows_of(view_start_ms: int, size_ms: int, base_ms: int) -> Iterable[int]:
    return range(view_start_ms, view_start_ms + size_ms, base_ms)


def validate_views(views: Iterable[View], base_ms: int) -> None:
    for v in views:
        if v.size_ms % base_ms or v.step_ms % base_ms or v.size_ms % v.step_ms:
            raise ValueError(f"view {v.name}: size and step must be multiples of the base window "
                             f"({base_ms} ms) and size a multiple of step")
