"""Real Mosquitto, Kafka and InfluxDB 2 on loopback, provisioned by the project itself.

    from parkmon import devservices
    kafka = devservices.ensure("kafka")      # install/build (cached), start if needed, wait healthy
    kafka.bootstrap                          # "127.0.0.1:19092"
    devservices.stop("kafka")                # stops it only if our pid file names a live process

Services (name -> default address):
  mosquitto         127.0.0.1:18830  Debian's mosquitto, anonymous, persistent
  mosquitto-secure  127.0.0.1:18831  password file + ACL (gateway / dev_<enterprise> users)
  kafka             127.0.0.1:19092  Apache Kafka 4.x KRaft single node (controller on 19093)
  influxdb          127.0.0.1:18086  InfluxDB 2.7 OSS built from source, onboarded (org/bucket parkmon)

Data dirs: ``$PARKMON_DEVSERVICES_DIR/<name>`` or ``~/.cache/parkmon/run/<name>``. Builds and jars
are cached in ``$PARKMON_CACHE`` (default ``~/.cache/parkmon``). ``handle(name, data_dir=...,
port=...)`` gives a private instance (fault tests that restart or stop a service use one so that
they do not disturb other users of the shared instance).
"""

from __future__ import annotations

import time
from pathlib import Path

from parkmon.devservices.base import DevServiceError, ServiceHandle, cache_dir, run_root
from parkmon.devservices.influx import Influx
from parkmon.devservices.kafka import Kafka
from parkmon.devservices.mosquitto import Credentials, Mosquitto, MosquittoSecure

ServiceInfo = ServiceHandle

SERVICES: tuple[str, ...] = ("mosquitto", "mosquitto-secure", "kafka", "influxdb")
ALIASES = {"influx": "influxdb", "mqtt": "mosquitto", "mosquitto_secure": "mosquitto-secure"}

_CLASSES: dict[str, type[ServiceHandle]] = {
    "mosquitto": Mosquitto,
    "mosquitto-secure": MosquittoSecure,
    "kafka": Kafka,
    "influxdb": Influx,
}


def canonical(name: str) -> str:
    name = ALIASES.get(name, name)
    if name not in _CLASSES:
        raise DevServiceError(f"unknown dev service {name!r}; known: {', '.join(SERVICES)}")
    return name


def handle(name: str, data_dir: Path | None = None, port: int | None = None) -> ServiceHandle:
    """A handle on a service instance (nothing is started). Defaults: the shared instance."""
    name = canonical(name)
    cls = _CLASSES[name]
    kwargs: dict[str, object] = {"data_dir": data_dir or (run_root() / name)}
    if port is not None:
        kwargs["port"] = port
    return cls(**kwargs)  # type: ignore[arg-type]


def install(name: str) -> ServiceHandle:
    """Install / fetch / build what ``name`` needs (cached); does not start it."""
    h = handle(name)
    h.install()
    return h


def ensure(name: str, data_dir: Path | None = None, port: int | None = None,
           quiet: bool = False, lease: bool = True) -> ServiceHandle:
    """Install (cached), start unless already healthy, wait for health; prints time to healthy.
    ``lease`` registers this process as a user (see ServiceHandle.release); the CLI takes none."""
    h = handle(name, data_dir, port)
    t0 = time.monotonic()
    h.ensure(lease=lease)
    if not quiet:
        if h.started_here:
            print(f"[devservices] {h.name} started, healthy after {h.healthy_after_s:.1f}s "
                  f"on {h.host}:{h.port}", flush=True)
        else:
            print(f"[devservices] {h.name} already running on {h.host}:{h.port} "
                  f"(checked in {time.monotonic() - t0:.1f}s)", flush=True)
    return h


def stop(name: str, data_dir: Path | None = None) -> bool:
    """Stop the instance only if its recorded pid is a live process this code started."""
    return handle(name, data_dir).stop()


def status() -> list[dict[str, object]]:
    return [handle(n).describe() for n in SERVICES]


__all__ = [
    "SERVICES",
    "Credentials",
    "DevServiceError",
    "Influx",
    "Kafka",
    "Mosquitto",
    "MosquittoSecure",
    "ServiceHandle",
    "ServiceInfo",
    "cache_dir",
    "canonical",
    "ensure",
    "handle",
    "install",
    "status",
    "stop",
]
