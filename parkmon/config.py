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
