"""No secret value ever appears in logs, stdout/stderr, /metrics, /healthz or error messages.

`parkmon gateway`, `parkmon alerts` and `parkmon edge` run as their own processes at DEBUG log
level with distinctive secrets (MQTT password, InfluxDB token, webhook secret; parkmon has no Kafka
SASL settings) and go through their failure paths: a wrong MQTT password on the secure broker, an
InfluxDB that refuses the token, an unreachable webhook receiver, a configuration error at start.
Everything they print or serve is searched for each secret (and the base64 body of the webhook
secret).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from alerts.model import DetectionEvent, DetectionKind
from parkmon.park import example_park_path
from tests.support.alerts import toy_park_data
from tests.support.edge import EdgeProcess
from tests.support.ingest import REPO_ROOT, GatewayProcess, free_port, park_yaml, unique

pytestmark = pytest.mark.integration

TAG = uuid.uuid4().hex[:8]
MQTT_PASSWORD = f"mqtt-pw-SECRET-{TAG}"
INFLUX_TOKEN = f"influx-token-SECRET-{TAG}"
WEBHOOK_RAW = f"webhook-raw-SECRET-{TAG}-0123456".encode()
WEBHOOK_SECRET = "whsec_" + base64.b64encode(WEBHOOK_RAW).decode()
BAD_WEBHOOK_SECRET = f"whsec_bad{TAG}"  # decodes to 8 bytes: refused as too short
NEEDLES = (MQTT_PASSWORD, INFLUX_TOKEN, WEBHOOK_SECRET, WEBHOOK_SECRET.removeprefix("whsec_"),
           WEBHOOK_RAW.decode(), BAD_WEBHOOK_SECRET.removeprefix("whsec_"))


def assert_no_secret(where: str, text: str) -> None:
    assert text, f"{where}: nothing captured (the check would pass vacuously)"
    for needle in NEEDLES:
        assert needle not in text, f"{where} contains a secret: ...{text[text.find(needle) - 80:][:200]}"


def wait_for(cond: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def http_text(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return str(r.read().decode())
    except urllib.error.HTTPError as e:  # /healthz answers 503 when unhealthy
        return str(e.read().decode())


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARKMON_")}
    env.update({"PYTHONPATH": str(REPO_ROOT), **extra})
    return env


def test_gateway_never_shows_the_mqtt_password(tmp_path, mosquitto_secure, kafka):
    park_id = unique("gwsecret").replace("-", "_")
    park_file = tmp_path / "park.yaml"
    park_file.write_text(park_yaml(park_id))
    gw_cred = mosquitto_secure.gateway(park_id)
    debug = {"PARKMON_GATEWAY_LOG_LEVEL": "DEBUG", "PARKMON_INFLUX_TOKEN": INFLUX_TOKEN}
    # 1. wrong password: refused by the broker, unhealthy, the reason in /healthz
    bad = GatewayProcess(park_file, mosquitto_secure.host, mosquitto_secure.port, kafka.bootstrap,
                         unique("gw"), tmp_path / "bad.log",
                         env_extra={**debug, "PARKMON_MQTT_USERNAME": gw_cred.username,
                                    "PARKMON_MQTT_PASSWORD": MQTT_PASSWORD})
    bad.start(wait_healthy_s=0)
    try:
        wait_for(lambda: bool((bad.health() or {}).get("mqtt_error")), 30, "the refusal")
        health = http_text(bad.url("/healthz"))
        assert "refused" in health
        assert_no_secret("gateway /healthz", health)
        assert_no_secret("gateway /metrics", http_text(bad.url("/metrics")))
    finally:
        assert bad.terminate() == 0
    log = bad.log_file.read_text()
    assert '"level": "debug"' in log.lower()  # DEBUG really was on
    assert_no_secret("gateway log (wrong password)", log)
    # 2. the right (generated) password, connected at DEBUG: not in the log either
    good = GatewayProcess(park_file, mosquitto_secure.host, mosquitto_secure.port,
                          kafka.bootstrap, unique("gw"), tmp_path / "good.log",
                          env_extra={**debug, "PARKMON_MQTT_USERNAME": gw_cred.username,
                                     "PARKMON_MQTT_PASSWORD": gw_cred.password})
    good.start()
    try:
        health = http_text(good.url("/healthz"))
        metrics = http_text(good.url("/metrics"))
    finally:
        assert good.terminate() == 0
    for where, text in (("log", good.log_file.read_text()), ("/healthz", health),
                        ("/metrics", metrics)):
        assert gw_cred.password not in text, f"gateway {where} shows the MQTT password"
    # 3. a configuration error at start (exit 2, every problem printed)
    cp = subprocess.run([sys.executable, "-m", "apps.cli", "gateway", "--park", str(park_file)],
                        env=clean_env(PARKMON_MQTT_PASSWORD=MQTT_PASSWORD,
                                      PARKMON_MQTT_PORT="not-a-port",
                                      PARKMON_GATEWAY_LOG_LEVEL="DEBUG"),
                        capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert cp.returncode == 2
    assert_no_secret("gateway config error", cp.stdout + cp.stderr)


def test_alerts_service_never_shows_the_webhook_secret_or_influx_token(tmp_path, influx_bucket):
    park = tmp_path / "park.yaml"
    park.write_text(yaml.safe_dump(toy_park_data(), sort_keys=False))
    events = tmp_path / "events.jsonl"
    now = int(time.time() * 1000)
    events.write_bytes(DetectionEvent(kind=DetectionKind.SUPPLY_DROP, exchange_id="steam",
                                      ts_ms=now, start_ms=now - 20_000, magnitude=1.0).to_json()
                       + b"\n")
    dead_port, metrics_port, db = free_port(), free_port(), tmp_path / "alerts.sqlite"
    env = clean_env(
        PARKMON_LOG_LEVEL="DEBUG",
        PARKMON_ALERTS_ENDPOINTS=json.dumps([{"name": "ops", "timeout_s": 2,
                                              "url": f"http://127.0.0.1:{dead_port}/hook"}]),
        PARKMON_ALERTS_SECRET_OPS=f"{WEBHOOK_SECRET} {WEBHOOK_SECRET[:-4]}AAA=",
        PARKMON_ALERTS_ALLOW_LOOPBACK="1", PARKMON_ALERTS_GROUP_WAIT_MS="200",
        PARKMON_ALERTS_BACKOFF_INITIAL_MS="100", PARKMON_ALERTS_BACKOFF_MAX_MS="300",
        PARKMON_ALERTS_INFLUX="1", PARKMON_INFLUX_URL=influx_bucket.url,
        PARKMON_INFLUX_ORG=influx_bucket.org, PARKMON_INFLUX_BUCKET=influx_bucket.name,
        PARKMON_INFLUX_TOKEN=INFLUX_TOKEN)  # a token InfluxDB refuses: the annotation write fails
    log = tmp_path / "alerts.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "apps.cli", "alerts", "run", "--park",
                                 str(park), "--db", str(db), "--events-file", str(events),
                                 "--follow", "--metrics-port", str(metrics_port)],
                                env=env, stdout=fh, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        wait_for(lambda: _attempts(db) >= 3, 60, "three failed delivery attempts")
        metrics = http_text(f"http://127.0.0.1:{metrics_port}/metrics")
        assert "parkmon_alerts_delivery_attempts_total" in metrics
        assert_no_secret("alerts /metrics", metrics)
        status = subprocess.run([sys.executable, "-m", "apps.cli", "alerts", "status", "--db",
                                 str(db)], env=env, capture_output=True, text=True, cwd=tmp_path)
        assert_no_secret("alerts status", status.stdout + status.stderr)
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
    text = log.read_text()
    assert "DEBUG" in text and "annotation(s) failed" in text and "(401)" in text  # token refused
    assert_no_secret("alerts log", text)
    # a bad secret stops the start with a message naming the variable, not the value
    cp = subprocess.run([sys.executable, "-m", "apps.cli", "alerts", "run", "--park", str(park),
                         "--db", str(tmp_path / "x.sqlite"), "--events-file", str(events)],
                        env={**env, "PARKMON_ALERTS_SECRET_OPS": f"{WEBHOOK_SECRET} {BAD_WEBHOOK_SECRET}"},
                        capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert cp.returncode == 2 and "PARKMON_ALERTS_SECRET_OPS" in cp.stderr
    assert_no_secret("alerts config error", cp.stdout + cp.stderr)


def _attempts(db: Path) -> int:
    import sqlite3

    if not db.exists():
        return 0
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        row = con.execute("SELECT MAX(attempts) FROM outbox").fetchone()
        return int(row[0] or 0)
    except sqlite3.OperationalError:  # schema not created yet
        return 0
    finally:
        con.close()


def test_edge_mode_never_shows_its_secrets(tmp_path, mosquitto_secure, influx_bucket):
    dead_port = free_port()
    env: dict[str, Any] = {
        **clean_env(),
        "PARKMON_MQTT_HOST": mosquitto_secure.host, "PARKMON_MQTT_PORT": str(mosquitto_secure.port),
        "PARKMON_MQTT_USERNAME": "gateway", "PARKMON_MQTT_PASSWORD": MQTT_PASSWORD,
        "PARKMON_MQTT_CLIENT_ID": unique("edge-secret"),
        "PARKMON_INFLUX_URL": influx_bucket.url, "PARKMON_INFLUX_ORG": influx_bucket.org,
        "PARKMON_INFLUX_BUCKET": influx_bucket.name, "PARKMON_INFLUX_TOKEN": INFLUX_TOKEN,
        "PARKMON_EDGE_STATE_DIR": str(tmp_path / "state"), "PARKMON_EDGE_LOG_LEVEL": "DEBUG",
        "PARKMON_ALERTS_ENDPOINTS": json.dumps([{"name": "ops",
                                                 "url": f"http://127.0.0.1:{dead_port}/h"}]),
        "PARKMON_ALERTS_SECRET_OPS": WEBHOOK_SECRET, "PARKMON_ALERTS_ALLOW_LOOPBACK": "1",
    }
    edge = EdgeProcess(example_park_path("kalundborg"), env, tmp_path / "edge.log")
    edge.start()
    try:
        wait_for(lambda: "refused" in edge.log_tail(100_000).lower()
                 or "not authorized" in edge.log_tail(100_000).lower(), 60,
                 "the MQTT refusal in the edge log")
        health = json.dumps(edge.status())
        assert_no_secret("edge /healthz", health)
        assert_no_secret("edge /metrics", edge.metrics_text())
    finally:
        edge.terminate()
    text = edge.log_path.read_text()
    assert "debug" in text.lower()
    assert_no_secret("edge log", text)


def test_settings_reprs_hide_secrets():
    from parkmon.config import InfluxSettings, MqttSettings

    m = MqttSettings(password=MQTT_PASSWORD)  # type: ignore[arg-type]
    i = InfluxSettings(token=INFLUX_TOKEN)  # type: ignore[arg-type]
    for obj in (m, i):
        assert_no_secret("settings repr", repr(obj) + str(obj) + str(obj.model_dump())
                         + obj.model_dump_json())
    assert (REPO_ROOT / "pyproject.toml").exists()
