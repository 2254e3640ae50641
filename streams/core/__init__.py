"""The pure KPI core: windows, counters, mergeable aggregates, rolling views, indicators.

No Kafka, no InfluxDB, no wall clock: feed it (meter, ts_ms, value) and read results.
"""

from streams.core.aggregates import Aggregate
from streams.core.engine import KpiEngine, KpiResult
from streams.core.model import KpiConfig, KpiModel
from streams.core.windows import LateReading, WindowEngine, WindowResult

__all__ = ["Aggregate", "KpiConfig", "KpiEngine", "KpiModel", "KpiResult", "LateReading",
           "WindowEngine", "WindowResult"]
