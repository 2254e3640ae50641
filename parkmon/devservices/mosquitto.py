"""Mosquitto (Debian package) on loopback: a plain instance and a "secure" one.

plain  (127.0.0.1:18830): anonymous access, persistence on (autosave every second), deep queues.
secure (127.0.0.1:18831): no anonymous access; password file made with ``mosquitto_passwd``; ACL:
  * ``gateway`` reads ``parkmon/<park>/#`` for every registered park,
  * ``dev_<enterprise>`` may publish only to ``parkmon/<park>/<enterprise>/#``.
Passwords are generated at first use, kept in ``credentials.json`` (mode 0600) in the data dir (never
in the repository) and handed to tests through the handle. Parks and devices are registered at run
time (:meth:`MosquittoSecure.device`, :meth:`MosquittoSecure.gateway`); the broker reloads the
password and ACL files on SIGHUP, so a running broker picks new users up without a restart.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from parkmon.devservices.base import (
    DevServiceError,
    ServiceHandle,
    file_lock,
    run_checked,
)

PLAIN_PORT = 18830
SECURE_PORT = 18831
DEFAULT_PARK = "testpark"
_ID = re.compile(r"^[A-Za-z0-9_.-]+$")


def install_mosquitto() -> None:
    """``apt-get install -y mosquitto mosquitto-clients`` when the broker is missing."""
    if shutil.which("mosquitto") or Path("/usr/sbin/mosquitto").exists():
        return
    if os.geteuid() != 0:
        raise DevServiceError(
            "mosquitto is not installed and this is not root: run `apt-get install -y mosquitto`"
        )
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", "mosquitto", "mosquitto-clients"]
    if subprocess.run(cmd, env=env, capture_output=True).returncode != 0:
        run_checked(["apt-get", "update"], "apt-get update", env=env)
        run_checked(cmd, "apt-get install mosquitto", env=env)


def mosquitto_binary() -> str:
    return shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def mqtt_connack(host: str, port: int, timeout_s: float = 2.0,
                 username: str | None = None, password: str | None = None) -> int:
    """Send a bare MQTT 3.1.1 CONNECT and return the CONNACK return code (0 = accepted).
    Raises OSError when nothing MQTT answers."""

    def utf8(s: str) -> bytes:
        b = s.encode()
        return len(b).to_bytes(2, "big") + b

    flags = 0x02  # clean session
    payload = utf8(f"parkmon-health-{os.getpid()}-{secrets.token_hex(3)}")
    if username is not None:
        flags |= 0x80
        payload += utf8(username)
        if password is not None:
            flags |= 0x40
            payload += utf8(password)
    var = utf8("MQTT") + bytes([4, flags]) + (10).to_bytes(2, "big")
    body = var + payload
    packet = bytes([0x10, len(body)]) + body  # len < 128 for these short fields
    with socket.create_connection((host, port), timeout=timeout_s) as s:
        s.sendall(packet)
        data = b""
        while len(data) < 4:
            chunk = s.recv(4 - len(data))
            if not chunk:
                raise OSError("connection closed before CONNACK")
            data += chunk
        if data[0] != 0x20:
            raise OSError(f"not a CONNACK: {data!r}")
        with_disconnect = bytes([0xE0, 0])
        try:
            s.sendall(with_disconnect)
        except OSError:
            pass
        return data[3]


@dataclass
class Credentials:
    username: str
    password: str


class Mosquitto(ServiceHandle):
    """Plain broker: anonymous, persistent."""

    def __init__(self, data_dir: Path, port: int = PLAIN_PORT, host: str = "127.0.0.1",
                 name: str = "mosquitto") -> None:
        super().__init__(name=name, host=host, port=port, data_dir=data_dir, start_timeout_s=30)

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def config_file(self) -> Path:
        return self.data_dir / "mosquitto.conf"

    def install(self) -> None:
        install_mosquitto()

    def base_config(self) -> list[str]:
        user = getpass.getuser()
        persist = self.data_dir / "persist"
        persist.mkdir(exist_ok=True)
        return [
            "# written by parkmon.devservices.mosquitto; regenerated on every start",
            f"user {user}",
            "per_listener_settings false",
            f"listener {self.port} {self.host}",
            "protocol mqtt",
            "persistence true",
            f"persistence_location {persist}/",
            "persistence_file mosquitto.db",
            "autosave_interval 1",
            "autosave_on_changes false",
            "persistent_client_expiration 2d",
            "max_queued_messages 1000000",
            "max_queued_bytes 0",
            "max_inflight_messages 100",
            "max_packet_size 1048576",
            "max_keepalive 600",
            "set_tcp_nodelay true",
            "log_dest stdout",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
        ]

    def auth_config(self) -> list[str]:
        return ["allow_anonymous true"]

    def prepare(self) -> None:
        lines = self.base_config() + self.auth_config()
        self.config_file.write_text("\n".join(lines) + "\n")

    def command(self) -> list[str]:
        return [mosquitto_binary(), "-c", str(self.config_file)]

    def probe(self) -> bool:
        mqtt_connack(self.host, self.port)  # any CONNACK: the broker is up
        return True


class MosquittoSecure(Mosquitto):
    """Broker with a password file and ACLs; see the module docstring."""

    def __init__(self, data_dir: Path, port: int = SECURE_PORT, host: str = "127.0.0.1",
                 name: str = "mosquitto-secure") -> None:
        super().__init__(data_dir=data_dir, port=port, host=host, name=name)

    @property
    def password_file(self) -> Path:
        return self.data_dir / "passwd"

    @property
    def acl_file(self) -> Path:
        return self.data_dir / "acl"

    @property
    def state_file(self) -> Path:
        return self.data_dir / "credentials.json"

    @property
    def acl_lock(self) -> Path:
        return self.data_dir / ".acl.lock"

    def auth_config(self) -> list[str]:
        return [
            "allow_anonymous false",
            f"password_file {self.password_file}",
            f"acl_file {self.acl_file}",
        ]

    # state: {"parks": [...], "users": {name: password}, "devices": {name: [park, enterprise]}}
    def _load_state(self) -> dict:
        try:
            state = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            state = {}
        state.setdefault("parks", [])
        state.setdefault("users", {})
        state.setdefault("devices", {})
        return state

    def _save_state(self, state: dict) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
        os.chmod(tmp, 0o600)
        tmp.replace(self.state_file)

    def _write_auth_files(self, state: dict) -> None:
        acl = ["# written by parkmon.devservices.mosquitto", "user gateway"]
        for park in sorted(state["parks"]):
            acl.append(f"topic read parkmon/{park}/#")
        for user, (park, enterprise) in sorted(state["devices"].items()):
            acl += ["", f"user {user}", f"topic write parkmon/{park}/{enterprise}/#"]
        self.acl_file.write_text("\n".join(acl) + "\n")
        tmp = self.data_dir / "passwd.tmp"
        tmp.write_text("".join(f"{u}:{p}\n" for u, p in sorted(state["users"].items())))
        os.chmod(tmp, 0o600)
        run_checked(["mosquitto_passwd", "-U", str(tmp)], "mosquitto_passwd -U")
        tmp.replace(self.password_file)
        os.chmod(self.acl_file, 0o600)

    def _register(self, park: str, device: tuple[str, str] | None) -> None:
        if not _ID.match(park) or (device and not _ID.match(device[1])):
            raise DevServiceError(f"park / enterprise ids must match {_ID.pattern}")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with file_lock(self.acl_lock):
            state = self._load_state()
            changed = False
            if "gateway" not in state["users"]:
                state["users"]["gateway"] = secrets.token_urlsafe(18)
                changed = True
            if park not in state["parks"]:
                state["parks"].append(park)
                changed = True
            if device is not None:
                user = f"dev_{device[1]}"
                if user not in state["users"]:
                    state["users"][user] = secrets.token_urlsafe(18)
                    changed = True
                if state["devices"].get(user) != [park, device[1]]:
                    if user in state["devices"]:
                        raise DevServiceError(
                            f"{user} is already bound to park {state['devices'][user][0]}"
                        )
                    state["devices"][user] = [park, device[1]]
                    changed = True
            if changed or not self.password_file.exists():
                self._save_state(state)
                self._write_auth_files(state)
                self._reload()

    def _reload(self) -> None:
        pid = self.recorded_pid()
        if pid is not None:
            os.kill(pid, signal.SIGHUP)
            time.sleep(0.3)  # mosquitto reloads in its main loop

    def prepare(self) -> None:
        self._register(DEFAULT_PARK, None)
        super().prepare()

    def gateway(self, park: str = DEFAULT_PARK) -> Credentials:
        """Credentials of the ``gateway`` user, allowed to read ``parkmon/<park>/#``."""
        self._register(park, None)
        return Credentials("gateway", self._load_state()["users"]["gateway"])

    def device(self, enterprise: str, park: str = DEFAULT_PARK) -> Credentials:
        """Credentials of ``dev_<enterprise>``, allowed to publish ``parkmon/<park>/<enterprise>/#``."""
        self._register(park, ("dev", enterprise))
        user = f"dev_{enterprise}"
        return Credentials(user, self._load_state()["users"][user])
