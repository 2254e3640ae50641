"""InfluxDB 2.7 OSS (``influxd``) built from source by ``scripts/build-influxd.sh``.

Runs on 127.0.0.1:18086 with its bolt/sqlite/engine files in the data dir and usage reporting off.
After the first healthy start it is onboarded through ``POST /api/v2/setup`` (org ``parkmon``,
bucket ``parkmon``, a generated operator token kept in ``<data dir>/operator-token``, mode 0600,
never committed). Health: ``GET /health`` answers ``"status": "pass"``.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from pathlib import Path
from typing import Any

import httpx

from parkmon.devservices.base import (
    DevServiceError,
    ServiceHandle,
    cache_dir,
    file_lock,
    scripts_dir,
)

INFLUXDB_VERSION = os.environ.get("PARKMON_INFLUXDB_VERSION", "2.7.12")
PORT = 18086
ORG = "parkmon"
BUCKET = "parkmon"
USERNAME = "parkmon"


def influxd_binary(version: str = INFLUXDB_VERSION) -> Path:
    return cache_dir() / "bin" / f"influxd-{version}"


def build_influxd(version: str = INFLUXDB_VERSION) -> Path:
    binary = influxd_binary(version)
    if binary.exists():
        return binary
    with file_lock(cache_dir() / f".build-influxd-{version}.lock"):  # one build at a time
        _build_locked(binary, version)
    return binary


def _build_locked(binary: Path, version: str) -> None:
    if not binary.exists():
        print(
            f"[devservices] building influxd {version} from source (libflux + go build; "
            "several minutes, cached afterwards) ...",
            flush=True,
        )
        env = dict(os.environ, INFLUXDB_VERSION=version, PARKMON_CACHE=str(cache_dir()))
        proc = subprocess.run(["bash", str(scripts_dir() / "build-influxd.sh")], env=env)
        if proc.returncode != 0 or not binary.exists():
            raise DevServiceError(f"scripts/build-influxd.sh failed (exit {proc.returncode})")


class Influx(ServiceHandle):
    def __init__(self, data_dir: Path, port: int = PORT, host: str = "127.0.0.1",
                 name: str = "influxdb", version: str = INFLUXDB_VERSION) -> None:
        super().__init__(name=name, host=host, port=port, data_dir=data_dir, start_timeout_s=90)
        self.version = version
        self.org = ORG
        self.bucket = BUCKET
        self.org_id: str | None = None
        self.bucket_id: str | None = None
        self._token: str | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def token_file(self) -> Path:
        return self.data_dir / "operator-token"

    @property
    def setup_file(self) -> Path:
        return self.data_dir / "setup.json"

    @property
    def token(self) -> str:
        if self._token is None:
            try:
                self._token = self.token_file.read_text().strip()
            except OSError as exc:
                raise DevServiceError(f"InfluxDB not onboarded yet: {self.token_file} missing") from exc
        return self._token

    def install(self) -> None:
        build_influxd(self.version)

    def command(self) -> list[str]:
        d = self.data_dir
        return [
            str(influxd_binary(self.version)),
            f"--bolt-path={d / 'influxd.bolt'}",
            f"--engine-path={d / 'engine'}",
            f"--sqlite-path={d / 'influxd.sqlite'}",
            f"--http-bind-address={self.host}:{self.port}",
            "--reporting-disabled",
            "--ui-disabled",
            "--log-level=warn",
            "--storage-wal-fsync-delay=0s",
            "--query-concurrency=16",
            "--query-queue-size=64",
        ]

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("INFLUXD_")}
        env["INFLUXD_CONFIG_PATH"] = str(self.data_dir)  # no stray config.toml from elsewhere
        return env

    def probe(self) -> bool:
        r = httpx.get(f"{self.url}/health", timeout=2)
        return r.status_code == 200 and r.json().get("status") == "pass"

    # -- onboarding and buckets ------------------------------------------------------------------
    def _client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, timeout=15, headers={"Authorization": f"Token {self.token}"}
        )

    def after_healthy(self) -> None:
        allowed = httpx.get(f"{self.url}/api/v2/setup", timeout=10).json().get("allowed")
        if allowed:
            token = secrets.token_urlsafe(48)
            body = {
                "username": USERNAME,
                "password": secrets.token_urlsafe(18),
                "org": ORG,
                "bucket": BUCKET,
                "token": token,
            }
            r = httpx.post(f"{self.url}/api/v2/setup", json=body, timeout=30)
            if r.status_code != 201:
                raise DevServiceError(f"InfluxDB onboarding failed: {r.status_code} {r.text}")
            self.token_file.write_text(token + "\n")
            os.chmod(self.token_file, 0o600)
            info = r.json()
            setup = {"org": ORG, "org_id": info["org"]["id"], "bucket": BUCKET,
                     "bucket_id": info["bucket"]["id"], "user": USERNAME}
            self.setup_file.write_text(json.dumps(setup, indent=2) + "\n")
            self._token = token
        elif not self.token_file.exists():
            raise DevServiceError(
                f"InfluxDB at {self.url} is already set up but {self.token_file} is missing; "
                f"stop it and delete {self.data_dir} to start afresh"
            )
        setup = json.loads(self.setup_file.read_text())
        self.org_id = setup["org_id"]
        self.bucket_id = setup["bucket_id"]

    def create_bucket(self, name: str, retention_s: int = 0) -> dict[str, Any]:
        rules = [{"type": "expire", "everySeconds": retention_s}] if retention_s else []
        with self._client() as c:
            r = c.post("/api/v2/buckets",
                       json={"orgID": self.org_id, "name": name, "retentionRules": rules})
        if r.status_code != 201:
            raise DevServiceError(f"create bucket {name}: {r.status_code} {r.text}")
        result: dict[str, Any] = r.json()
        return result

    def delete_bucket(self, bucket_id: str) -> None:
        with self._client() as c:
            r = c.delete(f"/api/v2/buckets/{bucket_id}")
        if r.status_code not in (204, 404):
            raise DevServiceError(f"delete bucket {bucket_id}: {r.status_code} {r.text}")

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update({"url": self.url, "org": self.org, "bucket": self.bucket,
                  "token_file": str(self.token_file)})
        return d
