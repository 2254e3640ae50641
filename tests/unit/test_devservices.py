"""Dev-service plumbing that needs no running service: names, ids, pid safety, leases, configs."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest

from parkmon import devservices
from parkmon.devservices.base import DevServiceError, ServiceHandle, cmdline_of
from parkmon.devservices.cli import main as services_main
from parkmon.devservices.kafka import Kafka, random_cluster_id
from parkmon.devservices.mosquitto import Mosquitto, MosquittoSecure

pytestmark = pytest.mark.unit


def test_cluster_ids_are_kafka_uuids() -> None:
    ids = {random_cluster_id() for _ in range(50)}
    assert len(ids) == 50
    for cid in ids:
        assert len(cid) == 22 and "=" not in cid
        assert len(base64.urlsafe_b64decode(cid + "==")) == 16


def test_cluster_ids_never_start_with_a_dash() -> None:
    # regression: 1 id in 64 started with '-', and `kafka-storage format --cluster-id -x...` took
    # it for an option (the CI soak failed once on it); 3000 draws miss that with p < 1e-20
    assert not [c for c in (random_cluster_id() for _ in range(3000)) if c.startswith("-")]


def test_aliases_and_unknown_names() -> None:
    assert devservices.canonical("influx") == "influxdb"
    assert devservices.canonical("mosquitto_secure") == "mosquitto-secure"
    with pytest.raises(DevServiceError, match="unknown dev service"):
        devservices.canonical("zookeeper")


def test_cli_rejects_an_unknown_service(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        services_main(["up", "--only", "zookeeper"])
    assert exc.value.code == 2
    assert "unknown dev service" in capsys.readouterr().err


def test_data_dirs_follow_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PARKMON_DEVSERVICES_DIR", str(tmp_path))
    assert devservices.handle("kafka").data_dir == tmp_path / "kafka"


class _Sleeper(ServiceHandle):
    """A stand-in process (a sleeping Python) to exercise pid handling without a broker."""

    def command(self) -> list[str]:
        return [sys.executable, "-c", "import time,sys; time.sleep(60)", str(self.data_dir)]

    def probe(self) -> bool:
        pid = self.recorded_pid()
        return pid is not None


def test_a_foreign_pid_in_the_pid_file_is_never_signalled(tmp_path: Path) -> None:
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        h = _Sleeper(name="x", host="127.0.0.1", port=1, data_dir=tmp_path)
        h.pid_file.write_text(f"{other.pid}\n")
        assert h.recorded_pid() is None  # its command line does not name our data dir
        assert h.stop() is False
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_start_stop_and_release_only_touch_our_process(tmp_path: Path) -> None:
    h = _Sleeper(name="x", host="127.0.0.1", port=1, data_dir=tmp_path, start_timeout_s=10)
    h.ensure()
    pid = h.recorded_pid()
    assert pid is not None and h.started_here
    again = _Sleeper(name="x", host="127.0.0.1", port=1, data_dir=tmp_path)
    again.ensure()
    assert again.recorded_pid() == pid and not again.started_here
    assert again.release() == "left running (not started here)"
    assert h.release(keep=True).startswith("kept")
    assert h.release() == "stopped"
    assert h.recorded_pid() is None


def test_release_leaves_a_service_other_live_processes_lease(tmp_path: Path) -> None:
    h = _Sleeper(name="x", host="127.0.0.1", port=1, data_dir=tmp_path, start_timeout_s=10)
    h.ensure()
    (h.leases_dir / str(os.getppid())).write_text(cmdline_of(os.getppid()) + "\n")  # alive
    (h.leases_dir / "999999999").write_text("a dead one\n")
    try:
        assert h.release() == f"left running (in use by pids [{os.getppid()}])"
        assert not (h.leases_dir / "999999999").exists()
        # a recycled pid (alive, but another program) holds no lease
        (h.leases_dir / str(os.getppid())).write_text("some other program\n")
        h.take_lease()
        assert h.release() == "stopped"
    finally:
        h.stop()


def test_mosquitto_config_is_persistent_and_loopback(tmp_path: Path) -> None:
    m = Mosquitto(tmp_path, port=18999)
    m.prepare()
    conf = m.config_file.read_text().splitlines()
    assert "listener 18999 127.0.0.1" in conf
    assert "persistence true" in conf
    assert "max_queued_bytes 0" in conf
    assert "allow_anonymous true" in conf


def test_secure_mosquitto_acl_confines_each_device(tmp_path: Path) -> None:
    m = MosquittoSecure(tmp_path, port=18998)
    m.prepare()
    dev = m.device("novo", park="kbg")
    gw = m.gateway("kbg")
    acl = m.acl_file.read_text()
    assert "user dev_novo\ntopic write parkmon/kbg/novo/#" in acl
    assert "topic read parkmon/kbg/#" in acl and "topic read parkmon/testpark/#" in acl
    assert "allow_anonymous false" in m.config_file.read_text()
    # hashed password file, plaintext only in the 0600 credentials file
    passwd = m.password_file.read_text()
    assert dev.password not in passwd and gw.password not in passwd
    assert passwd.startswith("dev_novo:$") or "dev_novo:$" in passwd
    assert oct(m.state_file.stat().st_mode & 0o777) == "0o600"
    assert m.device("novo", park="kbg") == dev  # stable across calls
    with pytest.raises(DevServiceError, match="already bound"):
        m.device("novo", park="otherpark")


def test_kafka_properties_are_single_node_kraft(tmp_path: Path) -> None:
    k = Kafka(tmp_path, port=29092)
    props = k.properties()
    assert props["process.roles"] == "broker,controller"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:29092,CONTROLLER://127.0.0.1:29093"
    assert props["num.partitions"] == "4"
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["group.initial.rebalance.delay.ms"] == "0"
