"""Apache Kafka 4.x, one node in KRaft mode (broker + controller), from its Maven Central jars.

``scripts/fetch-kafka.sh`` puts the jars in ``<cache>/kafka-<version>/libs``; the storage is
formatted once per data dir with ``kafka.tools.StorageTool format`` and a random cluster id; the
broker runs as ``java -cp 'libs/*' kafka.Kafka server.properties`` with the machine's Java 17.
Listeners: PLAINTEXT 127.0.0.1:19092 (clients), CONTROLLER 127.0.0.1:19093.
Health: a metadata request (confluent-kafka AdminClient.list_topics) lists this broker.
"""

from __future__ import annotations

import base64
import logging
import os
import shutil
import subprocess
import uuid
from pathlib import Path

from parkmon.devservices.base import (
    DevServiceError,
    ServiceHandle,
    cache_dir,
    file_lock,
    scripts_dir,
)

KAFKA_VERSION = os.environ.get("PARKMON_KAFKA_VERSION", "4.1.1")
PORT = 19092
CONTROLLER_PORT = 19093


def kafka_home(version: str = KAFKA_VERSION) -> Path:
    return cache_dir() / f"kafka-{version}"


def fetch_kafka(version: str = KAFKA_VERSION) -> Path:
    home = kafka_home(version)
    if (home / ".complete").exists():
        return home
    with file_lock(cache_dir() / f".fetch-kafka-{version}.lock"):  # one fetch at a time
        _fetch_locked(home, version)
    return home


def _fetch_locked(home: Path, version: str) -> None:
    if not (home / ".complete").exists():
        print(f"[devservices] fetching Kafka {version} jars from Maven Central ...", flush=True)
        env = dict(os.environ, KAFKA_VERSION=version, PARKMON_CACHE=str(cache_dir()))
        proc = subprocess.run(["bash", str(scripts_dir() / "fetch-kafka.sh")], env=env)
        if proc.returncode != 0 or not (home / ".complete").exists():
            raise DevServiceError(f"scripts/fetch-kafka.sh failed (exit {proc.returncode})")


def random_cluster_id() -> str:
    """Kafka's Uuid string form: url-safe base64 of 16 random bytes, no padding, never starting
    with '-' (like Kafka's own Uuid.randomUuid): `kafka-storage format --cluster-id -abc...`
    reads such an id as an option and fails ("expected one argument"), 1 start in 64."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


class Kafka(ServiceHandle):
    def __init__(self, data_dir: Path, port: int = PORT, host: str = "127.0.0.1",
                 controller_port: int | None = None, name: str = "kafka",
                 version: str = KAFKA_VERSION, heap: str = "768m") -> None:
        super().__init__(name=name, host=host, port=port, data_dir=data_dir, start_timeout_s=120)
        self.controller_port = controller_port if controller_port is not None else port + 1
        self.version = version
        self.heap = heap

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def bootstrap_servers(self) -> str:
        return self.bootstrap

    @property
    def config_file(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def log_dirs(self) -> Path:
        return self.data_dir / "kraft-logs"

    def install(self) -> None:
        fetch_kafka(self.version)
        if shutil.which("java") is None:
            raise DevServiceError("java not found: Kafka needs a Java 17+ runtime")

    def properties(self) -> dict[str, str]:
        return {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{self.host}:{self.controller_port}",
            "listeners": f"PLAINTEXT://{self.host}:{self.port},CONTROLLER://{self.host}:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{self.host}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.log_dirs),
            "num.partitions": "4",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "8",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "auto.create.topics.enable": "true",
            "delete.topic.enable": "true",
            "group.initial.rebalance.delay.ms": "0",
            "log.retention.hours": "24",
            "log.segment.bytes": str(64 * 1024 * 1024),
            "log.retention.check.interval.ms": "60000",
            "num.network.threads": "2",
            "num.io.threads": "4",
        }

    def java(self) -> str:
        java_home = os.environ.get("JAVA_HOME")
        if java_home and (Path(java_home) / "bin" / "java").exists():
            return str(Path(java_home) / "bin" / "java")
        return shutil.which("java") or "java"

    def _classpath(self) -> str:
        return str(kafka_home(self.version) / "libs" / "*")

    def _jvm_common(self) -> list[str]:
        home = kafka_home(self.version)
        return [
            self.java(),
            f"-Dlog4j2.configurationFile={home / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.data_dir}",
            "-Djava.awt.headless=true",
            "-cp",
            self._classpath(),
        ]

    def prepare(self) -> None:
        props = self.properties()
        self.config_file.write_text(
            "# written by parkmon.devservices.kafka\n"
            + "".join(f"{k}={v}\n" for k, v in props.items())
        )
        if (self.log_dirs / "meta.properties").exists():
            return
        cluster_id = random_cluster_id()
        cmd = self._jvm_common() + [
            "-Xmx256m",
            "kafka.tools.StorageTool",
            "format",
            f"--cluster-id={cluster_id}",
            "--config",
            str(self.config_file),
            "--ignore-formatted",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise DevServiceError(
                f"Kafka storage format failed (exit {proc.returncode}): {' '.join(cmd)}\n"
                f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
            )
        (self.data_dir / "cluster-id").write_text(cluster_id + "\n")

    def command(self) -> list[str]:
        return self._jvm_common()[:1] + [
            f"-Xms{self.heap}",
            f"-Xmx{self.heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError",
        ] + self._jvm_common()[1:] + ["kafka.Kafka", str(self.config_file)]

    def probe(self) -> bool:
        from confluent_kafka.admin import AdminClient

        quiet = logging.getLogger("parkmon.devservices.kafka.probe")
        quiet.addHandler(logging.NullHandler())
        quiet.propagate = False
        admin = AdminClient({"bootstrap.servers": self.bootstrap, "socket.timeout.ms": 2000,
                             "log_level": 0}, logger=quiet)
        meta = admin.list_topics(timeout=2)
        return any(b.port == self.port for b in meta.brokers.values())
