"""`parkmon influx-tokens` against the real InfluxDB 2.7: the tokens it creates can do exactly what
their service needs. A write-only token (streams, alerts) writes its bucket but cannot query it nor
write another bucket; a read-only token (grafana, ledger) queries but cannot write; `--revoke-old`
retires the previous generation."""

from __future__ import annotations

import io
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from apps.influx_tokens import InfluxAdmin, main

pytestmark = pytest.mark.integration


def write(url: str, org: str, bucket: str, token: str, line: str) -> int:
    r = httpx.post(f"{url}/api/v2/write", params={"org": org, "bucket": bucket, "precision": "ms"},
                   headers={"Authorization": f"Token {token}"}, content=line, timeout=10)
    return r.status_code


def query(url: str, org: str, bucket: str, token: str) -> tuple[int, str]:
    flux = f'from(bucket: "{bucket}") |> range(start: -1h) |> filter(fn: (r) => r._measurement == "probe")'
    r = httpx.post(f"{url}/api/v2/query", params={"org": org},
                   headers={"Authorization": f"Token {token}", "Accept": "application/csv",
                            "Content-Type": "application/json"},
                   json={"query": flux, "type": "flux"}, timeout=10)
    return r.status_code, r.text


def parse_env(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            k, _, v = line.partition("=")
            out[k.removeprefix("PARKMON_INFLUX_TOKEN_").lower()] = v
    return out


@pytest.fixture()
def env(influx_bucket: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("PARKMON_INFLUX_URL", influx_bucket.url)
    monkeypatch.setenv("PARKMON_INFLUX_ORG", influx_bucket.org)
    monkeypatch.setenv("PARKMON_INFLUX_BUCKET", influx_bucket.name)
    monkeypatch.setenv("PARKMON_INFLUX_TOKEN", influx_bucket.token)
    yield influx_bucket
    # remove every token this test made (the InfluxDB is shared)
    admin = InfluxAdmin(influx_bucket.url, influx_bucket.token)
    try:
        org_id = admin.org_id(influx_bucket.org)
        for role in ("streams", "alerts", "grafana", "ledger"):
            for auth_id in admin.with_description(org_id, f"parkmon {role} {influx_bucket.name}"):
                admin.delete(auth_id)
    finally:
        admin.close()


def test_tokens_have_exactly_their_services_permissions(env: Any, influx: Any, tmp_path: Path):
    b = env
    out_file = tmp_path / "influx.env"
    err = io.StringIO()
    assert main(["--env-file", str(out_file)], err=err) == 0
    assert stat.S_IMODE(os.stat(out_file).st_mode) == 0o600
    tokens = parse_env(out_file.read_text())
    assert set(tokens) == {"streams", "alerts", "grafana", "ledger"}
    for t in tokens.values():  # the tool's own messages never show a token
        assert t not in err.getvalue()
    assert b.token not in out_file.read_text() + err.getvalue()
    now = int(time.time() * 1000)
    other = influx.create_bucket(f"{b.name}-other")
    try:
        for role in ("streams", "alerts"):  # write-only
            t = tokens[role]
            assert write(b.url, b.org, b.name, t, f"probe,role={role} v=1i {now}") == 204
            code, text = query(b.url, b.org, b.name, t)
            assert code in (401, 403, 404) and "probe" not in text, (role, code, text[:200])
            assert write(b.url, b.org, other["name"], t, f"probe v=1i {now}") in (401, 403, 404)
        for role in ("grafana", "ledger"):  # read-only
            t = tokens[role]
            assert write(b.url, b.org, b.name, t, f"probe,role={role} v=2i {now}") in (401, 403,
                                                                                     404)
            code, text = query(b.url, b.org, b.name, t)
            assert code == 200 and "streams" in text and "alerts" in text, (role, code, text)
            assert f"role={role}" not in text and ",grafana," not in text
            code, _ = query(b.url, b.org, other["name"], t)
            assert code in (401, 403, 404)
    finally:
        influx.delete_bucket(other["id"])


def test_revoke_old_retires_the_previous_generation(env: Any, tmp_path: Path):
    b = env
    first, second = tmp_path / "1.env", tmp_path / "2.env"
    assert main(["--env-file", str(first), "--roles", "streams"]) == 0
    old = parse_env(first.read_text())["streams"]
    now = int(time.time() * 1000)
    assert write(b.url, b.org, b.name, old, f"probe v=1i {now}") == 204
    err = io.StringIO()
    assert main(["--env-file", str(second), "--roles", "streams", "--revoke-old"], err=err) == 0
    assert "revoked 1" in err.getvalue()
    new = parse_env(second.read_text())["streams"]
    assert new != old
    assert write(b.url, b.org, b.name, new, f"probe v=2i {now + 1}") == 204
    assert write(b.url, b.org, b.name, old, f"probe v=3i {now + 2}") == 401


def test_bad_operator_token_and_unknown_bucket_fail_clearly(env: Any, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch):
    err = io.StringIO()
    assert main(["--env-file", str(tmp_path / "x.env"), "--bucket", "no-such-bucket-xyz"],
                err=err) == 2
    assert "no-such-bucket-xyz" in err.getvalue()
    monkeypatch.setenv("PARKMON_INFLUX_TOKEN", "operator-token-WRONG-1234")
    err = io.StringIO()
    assert main(["--env-file", str(tmp_path / "y.env")], err=err) == 1
    assert "401" in err.getvalue() and "operator-token-WRONG-1234" not in err.getvalue()
    assert not (tmp_path / "y.env").exists()
