"""`parkmon gateway` refuses bad configuration with a clear message and exit code 2."""

from __future__ import annotations

import json
import logging

import pytest

from ingest.cli import JsonFormatter, main

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    monkeypatch.delenv("PARKMON_GATEWAY_PARK_FILE", raising=False)


def test_no_park_file(capsys):
    assert main([]) == 2
    assert "--park FILE" in capsys.readouterr().err


def test_unreadable_park_file(tmp_path, capsys):
    assert main(["--park", str(tmp_path / "missing.yaml")]) == 2
    err = capsys.readouterr().err
    assert "missing.yaml" in err and "Traceback" not in err


def test_invalid_park_file_lists_the_problems(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("park: {id: p, name: P}\nenterprises: []\nmeters: []\n")
    assert main(["--park", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "not valid" in err and "enterprises" in err and "Traceback" not in err


def test_bad_setting_in_the_environment(monkeypatch, capsys):
    monkeypatch.setenv("PARKMON_GATEWAY_METRICS_PORT", "not-a-port")
    assert main(["--park", "x.yaml"]) == 2
    err = capsys.readouterr().err
    assert "bad setting in the environment" in err and "metrics_port" in err


def test_json_log_lines_carry_the_extra_fields():
    rec = logging.LogRecord("parkmon.gateway", logging.WARNING, __file__, 1, "reading rejected",
                            None, None)
    rec.event, rec.reason = "rejected", "schema"
    line = json.loads(JsonFormatter().format(rec))
    assert (line["level"], line["msg"], line["event"], line["reason"]) == (
        "warning", "reading rejected", "rejected", "schema")
    assert line["ts"].endswith("Z")
