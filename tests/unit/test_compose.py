"""docker-compose.yml validated offline: Debian's docker-compose `config -q` plus structural checks
(every service the code expects, healthchecks, named volumes, secrets only from .env)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
EXPECTED = {"mosquitto", "kafka", "influxdb", "grafana", "gateway", "streams-worker", "detect", "alerts"}
PARKMON_SERVICES = {"gateway": "gateway", "streams-worker": "streams", "detect": "detect",
                    "alerts": "alerts"}
SECRET_KEY = re.compile(r"(PASSWORD|TOKEN|SECRET)", re.I)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def _env_example() -> dict[str, str]:
    out = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value
    return out


def _compose_cmd() -> list[str]:
    exe = shutil.which("docker-compose")
    if exe is None:
        msg = ("docker-compose not installed (apt-get install -y --no-install-recommends "
               "docker-compose; scripts/provision.sh does it)")
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return [exe]


def test_every_expected_service_is_there(compose: dict[str, Any]) -> None:
    assert EXPECTED <= set(compose["services"])


def test_every_service_has_a_healthcheck(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        hc = svc.get("healthcheck")
        assert hc and hc.get("test"), f"{name} has no healthcheck"


def test_stateful_services_use_declared_named_volumes(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    for name in EXPECTED:
        named = [v.split(":")[0] for v in compose["services"][name].get("volumes", [])
                 if not v.startswith((".", "/"))]
        assert named, f"{name} keeps no state in a named volume"
        assert set(named) <= declared, f"{name} uses undeclared volumes {set(named) - declared}"


def test_parkmon_services_are_built_from_the_dockerfile(compose: dict[str, Any]) -> None:
    assert (REPO / "Dockerfile").exists()
    for name, subcommand in PARKMON_SERVICES.items():
        svc = compose["services"][name]
        assert svc.get("build") in (".", {"context": "."}), name
        assert svc["command"][0] == subcommand, name


def test_grafana_mounts_the_repository_provisioning_and_dashboards(compose: dict[str, Any]) -> None:
    mounts = {v.split(":")[0]: v.split(":")[1] for v in compose["services"]["grafana"]["volumes"]}
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    assert (REPO / "grafana" / "provisioning").is_dir()
    assert "./grafana/dashboards" in mounts
    assert (REPO / "grafana" / "dashboards").is_dir()


def test_kafka_runs_kraft_without_zookeeper(compose: dict[str, Any]) -> None:
    kafka = compose["services"]["kafka"]
    assert re.match(r"apache/kafka:4\.", kafka["image"])
    assert "controller" in kafka["environment"]["KAFKA_PROCESS_ROLES"]
    assert "zookeeper" not in COMPOSE.read_text().lower()


def test_no_secret_is_written_in_the_compose_file(compose: dict[str, Any]) -> None:
    def walk_env(env: Any) -> list[tuple[str, str]]:
        if isinstance(env, dict):
            return [(k, str(v)) for k, v in env.items()]
        return [tuple(e.split("=", 1)) for e in env or [] if "=" in e]  # type: ignore[misc]

    for name, svc in compose["services"].items():
        for key, value in walk_env(svc.get("environment")):
            if SECRET_KEY.search(key) and value:
                assert value.startswith("${") or value.startswith("$${"), \
                    f"{name}: {key} must come from .env, not be written in the file"


def test_env_example_names_every_required_variable() -> None:
    required = set(re.findall(r"\$\{(PARKMON_[A-Z0-9_]+):\?", COMPOSE.read_text()))
    assert required, "compose requires no variables: secrets would have defaults"
    missing = required - set(_env_example())
    assert not missing, f".env.example lacks {sorted(missing)}"
    for key, value in _env_example().items():
        if SECRET_KEY.search(key) and key != "PARKMON_ALERTS_ENDPOINTS":
            assert value == "change-me", f".env.example must not ship a real {key}"


def test_docker_compose_config_accepts_the_file(tmp_path: Path) -> None:
    cmd = _compose_cmd()
    env_file = tmp_path / ".env"
    env_file.write_text(ENV_EXAMPLE.read_text())
    proc = subprocess.run(cmd + ["--env-file", str(env_file), "-f", str(COMPOSE), "config", "-q"],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_docker_compose_config_refuses_a_missing_secret(tmp_path: Path) -> None:
    cmd = _compose_cmd()
    env_file = tmp_path / ".env"
    env_file.write_text("\n".join(line for line in ENV_EXAMPLE.read_text().splitlines()
                                  if not line.startswith("PARKMON_INFLUX_TOKEN=")) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARKMON_")}
    proc = subprocess.run(cmd + ["--env-file", str(env_file), "-f", str(COMPOSE), "config", "-q"],
                          capture_output=True, text=True, cwd=REPO, timeout=120, env=env)
    assert proc.returncode != 0
    assert "PARKMON_INFLUX_TOKEN" in proc.stderr
