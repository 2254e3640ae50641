"""Outputs of the core as InfluxDB points (pure data; `streams.influx_sink` writes them).

Schema (docs/influxdb-schema.md):
- `meter_window`  tags park, enterprise, meter, carrier, direction, view
                  fields quantity, rate_per_h, co2e_t, count, min, max, resets, gaps, revision
- `kpi`           tags park, scope, entity, view; fields: the indicators (absent when undefined)
The timestamp is the window start (ms), so a replayed or corrected window overwrites itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from streams.core.engine import KpiResult, Output
from streams.core.rolling import BASE_VIEW
from streams.core.windows import WindowResult

FieldValue = float | int | bool | str


@dataclass(frozen=True, slots=True)
class PointSpec:
    measurement: str
    tags: tuple[tuple[str, str], ...]
    fields: tuple[tuple[str, FieldValue], ...]
    ts_ms: int

    @property
    def series_key(self) -> tuple[str, tuple[tuple[str, str], ...], int]:
        return (self.measurement, self.tags, self.ts_ms)


def window_point(park: str, r: WindowResult) -> PointSpec:
    a = r.agg
    fields: list[tuple[str, FieldValue]] = [
        ("quantity", float(a.quantity)), ("rate_per_h", float(r.rate_per_h)),
        ("co2e_t", float(a.co2e_t)), ("count", int(a.count)), ("resets", int(a.resets)),
        ("gaps", int(a.gaps)), ("revision", int(r.revision)),
    ]
    if a.count:
        fields += [("min", float(a.vmin)), ("max", float(a.vmax))]
    tags = (("carrier", r.carrier), ("direction", r.direction), ("enterprise", r.enterprise),
            ("meter", r.meter), ("park", park), ("view", BASE_VIEW))
    return PointSpec("meter_window", tags, tuple(fields), r.window_start_ms)


def kpi_point(park: str, k: KpiResult) -> PointSpec:
    fields: list[tuple[str, FieldValue]] = []
    for name, v in sorted(k.values.items()):
        if v is None:
            continue  # undefined (zero denominator): no field, see docs/kpis.md
        fields.append((name, v if isinstance(v, bool) else float(v)))
    tags = (("entity", k.entity), ("park", park), ("scope", k.scope), ("view", k.view))
    return PointSpec("kpi", tags, tuple(fields), k.window_start_ms)


def to_points(park: str, outputs: Iterable[Output]) -> list[PointSpec]:
    """Points for the window and KPI outputs, the last one per series and timestamp kept."""
    pts: dict[tuple[str, tuple[tuple[str, str], ...], int], PointSpec] = {}
    for o in outputs:
        if isinstance(o, WindowResult):
            p = window_point(park, o)
        elif isinstance(o, KpiResult):
            p = kpi_point(park, o)
            if not p.fields:
                continue
        else:
            continue
        pts[p.series_key] = p
    return list(pts.values())
