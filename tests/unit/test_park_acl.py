"""`parkmon park acl`: the Mosquitto ACL written from park files."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from parkmon.park import load_park
from parkmon.park.acl import mosquitto_acl
from parkmon.park.cli import main
from tests.support.ingest import park_yaml

pytestmark = pytest.mark.unit


def park(tmp_path: Path, park_id: str, ents: tuple[str, str]) -> Path:
    f = tmp_path / f"{park_id}.yaml"
    f.write_text(park_yaml(park_id, ents))
    return f


def rules(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln and not ln.startswith("#")]


def test_each_enterprise_writes_only_its_readings_topic_and_the_gateway_reads_all(tmp_path):
    p1 = load_park(park(tmp_path, "north", ("pw", "bd")))
    p2 = load_park(park(tmp_path, "south", ("pw", "xx")))
    text = mosquitto_acl([p2, p1], gateway_user="gw", device_user_template="{park}-{enterprise}")
    assert rules(text) == [
        "user gw", "topic read parkmon/north/+/readings", "topic read parkmon/south/+/readings",
        "user north-bd", "topic write parkmon/north/bd/readings",
        "user north-pw", "topic write parkmon/north/pw/readings",
        "user south-pw", "topic write parkmon/south/pw/readings",
        "user south-xx", "topic write parkmon/south/xx/readings"]
    assert mosquitto_acl([p1, p2], gateway_user="gw",
                         device_user_template="{park}-{enterprise}") == text  # deterministic


def test_default_device_user_shared_across_parks_gets_both_topics(tmp_path):
    p1 = load_park(park(tmp_path, "north", ("pw", "bd")))
    p2 = load_park(park(tmp_path, "south", ("pw", "xx")))
    r = rules(mosquitto_acl([p1, p2]))
    i = r.index("user dev_pw")
    assert r[i + 1:i + 3] == ["topic write parkmon/north/pw/readings",
                              "topic write parkmon/south/pw/readings"]


@pytest.mark.parametrize("user", ["a b", "x\ntopic readwrite #", "#", "dev_+"])
def test_user_names_cannot_inject_acl_lines_or_wildcards(tmp_path, user):
    p = load_park(park(tmp_path, "north", ("pw", "bd")))
    with pytest.raises(ValueError):
        mosquitto_acl([p], gateway_user=user)
    with pytest.raises(ValueError):
        mosquitto_acl([p], device_user_template=user + "{enterprise}")


def test_gateway_user_may_not_also_be_a_device_user(tmp_path):
    p = load_park(park(tmp_path, "north", ("pw", "bd")))
    with pytest.raises(ValueError, match="also the gateway"):
        mosquitto_acl([p], gateway_user="dev_pw")


def test_cli_writes_the_file_and_reports_bad_input(tmp_path):
    f = park(tmp_path, "north", ("pw", "bd"))
    out, err = io.StringIO(), io.StringIO()
    assert main(["acl", str(f), "-o", str(tmp_path / "acl")], out=out, err=err) == 0
    assert "user dev_bd" in (tmp_path / "acl").read_text()
    assert main(["acl", str(f)], out=out, err=err) == 0 and "user gateway" in out.getvalue()
    assert main(["acl", str(f), "--device-user", "a b"], out=out, err=err) == 2
    (tmp_path / "bad.yaml").write_text("park: {id: 'x y'}\n")
    assert main(["acl", str(tmp_path / "bad.yaml")], out=out, err=err) == 2
