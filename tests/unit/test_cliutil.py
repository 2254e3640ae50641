import pytest

from parkmon.cliutil import load_park_or_explain
from parkmon.park import example_park_path

pytestmark = pytest.mark.unit


def test_missing_path_names_the_option_and_variable(capsys):
    assert load_park_or_explain("detect", None, "PARKMON_DETECT_PARK_FILE") is None
    err = capsys.readouterr().err
    assert "parkmon detect: no park file" in err and "PARKMON_DETECT_PARK_FILE" in err


def test_missing_file_says_which(tmp_path, capsys):
    path = tmp_path / "nope.yaml"
    assert load_park_or_explain("edge", str(path), "X") is None
    err = capsys.readouterr().err
    assert "nope.yaml: file not found" in err and "Traceback" not in err


def test_invalid_file_lists_its_problems(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("park: {id: p, name: P, timezone: UTC}\nenterprises: []\nmeters:\n  - {id: x}\n")
    assert load_park_or_explain("gateway", str(path), "X") is None
    err = capsys.readouterr().err
    assert "park file is not valid" in err and "meters[0]" in err


def test_valid_file_loads():
    park = load_park_or_explain("gateway", str(example_park_path("kalundborg")), "X")
    assert park is not None and park.id == "kalundborg"
