"""`parkmon edge` settings (PARKMON_EDGE_*, pydantic-settings) and the state file's name."""

from __future__ import annotations

import time

from pydantic_settings import BaseSettings, SettingsConfigDict

CHECKPOINT_FILE = "edge-state.sqlite"
LEDGER_FILE = "ledger.sqlite"


CHECKPOINT_FORMAT = 1


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class EdgeSettings(BaseSettings):
    """Settings of `parkmon edge` (env prefix PARKMON_EDGE_). MQTT and InfluxDB connections come
    from PARKMON_MQTT_* / PARKMON_INFLUX_*, webhooks from PARKMON_ALERTS_* (docs/edge-mode.md)."""

    model_config = SettingsConfigDict(env_prefix="PARKMON_EDGE_", frozen=True)

    park_file: str | None = None
    state_dir: str = "parkmon-edge-state"  # checkpoint + alert outbox (unless PARKMON_ALERTS_DB)
    checkpoint_messages: int = 80  # <= the broker's max_inflight_messages (dev broker: 100)
    checkpoint_interval_s: float = 2.0
    stall_s: float = 0.2  # a pause this long with unacknowledged messages: checkpoint now
    watermark_lag_ms: int = 10_000
    idle_after_s: float = 30.0
    idle_clock_rate: float = 1.0  # event ms per wall ms while idle (tests / accelerated replays)
    tick_interval_s: float = 1.0  # wall-clock tick: detectors, alert groups, idle watermark
    advance_every_ms: int = 10_000  # event-time step between pipeline advances
    base_window_ms: int = 60_000
    grace_ms: int = 120_000
    dedup_per_meter: int = 2_048
    max_payload_bytes: int = 1_048_576
    max_future_ms: int = 5 * 60_000
    max_past_ms: int = 7 * 24 * 3_600_000
    counter_reset_fraction: float = 0.05
    influx_alerts: bool = True  # alert annotations in InfluxDB (measurement `alerts`)
    influx_max_retry_s: float = 30.0
    ledger: bool = True  # the exchange ledger, <state_dir>/ledger.sqlite (docs/ledger.md)
    ledger_keys_dir: str | None = None  # <enterprise>.key Ed25519 keys that sign entries
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9110  # /metrics and /healthz; 0 picks a free port, -1 disables
    keepalive_s: int = 30
    log_level: str = "INFO"

