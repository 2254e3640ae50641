"""Settings from the environment (prefix PARKMON_). Secrets are SecretStr and never logged.

Every service reads the subset it needs; defaults point at the loopback dev services started by
`parkmon services up`.
"""

from __future__ import annotations

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class MqttSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PARKMON_MQTT_", frozen=True)

    host: str = "127.0.0.1"
    port: int = 18830
    username: str | None = None
    password: SecretStr | None = None
    tls: bool = False
    tls_ca: str | None = None
    client_id: str = "parkmon-gateway"
    share_group: str | None = None
    session_expiry_s: int = 3600


class KafkaSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PARKMON_KAFKA_", frozen=True)

    bootstrap: str = "127.0.0.1:19092"


class InfluxSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PARKMON_INFLUX_", frozen=True)

    url: str = "http://127.0.0.1:18086"
    org: str = "parkmon"
    bucket: str = "parkmon"
    token: SecretStr | None = None


class GatewaySettings(BaseSettings):
    """Settings of `parkmon gateway` (ingest/). MQTT and Kafka connection settings are in
    MqttSettings / KafkaSettings; these are the gateway's own."""

    model_config = SettingsConfigDict(env_prefix="PARKMON_GATEWAY_", frozen=True)

    park_file: str | None = None
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9108  # /metrics and /healthz; 0 picks a free port, -1 disables
    max_payload_bytes: int = 1_048_576
    max_future_ms: int = 5 * 60_000
    max_past_ms: int = 7 * 24 * 3_600_000
    counter_reset_fraction: float = 0.05
    dedup_per_meter: int = 65_536
    dedup_replay_s: int = 900  # tail of the readings topic re-read at start to rebuild dedup memory
    receive_maximum: int = 4_000  # MQTT 5 Receive Maximum: unacknowledged messages in flight
    keepalive_s: int = 30
    tls_cert: str | None = None  # client certificate (mutual TLS), optional
    tls_key: str | None = None
    tls_insecure: bool = False  # skip host name check (self-signed dev certificates only)
    readings_topic: str | None = None  # default parkmon.<park>.readings
    deadletter_topic: str | None = None  # default parkmon.<park>.deadletter
    kafka_partitions: int = 3  # used when the gateway creates missing topics
    kafka_replication: int = 1
    kafka_linger_ms: int = 5
    kafka_compression: str = "lz4"
    drain_timeout_s: float = 30.0
    log_level: str = "INFO"
