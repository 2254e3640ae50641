"""Detection of supply drops and data-quality problems per symbiotic exchange. Pure core, no I/O.

    from detect import ExchangeMonitor, ParkMonitor, SupplyDrop, SupplyDecline, ...

One small module per piece: baseline (seasonal profile x robust level), cusum / page_hinkley
(sequential change detection), buffer (when a consumer's buffer runs out), dataquality (silent,
stuck, out of range), crosscheck (supplier vs consumer meters), suppression (maintenance and planned
windows), drop (one side's detector), exchange (all of it per exchange), park_monitor (per park).
See docs/detection.md.
"""

from detect.config import DetectorConfig
from detect.events import (
    DataQuality,
    Event,
    Resolved,
    SupplyDecline,
    SupplyDrop,
    event_ts,
    to_detection_event,
)
from detect.exchange import ExchangeMonitor, MeterSpec, maintenance_windows
from detect.park_monitor import ParkMonitor
from detect.suppression import PlannedWindow

__all__ = [
    "DataQuality", "DetectorConfig", "Event", "ExchangeMonitor", "MeterSpec", "ParkMonitor",
    "PlannedWindow", "Resolved", "SupplyDecline", "SupplyDrop", "event_ts", "maintenance_windows",
    "to_detection_event",
]
