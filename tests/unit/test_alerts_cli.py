"""`parkmon alerts` command line: configuration errors are clear, a file run processes and exits."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import yaml

from alerts.cli import AlertsSettings, EndpointSpec, build_endpoints, main, secret_env_name
from alerts.model import DetectionEvent, DetectionKind
from parkmon.errors import ConfigError
from tests.support.alerts import toy_park_data

pytestmark = pytest.mark.unit

SECRET = "whsec_" + base64.b64encode(b"cli-test-secret-cli-test-secret!").decode()


def test_secret_variable_name() -> None:
    assert secret_env_name("ops-team.1") == "PARKMON_ALERTS_SECRET_OPS_TEAM_1"


def test_missing_secret_names_the_variable() -> None:
    s = AlertsSettings(endpoints=[EndpointSpec(name="ops", url="https://ops.example/")])
    with pytest.raises(ConfigError, match="PARKMON_ALERTS_SECRET_OPS"):
        build_endpoints(s, env={})
    with pytest.raises(ConfigError, match="whsec_"):
        build_endpoints(s, env={"PARKMON_ALERTS_SECRET_OPS": "hunter2"})
    [ep] = build_endpoints(s, env={"PARKMON_ALERTS_SECRET_OPS": SECRET})
    assert ep.secret.get_secret_value() == SECRET and "whsec" not in repr(ep)


@pytest.fixture()
def files(tmp_path: Path) -> dict[str, Path]:
    park = tmp_path / "park.yaml"
    park.write_text(yaml.safe_dump(toy_park_data()))
    events = tmp_path / "events.jsonl"
    ev = DetectionEvent(kind=DetectionKind.SUPPLY_DROP, exchange_id="steam", ts_ms=1, magnitude=1.0)
    events.write_bytes(ev.to_json() + b"\n" + b"not json\n")
    return {"park": park, "events": events, "db": tmp_path / "a.sqlite"}


def test_loopback_endpoint_is_refused_at_start_up(files, monkeypatch, capsys) -> None:
    monkeypatch.setenv("PARKMON_ALERTS_ENDPOINTS",
                       json.dumps([{"name": "ops", "url": "http://127.0.0.1:9/hook"}]))
    monkeypatch.setenv("PARKMON_ALERTS_SECRET_OPS", SECRET)
    code = main(["--park", str(files["park"]), "--db", str(files["db"]),
                 "--events-file", str(files["events"]), "--exit-when-idle"])
    assert code == 2
    err = capsys.readouterr().err
    assert "loopback" in err and "Traceback" not in err


def test_file_run_without_endpoints_then_status(files, monkeypatch, capsys) -> None:
    monkeypatch.setenv("PARKMON_ALERTS_GROUP_WAIT_MS", "0")
    monkeypatch.delenv("PARKMON_ALERTS_ENDPOINTS", raising=False)
    code = main(["run", "--park", str(files["park"]), "--db", str(files["db"]),
                 "--events-file", str(files["events"]), "--exit-when-idle"])
    assert code == 0
    capsys.readouterr()
    assert main(["status", "--db", str(files["db"])]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["counts"] == {"pending": 0, "delivered": 0, "dead": 0}


def test_missing_park_is_a_clear_error(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.delenv("PARKMON_ALERTS_PARK", raising=False)
    assert main(["run", "--db", str(tmp_path / "a.sqlite")]) == 2
    assert "PARKMON_ALERTS_PARK" in capsys.readouterr().err


def test_silence_commands_reach_the_running_service(tmp_path, capsys) -> None:
    import time

    from alerts.service import AlertService
    from tests.support.alerts import FakeClock, toy_park

    db = tmp_path / "a.sqlite"
    clock = FakeClock(int(time.time() * 1000))
    svc = AlertService.create(toy_park(), db, [], now_ms=clock)
    assert main(["silence", "add", "--db", str(db), "--match", "exchange=steam",
                 "--duration", "2h", "--comment", "valve work"]) == 0
    sil_id = capsys.readouterr().out.strip()
    assert svc.apply_commands() == 1 and svc.apply_commands() == 0
    [sil] = svc.lifecycle.silences()
    assert (sil.id, sil.matchers, sil.comment) == (sil_id, {"exchange": "steam"}, "valve work")
    assert sil.ends_at_ms - sil.starts_at_ms == 2 * 3_600_000
    svc.handle(DetectionEvent(kind=DetectionKind.SUPPLY_DROP, exchange_id="steam",
                              ts_ms=clock(), magnitude=1.0))
    clock.advance(10_000)
    assert svc.tick() == []
    assert main(["silence", "list", "--db", str(db)]) == 0
    assert [s["id"] for s in json.loads(capsys.readouterr().out)["silences"]] == [sil_id]
    assert main(["silence", "expire", "--db", str(db), sil_id]) == 0
    svc.apply_commands()
    assert [n.group_key for n in svc.tick()] == ["toy/supply/power"]


def test_bad_silence_arguments_are_clear(tmp_path, capsys) -> None:
    db = str(tmp_path / "a.sqlite")
    assert main(["silence", "add", "--db", db, "--match", "steam", "--duration", "2h"]) == 2
    assert "LABEL=VALUE" in capsys.readouterr().err
    assert main(["silence", "add", "--db", db, "--match", "a=b", "--duration", "soon"]) == 2
    assert "duration" in capsys.readouterr().err
