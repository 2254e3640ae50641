"""The shipped secure Mosquitto setup, for real: deploy/mosquitto/mosquitto-tls.conf (paths and
port substituted), an ACL written by `parkmon park acl` from the park file, a password file made
with mosquitto_passwd, and a CA + server certificate made by deploy/mosquitto/make-certs.sh, on a
private broker on a free loopback port.

* the gateway (over TLS, with its password) receives enterprise A's own readings, and a message A's
  device publishes on B's topic never reaches it;
* A's device cannot read B's topic (the subscription is refused);
* a wrong password and an anonymous client are refused; a plain-text client gets nothing from the
  TLS port; a client that does not trust the CA is refused;
* the simulator publishes over TLS with one user per enterprise.
"""

from __future__ import annotations

import getpass
import json
import secrets
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from parkmon.contracts import kafka_readings_topic, mqtt_topic
from parkmon.park import load_park
from parkmon.park.cli import main as park_cli
from tests.support.ingest import (
    REPO_ROOT,
    GatewayProcess,
    Publisher,
    free_port,
    park_yaml,
    read_topic,
    unique,
)

pytestmark = pytest.mark.integration

DEPLOY = REPO_ROOT / "deploy" / "mosquitto"


@dataclass
class SecureBroker:
    port: int
    ca: Path
    park_id: str
    park_file: Path
    enterprises: tuple[str, str]
    passwords: dict[str, str]
    log: Path


def wait_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"mosquitto exited: {log.read_text()}"
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"mosquitto not listening on {port}: {log.read_text()}")


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    tmp = tmp_path_factory.mktemp("secure-mqtt")
    suffix = unique("e").replace("-", "")[-8:]
    ents = (f"alpha{suffix}", f"beta{suffix}")
    park_id = unique("acl").replace("-", "_")
    park_file = tmp / "park.yaml"
    park_file.write_text(park_yaml(park_id, ents))
    # the ACL, from the park file, by the shipped command
    assert park_cli(["acl", str(park_file), "-o", str(tmp / "acl")]) == 0
    users = ["gateway", *(f"dev_{e}" for e in ents)]
    passwords = {u: secrets.token_urlsafe(18) for u in users}
    (tmp / "passwd").write_text("".join(f"{u}:{p}\n" for u, p in passwords.items()))
    subprocess.run(["mosquitto_passwd", "-U", str(tmp / "passwd")], check=True)
    # CA and server certificate, by the shipped script
    subprocess.run([str(DEPLOY / "make-certs.sh"), str(tmp / "certs"), "localhost", "127.0.0.1"],
                   check=True, capture_output=True)
    port = free_port()
    conf = (DEPLOY / "mosquitto-tls.conf").read_text()
    conf = (conf.replace("/mosquitto/config/certs/", f"{tmp}/certs/")
            .replace("/mosquitto/config/acl", str(tmp / "acl"))
            .replace("/mosquitto/data/", f"{tmp}/")
            .replace("listener 8883 0.0.0.0", f"listener {port} 127.0.0.1"))
    settings = [ln for ln in conf.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    assert not [ln for ln in settings if " /mosquitto/" in ln], "a container path was left"
    (tmp / "mosquitto.conf").write_text(f"user {getpass.getuser()}\n" + conf)
    log = tmp / "mosquitto.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(["mosquitto", "-c", str(tmp / "mosquitto.conf")], stdout=fh,
                                stderr=subprocess.STDOUT)
    try:
        wait_port(port, proc, log)
        yield SecureBroker(port, tmp / "certs" / "ca.crt", park_id, park_file, ents, passwords,
                           log)
    finally:
        proc.terminate()
        proc.wait(10)


