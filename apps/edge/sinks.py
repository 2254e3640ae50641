"""Where edge mode's points wait for the next checkpoint (written to InfluxDB before it)."""

from __future__ import annotations

from collections.abc import Iterable

from streams.core.points import PointSpec


class BufferSink:
    """The pipeline's point sink: keeps the last point per series and timestamp until `take`."""

    def __init__(self) -> None:
        self._points: dict[tuple[str, tuple[tuple[str, str], ...], int], PointSpec] = {}

    def write(self, points: list[PointSpec]) -> None:
        for p in points:
            self._points[p.series_key] = p

    def take(self) -> list[PointSpec]:
        pts = list(self._points.values())
        self._points = {}
        return pts

    def put_back(self, points: Iterable[PointSpec]) -> None:
        """Return points whose write failed; newer points of the same series win."""
        for p in points:
            self._points.setdefault(p.series_key, p)

    def __len__(self) -> int:
        return len(self._points)

