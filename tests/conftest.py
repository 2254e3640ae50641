"""Shared pytest fixtures: the real dev services (Mosquitto, Kafka, InfluxDB 2) on loopback.

Session fixtures reuse a healthy running instance or start one (building/fetching it first when
needed, cached under ~/.cache/parkmon). At the end of the session a service is stopped only if this
session started it and no other live process holds a lease on it; PARKMON_KEEP_SERVICES=1 keeps
everything running. A service that cannot be provided fails the test with the reason: integration
tests are never skipped silently.

    mosquitto         .host .port .url .restart() .stop() .start() .kill()
    mosquitto_secure  same + .gateway(park) / .device(enterprise, park) -> Credentials(username, password)
    kafka             .bootstrap ("127.0.0.1:19092")
    influx            .url .org .token .bucket .org_id .create_bucket(name) .delete_bucket(id)
    influx_bucket     a fresh bucket per test: .name .id .url .org .token (deleted afterwards)
    unique_name       unique_name("prefix") -> "prefix-<pid>-<hex>" for topics, groups, client ids
    private_service   private_service("mosquitto"|"kafka"|"influxdb") -> an instance of its own on
                      free ports in tmp_path, stopped at teardown (for fault tests that restart or
                      stop a service without disturbing other users of the shared one)
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

KEEP_ENV = "PARKMON_KEEP_SERVICES"

#: The checkout these tests belong to. Child processes (`python -m apps.cli gateway ...`) started
#: with another working directory would otherwise import whatever checkout the virtualenv's
#: editable install points at (a worktree's tests would run another tree's code): put this one
#: first on their path.
REPO_ROOT = Path(__file__).resolve().parents[1]
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(REPO_ROOT), *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
                       if p and Path(p).resolve() != REPO_ROOT]])


def _keep() -> bool:
    return os.environ.get(KEEP_ENV, "").strip().lower() in ("1", "true", "yes")


def _provide(name: str) -> Iterator[Any]:
    from parkmon import devservices

    try:
        handle = devservices.ensure(name, quiet=True)
    except Exception as exc:  # noqa: BLE001 - any failure is reported, never skipped
        pytest.fail(
            f"dev service {name!r} is not available: {exc}\n"
            f"Provision it with `parkmon services up --only {name}` (see "
            "docs/operations-devservices.md).",
            pytrace=False,
        )
    try:
        yield handle
    finally:
        handle.release(keep=_keep())


@pytest.fixture(scope="session")
def mosquitto() -> Iterator[Any]:
    yield from _provide("mosquitto")


@pytest.fixture(scope="session")
def mosquitto_secure() -> Iterator[Any]:
    yield from _provide("mosquitto-secure")


@pytest.fixture(scope="session")
def kafka() -> Iterator[Any]:
    yield from _provide("kafka")


@pytest.fixture(scope="session")
def influx() -> Iterator[Any]:
    yield from _provide("influxdb")


@dataclass(frozen=True)
class InfluxBucket:
    name: str
    id: str
    url: str
    org: str
    token: str

    def __getitem__(self, key: str) -> str:  # also usable like the API's bucket dict
        return str(getattr(self, key))

    def __str__(self) -> str:
        return self.name


def _unique(prefix: str = "t") -> str:
    return f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:10]}"


@pytest.fixture()
def unique_name() -> Callable[..., str]:
    """``unique_name("orders")`` -> ``"orders-<pid>-<10 hex>"``: safe across concurrent sessions."""
    return _unique


@pytest.fixture()
def influx_bucket(influx: Any) -> Iterator[InfluxBucket]:
    created = influx.create_bucket(_unique("test"))
    bucket = InfluxBucket(created["name"], created["id"], influx.url, influx.org, influx.token)
    try:
        yield bucket
    finally:
        influx.delete_bucket(bucket.id)


def _free_port(count: int = 1) -> int:
    """A port p such that p .. p+count-1 are free right now (loopback)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + count > 65535:
            continue
        ok = True
        for p in range(base + 1, base + count):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no free loopback port range")


@pytest.fixture()
def private_service(tmp_path: Path) -> Iterator[Callable[[str], Any]]:
    from parkmon import devservices

    started: list[Any] = []

    def make(name: str) -> Any:
        canonical = devservices.canonical(name)
        port = _free_port(2 if canonical == "kafka" else 1)
        data_dir = tmp_path / f"{canonical}-{port}"
        try:
            h = devservices.handle(canonical, data_dir=data_dir, port=port)
            started.append(h)
            h.ensure()
        except Exception as exc:  # noqa: BLE001
            pytest.fail(f"private {canonical} could not be started: {exc}", pytrace=False)
        return h

    try:
        yield make
    finally:
        for h in started:
            h.stop()