def connect_rc(broker: SecureBroker, username: str | None, password: str | None,
               tls_ca: str | None = "", subscribe: str | None = None) -> tuple[Any, Any]:
    """(CONNACK reason, SUBACK reasons or None) of a fresh MQTT 5 client."""
    done, subscribed = threading.Event(), threading.Event()
    out: dict[str, Any] = {}
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=unique("probe"),
                    protocol=mqtt.MQTTv5)
    if username:
        c.username_pw_set(username, password)
    if tls_ca is not None:
        c.tls_set(ca_certs=tls_ca or str(broker.ca))

    def on_connect(client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        out["rc"] = rc
        done.set()
        if subscribe and not rc.is_failure:
            client.subscribe(subscribe, qos=1)

    def on_subscribe(client: Any, userdata: Any, mid: Any, rcs: Any, props: Any) -> None:
        out["sub"] = list(rcs)
        subscribed.set()

    c.on_connect, c.on_subscribe = on_connect, on_subscribe
    try:
        c.connect("127.0.0.1", broker.port, keepalive=10)
    except (ssl.SSLError, OSError) as exc:
        return exc, None
    c.loop_start()
    try:
        done.wait(10)
        if subscribe and out.get("rc") is not None and not out["rc"].is_failure:
            subscribed.wait(10)
    finally:
        c.disconnect()
        c.loop_stop()
    return out.get("rc"), out.get("sub")


def test_acl_file_grants_exactly_the_readings_topics(broker: SecureBroker):
    text = (broker.park_file.parent / "acl").read_text()
    acl = "\n".join(ln for ln in text.splitlines() if not ln.startswith("#"))
    a, b = broker.enterprises
    chunks = [blk.strip() for blk in acl.split("\n\n") if blk.strip()]
    blocks = {blk.splitlines()[0]: blk.splitlines()[1:] for blk in chunks}
    assert blocks == {
        "user gateway": [f"topic read parkmon/{broker.park_id}/+/readings"],
        f"user dev_{a}": [f"topic write parkmon/{broker.park_id}/{a}/readings"],
        f"user dev_{b}": [f"topic write parkmon/{broker.park_id}/{b}/readings"]}


def test_wrong_password_anonymous_plaintext_and_untrusted_ca_are_refused(broker: SecureBroker,
                                                                          tmp_path: Path):
    dev_a = f"dev_{broker.enterprises[0]}"
    rc, _ = connect_rc(broker, dev_a, broker.passwords[dev_a])
    assert rc is not None and not rc.is_failure, rc  # the control: right password over TLS
    rc, _ = connect_rc(broker, dev_a, "not-" + broker.passwords[dev_a])
    assert rc is not None and rc.is_failure and "authori" in str(rc).lower(), rc
    rc, _ = connect_rc(broker, None, None)
    assert rc is not None and rc.is_failure, rc
    # plain text on the TLS port: no CONNACK ever comes back
    rc, _ = connect_rc(broker, dev_a, broker.passwords[dev_a], tls_ca=None)
    assert rc is None or isinstance(rc, OSError), rc
    # a client trusting another CA: the handshake fails
    other = tmp_path / "other"
    subprocess.run([str(DEPLOY / "make-certs.sh"), str(other), "localhost", "127.0.0.1"],
                   check=True, capture_output=True)
    rc, _ = connect_rc(broker, dev_a, broker.passwords[dev_a], tls_ca=str(other / "ca.crt"))
    assert isinstance(rc, ssl.SSLError), rc


class Listener:
    """An MQTT 5 client over TLS that records what it receives; `roundtrip()` returns after a
    SUBACK, i.e. after every message the broker had queued for it was delivered before."""

    def __init__(self, broker: SecureBroker, user: str) -> None:
        self.got: list[str] = []
        self._suback = threading.Event()
        self.granted: list[Any] = []
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=unique("listen"),
                        protocol=mqtt.MQTTv5)
        c.username_pw_set(user, broker.passwords[user])
        c.tls_set(ca_certs=str(broker.ca))
        connected = threading.Event()
        c.on_connect = lambda cl, u, f, rc, p: connected.set()
        c.on_message = lambda cl, u, msg: self.got.append(msg.topic)
        c.on_subscribe = self._on_subscribe
        c.connect("127.0.0.1", broker.port)
        c.loop_start()
        assert connected.wait(10)
        self.client = c

    def _on_subscribe(self, client: Any, userdata: Any, mid: Any, rcs: Any, props: Any) -> None:
        self.granted = list(rcs)
        self._suback.set()

    def subscribe(self, topic: str) -> list[Any]:
        self._suback.clear()
        self.client.subscribe(topic, qos=1)
        assert self._suback.wait(10)
        return self.granted

    roundtrip = subscribe

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_device_cannot_read_another_enterprise(broker: SecureBroker):
    a, b = broker.enterprises
    spy = Listener(broker, f"dev_{a}")  # A's device tries to read everything of the park
    gateway = Listener(broker, "gateway")
    try:
        spy.subscribe(f"parkmon/{broker.park_id}/#")  # Mosquitto 2.0 grants, then filters
        gateway.subscribe(mqtt_topic(broker.park_id, b))
        dev_b = f"dev_{b}"
        pub = Publisher("127.0.0.1", broker.port, username=dev_b, password=broker.passwords[dev_b],
                        tls_ca=str(broker.ca))
        assert pub.wait_connected()
        pub.publish(mqtt_topic(broker.park_id, b), b'{"meter":"x"}')
        assert pub.wait_all(10)
        pub.close()
        deadline = time.monotonic() + 10
        while not gateway.got and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gateway.got == [mqtt_topic(broker.park_id, b)]  # the message was published
        # the broker fanned it out when it arrived; a SUBACK to the spy after that comes behind
        # anything queued for it
        spy.roundtrip(f"parkmon/{broker.park_id}/sentinel")
        assert spy.got == []
    finally:
        spy.close()
        gateway.close()


