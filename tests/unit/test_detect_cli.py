"""`parkmon detect` configuration errors: exit code 2 with one clear line, before any Kafka I/O."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from apps.cli import COMMANDS
from detect.worker import DetectSettings, detect_deadletter_topic, main

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for var in [v for v in os.environ if v.startswith("PARKMON_DETECT_")]:
        monkeypatch.delenv(var)
    handlers = logging.getLogger().handlers[:]
    level = logging.getLogger().level
    yield
    logging.getLogger().handlers[:] = handlers  # main() installs the JSON handler
    logging.getLogger().setLevel(level)


def test_registered_as_a_parkmon_subcommand() -> None:
    assert COMMANDS["detect"][0] == "detect.worker:main"


def test_no_park_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "no park file" in capsys.readouterr().err


def test_unreadable_and_invalid_park_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--park", str(tmp_path / "nope.yaml")]) == 2
    assert "file not found" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("park: {id: x}\nmeters: 3\n")
    assert main(["--park", str(bad)]) == 2
    assert "not valid" in capsys.readouterr().err


def test_bad_setting_in_the_environment(monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PARKMON_DETECT_BATCH_SIZE", "many")
    assert main(["--park", "x.yaml"]) == 2
    assert "batch_size" in capsys.readouterr().err


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    s = DetectSettings()
    assert s.checkpoint is None and s.idle_tick_s == 60 and s.tick_step_ms == 10_000
    assert detect_deadletter_topic("kalundborg") == "parkmon.kalundborg.detect-deadletter"
    monkeypatch.setenv("PARKMON_DETECT_CHECKPOINT", "/var/lib/parkmon/detect.ckpt")
    assert DetectSettings().checkpoint == "/var/lib/parkmon/detect.ckpt"