def test_gateway_over_tls_gets_own_readings_never_a_foreign_topic(broker: SecureBroker, kafka,
                                                                  tmp_path: Path):
    a, b = broker.enterprises
    gw = GatewayProcess(broker.park_file, "127.0.0.1", broker.port, kafka.bootstrap,
                        unique("gwtls"), tmp_path / "gw.log",
                        env_extra={"PARKMON_MQTT_TLS": "true", "PARKMON_MQTT_TLS_CA": str(broker.ca),
                                   "PARKMON_MQTT_USERNAME": "gateway",
                                   "PARKMON_MQTT_PASSWORD": broker.passwords["gateway"]})
    gw.start()
    try:
        dev_a = f"dev_{a}"
        pub = Publisher("127.0.0.1", broker.port, username=dev_a, password=broker.passwords[dev_a],
                        tls_ca=str(broker.ca))
        assert pub.wait_connected()
        t = time.time_ns() // 1_000_000
        foreign = json.dumps({"meter": f"{b}.water_in", "ts_ms": t, "value": 1.0,
                              "unit": "m3/h", "seq": 1}).encode()
        own = json.dumps({"meter": f"{a}.power_rate", "ts_ms": t, "value": 2.0, "unit": "MW",
                          "seq": 7}).encode()
        pub.publish(mqtt_topic(broker.park_id, b), foreign)  # B's topic: denied by the ACL
        pub.publish(mqtt_topic(broker.park_id, a), own)
        assert pub.wait_all(30)
        pub.close()
        # the broker forwards one client's messages in order: once the second has been
        # acknowledged by the gateway, the first would have arrived before it
        deadline = time.monotonic() + 30
        m: dict[str, float] = {}
        while time.monotonic() < deadline:
            m = gw.metrics()
            if m.get("parkmon_gateway_messages_acked_total", 0) >= 1:
                break
            time.sleep(0.1)
        assert m["parkmon_gateway_messages_received_total"] == 1
        readings = [json.loads(v) for _k, v in read_topic(kafka.bootstrap,
                                                          kafka_readings_topic(broker.park_id))]
        assert [(r["meter"], r["seq"]) for r in readings] == [(f"{a}.power_rate", 7)]
    finally:
        assert gw.terminate() == 0, gw.log_tail()


def test_simulator_publishes_over_tls_with_one_user_per_enterprise(broker: SecureBroker):
    from simulators.fleet import SimReading
    from simulators.publisher import MqttPublisher

    park = load_park(broker.park_file)
    got: list[str] = []
    ready = threading.Event()
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=unique("sub"),
                      protocol=mqtt.MQTTv5)
    sub.username_pw_set("gateway", broker.passwords["gateway"])
    sub.tls_set(ca_certs=str(broker.ca))
    sub.on_connect = lambda c, u, f, rc, p: c.subscribe(f"parkmon/{park.id}/+/readings", qos=1)
    sub.on_subscribe = lambda c, u, mid, rcs, p: ready.set()
    sub.on_message = lambda c, u, msg: got.append(msg.topic)
    sub.connect("127.0.0.1", broker.port)
    sub.loop_start()
    try:
        assert ready.wait(10)
        pub = MqttPublisher(park.id, "127.0.0.1", broker.port, qos=1, tls=True,
                            tls_ca=str(broker.ca),
                            credentials_for=lambda e: (f"dev_{e}", broker.passwords[f"dev_{e}"]))
        pub.connect()
        t = time.time_ns() // 1_000_000
        for i, e in enumerate(broker.enterprises):
            meter = next(m for m in park.meters if m.enterprise == e)
            pub.add(SimReading(meter.id, e, t, 1.0, meter.unit, seq=i, emit_ms=t))
        st = pub.close()
        assert st.acked == 2
        deadline = time.monotonic() + 10
        while len(got) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sorted(got) == sorted(mqtt_topic(park.id, e) for e in broker.enterprises)
    finally:
        sub.disconnect()
        sub.loop_stop()
