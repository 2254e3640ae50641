"""`parkmon alerts`: run the alert service, inspect or requeue its outbox.

    parkmon alerts run [--park FILE] [--db FILE] [--events-file FILE [--follow]] [--topic T]
    parkmon alerts status [--db FILE]
    parkmon alerts requeue-dead [--db FILE] [--endpoint NAME]
    parkmon alerts silence add --match exchange=steam --duration 2h [--comment TEXT]
    parkmon alerts silence expire ID | parkmon alerts silence list

Configuration comes from the environment (prefix PARKMON_ALERTS_, see docs/alerts.md):
    PARKMON_ALERTS_PARK=park.yaml   PARKMON_ALERTS_DB=/var/lib/parkmon/alerts.sqlite
    PARKMON_ALERTS_ENDPOINTS='[{"name":"ops","url":"https://ops.example/hooks/parkmon"},
                               {"name":"chat","url":"https://chat.example/am","format":"alertmanager"}]'
    PARKMON_ALERTS_SECRET_OPS=whsec_...       (per endpoint, from the environment only; during a
                                               rotation "whsec_new whsec_old": each one signs)
    PARKMON_ALERTS_ALLOW_LOOPBACK=1 / _ALLOW_PRIVATE=1 / _ALLOW_LINK_LOCAL=1   (SSRF guard opt-ins)
    PARKMON_ALERTS_INFLUX=1 (+ PARKMON_INFLUX_URL/ORG/BUCKET/TOKEN): alert annotations in InfluxDB

Events come from Kafka topic parkmon.<park>.alerts (offsets committed only after the event's
state change and notifications are durable in the outbox), or from a JSON-lines file.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from alerts.delivery.outbox import Outbox
from alerts.delivery.ssrf import SsrfPolicy, SsrfRefused
from alerts.delivery.webhook import Endpoint, PayloadFormat, RetryPolicy
from alerts.delivery.worker import DeliveryThread, DeliveryWorker
from alerts.lifecycle import LifecycleConfig, Silence
from alerts.service import AlertService, AlertServiceConfig, AnnotationSink
from parkmon.contracts import kafka_alerts_topic
from parkmon.errors import ConfigError, ParkFileError, ParkmonError, PayloadError

log = logging.getLogger("parkmon.alerts")


class EndpointSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    url: str
    format: PayloadFormat = PayloadFormat.PARKMON
    timeout_s: float = 10.0


class AlertsSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PARKMON_ALERTS_", frozen=True, extra="ignore")

    park: str | None = None
    db: str = "parkmon-alerts.sqlite"
    endpoints: list[EndpointSpec] = []
    allow_loopback: bool = False
    allow_private: bool = False
    allow_link_local: bool = False
    group_wait_ms: int = 10_000
    group_interval_ms: int = 60_000
    repeat_interval_ms: int = 4 * 3_600_000
    backoff_initial_ms: int = 1_000
    backoff_max_ms: int = 300_000
    give_up_after_ms: int = 7 * 24 * 3_600_000
    influx: bool = False
    kafka_group: str = "parkmon-alerts"


def alerts_deadletter_topic(park_id: str) -> str:
    """Rejected detection events (JSON envelope: reason, message, topic, payload, received_ms)."""
    return f"parkmon.{park_id}.alerts-deadletter"


def secret_env_name(endpoint_name: str) -> str:
    return "PARKMON_ALERTS_SECRET_" + re.sub(r"[^A-Za-z0-9]", "_", endpoint_name).upper()


def parse_secrets(value: str) -> list[str]:
    """The secrets of one PARKMON_ALERTS_SECRET_<NAME> value: one, or several separated by spaces
    or commas while a rotation is under way (every one signs each message)."""
    return [s for s in re.split(r"[\s,]+", value.strip()) if s]


def build_endpoints(settings: AlertsSettings, env: dict[str, str] | None = None) -> list[Endpoint]:
    env = dict(os.environ if env is None else env)
    out = []
    for spec in settings.endpoints:
        var = secret_env_name(spec.name)
        secrets = parse_secrets(env.get(var, ""))
        if not secrets:
            raise ConfigError(f"endpoint {spec.name!r}: set its signing secret in {var} "
                              "(a Standard Webhooks secret 'whsec_<base64>'; during a rotation "
                              "two, space-separated)")
        try:
            out.append(Endpoint(name=spec.name, url=spec.url, secret=SecretStr(secrets[0]),
                                extra_secrets=tuple(SecretStr(s) for s in secrets[1:]),
                                format=spec.format, timeout_s=spec.timeout_s))
        except ValidationError as exc:
            # e['msg'] only: pydantic's own str(exc) would print the input, i.e. the secret
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise ConfigError(f"endpoint {spec.name!r} ({var}): {problems}") from None
    return out


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# -- event sources ------------------------------------------------------------------------------

class FileSource:
    """JSON lines, one DetectionEvent per line; `follow` keeps reading appended lines."""

    def dead_letter(self, raw: bytes | str, reason: str, message: str) -> None:
        return None  # logged and counted by the loop; the file itself is the record

    def __init__(self, path: str, follow: bool) -> None:
        self.path = path
        self.follow = follow
        self._fh = open(path, encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._partial = ""
        self.exhausted = False

    def poll(self, timeout_s: float) -> list[str]:
        out: list[str] = []
        while True:
            line = self._fh.readline()
            if not line:
                break
            if not line.endswith("\n"):  # a writer is mid-line: wait for the rest
                self._partial += line
                break
            out.append(self._partial + line)
            self._partial = ""
        if not out:
            if not self.follow:
                self.exhausted = True
            else:
                time.sleep(timeout_s)
        return [line for line in out if line.strip()]

    def commit(self) -> None:
        return None

    def close(self) -> None:
        self._fh.close()


class KafkaSource:
    """Consumer of parkmon.<park>.alerts; offsets committed after the events are durable."""

    exhausted = False

    def __init__(self, bootstrap: str, topic: str, group: str, deadletter_topic: str) -> None:
        from confluent_kafka import Consumer

        self.topic = topic
        self._bootstrap = bootstrap
        self._deadletter_topic = deadletter_topic
        self._producer: Any = None
        self._consumer = Consumer({
            "bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
            "auto.offset.reset": "earliest", "client.id": f"{group}-{os.getpid()}",
        })
        self._consumer.subscribe([topic])
        self._dirty = False

    def poll(self, timeout_s: float) -> list[bytes]:
        msgs = self._consumer.consume(num_messages=500, timeout=timeout_s)
        out = []
        for m in msgs:
            if m.error():
                log.warning("kafka: %s", m.error())
                continue
            out.append(m.value())
            self._dirty = True
        return out

    def dead_letter(self, raw: bytes | str, reason: str, message: str) -> None:
        """Send a rejected event to the park's dead-letter topic with its reason (headers)."""
        if self._producer is None:
            from confluent_kafka import Producer

            self._producer = Producer({"bootstrap.servers": self._bootstrap, "acks": "all",
                                       "enable.idempotence": True})
        data = raw.encode() if isinstance(raw, str) else raw
        try:
            payload, encoding = data.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            payload, encoding = base64.b64encode(data).decode(), "base64"
        record = {"reason": reason, "message": message[:500], "source": "parkmon-alerts",
                  "topic": self.topic, "received_ms": now_ms(), "payload": payload,
                  "payload_encoding": encoding}
        self._producer.produce(self._deadletter_topic, value=json.dumps(record).encode(),
                               headers={"reason": reason})

    def commit(self) -> None:
        if self._producer is not None and self._producer.flush(30) != 0:
            raise ParkmonError("dead-letter records not acknowledged by Kafka; not committing")
        if self._dirty:
            self._consumer.commit(asynchronous=False)
            self._dirty = False

    def close(self) -> None:
        self._consumer.close()
        if self._producer is not None:
            self._producer.flush(10)


# -- commands -----------------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="parkmon alerts", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd")
    run = sub.add_parser("run", help="run the alert service")
    run.add_argument("--park", help="park file (default: PARKMON_ALERTS_PARK)")
    run.add_argument("--db", help="outbox database (default: PARKMON_ALERTS_DB)")
    run.add_argument("--events-file", help="read events from a JSON-lines file instead of Kafka")
    run.add_argument("--follow", action="store_true", help="keep reading the events file")
    run.add_argument("--topic", help="Kafka topic (default parkmon.<park>.alerts)")
    run.add_argument("--metrics-port", type=int,
                     help="serve Prometheus metrics on HOST:PORT/metrics (HOST: --metrics-host)")
    run.add_argument("--metrics-host", default="127.0.0.1",
                     help="address of the metrics endpoint (default 127.0.0.1; 0.0.0.0 in a "
                          "container scraped by Prometheus)")
    run.add_argument("--exit-when-idle", action="store_true",
                     help="with a non-followed file: exit once everything is delivered or dead")
    st = sub.add_parser("status", help="print outbox counts and dead deliveries as JSON")
    st.add_argument("--db")
    si = sub.add_parser("silence", help="add, expire or list silences of the running service")
    sis = si.add_subparsers(dest="silence_cmd", required=True)
    sa = sis.add_parser("add", help="hide firing alerts whose labels match, for a while")
    sa.add_argument("--db")
    sa.add_argument("--match", action="append", required=True, metavar="LABEL=VALUE",
                    help="e.g. exchange=steam, supplier=asnaes, meter=novo.steam_in (repeatable)")
    sa.add_argument("--duration", required=True, help="e.g. 90m, 2h, 1d")
    sa.add_argument("--comment", default="")
    sa.add_argument("--by", default=os.environ.get("USER", ""))
    se = sis.add_parser("expire", help="end a silence now")
    se.add_argument("--db")
    se.add_argument("id")
    sl = sis.add_parser("list", help="silences in force or queued (JSON)")
    sl.add_argument("--db")
    rq = sub.add_parser("requeue-dead", help="retry dead deliveries (after fixing the receiver)")
    rq.add_argument("--db")
    rq.add_argument("--endpoint")
    return p


def main(argv: list[str]) -> int:
    argv = list(argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        argv.insert(0, "run")  # `parkmon alerts [options]` runs the service
    args = _parser().parse_args(argv)
    logging.basicConfig(level=os.environ.get("PARKMON_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        settings = AlertsSettings()
        db = (getattr(args, "db", None) or settings.db)
        if args.cmd == "status":
            return _status(db)
        if args.cmd == "silence":
            return _silence(args, db)
        if args.cmd == "requeue-dead":
            n = Outbox(db, now_ms).requeue_dead(args.endpoint)
            print(f"requeued {n} dead deliveries")
            return 0
        if args.cmd != "run":
            _parser().print_help()
            return 2
        return _run(args, settings, db)
    except (ConfigError, ParkFileError) as exc:
        print(f"parkmon alerts: {exc}", file=sys.stderr)
        return 2
    except ValidationError as exc:
        print(f"parkmon alerts: bad PARKMON_ALERTS_* setting:\n{exc}", file=sys.stderr)
        return 2


def parse_duration_ms(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)\s*", text)
    if m is None:
        raise ConfigError(f"duration {text!r}: expected a number with s, m, h or d, e.g. '2h'")
    return int(float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)] * 1000)


def _silence(args: argparse.Namespace, db: str) -> int:
    import uuid

    box = Outbox(db, now_ms)
    if args.silence_cmd == "add":
        matchers: dict[str, str] = {}
        for item in args.match:
            key, sep, value = item.partition("=")
            if not sep or not key or not value:
                raise ConfigError(f"--match {item!r}: expected LABEL=VALUE, e.g. exchange=steam")
            matchers[key.strip()] = value.strip()
        start = now_ms()
        sil = Silence(id="sil_" + uuid.uuid4().hex[:12], matchers=matchers, starts_at_ms=start,
                      ends_at_ms=start + parse_duration_ms(args.duration), comment=args.comment,
                      created_by=args.by)
        box.add_command("silence.add", sil.to_dict())
        print(sil.id)
        return 0
    if args.silence_cmd == "expire":
        box.add_command("silence.expire", {"id": args.id})
        print(f"silence {args.id} will expire")
        return 0
    state = box.load_state() or {}
    now = now_ms()
    active = [d for d in state.get("silences", []) if d["ends_at_ms"] > now]
    queued = [{"kind": k, **p} for _, k, p in box.commands()]
    print(json.dumps({"silences": active, "queued": queued}, indent=2))
    return 0


def _status(db: str) -> int:
    if not Path(db).exists():
        print(f"parkmon alerts: no outbox database at {db}", file=sys.stderr)
        return 2
    box = Outbox(db, now_ms)
    dead = [{"endpoint": m.endpoint, "webhook_id": m.webhook_id, "notification": m.notification_key,
             "status": m.last_status, "error": m.last_error, "attempts": m.attempts}
            for m in box.dead()]
    print(json.dumps({"counts": box.counts(), "dead": dead}, indent=2))
    return 0


def _run(args: argparse.Namespace, settings: AlertsSettings, db: str) -> int:
    from parkmon.config import InfluxSettings, KafkaSettings
    from parkmon.park import load_park

    park_path = args.park or settings.park
    if not park_path:
        raise ConfigError("no park file: pass --park FILE or set PARKMON_ALERTS_PARK")
    park = load_park(park_path)
    endpoints = build_endpoints(settings)
    if not endpoints:
        log.warning("no endpoints configured (PARKMON_ALERTS_ENDPOINTS): notifications are kept "
                    "in the outbox only")
    config = AlertServiceConfig(
        lifecycle=LifecycleConfig(group_wait_ms=settings.group_wait_ms,
                                  group_interval_ms=settings.group_interval_ms,
                                  repeat_interval_ms=settings.repeat_interval_ms),
        retry=RetryPolicy(initial_backoff_ms=settings.backoff_initial_ms,
                          max_backoff_ms=settings.backoff_max_ms,
                          give_up_after_ms=settings.give_up_after_ms))
    ssrf = SsrfPolicy(allow_loopback=settings.allow_loopback, allow_private=settings.allow_private,
                      allow_link_local=settings.allow_link_local)
    for ep in endpoints:  # refuse a bad target at start-up too (it is re-checked on every request)
        try:
            ssrf.check(ep.url)
        except SsrfRefused as exc:
            if exc.reason != "unresolvable":  # DNS may be down now; it is re-checked per request
                raise ConfigError(f"endpoint {ep.name!r}: {exc}") from None
            log.warning("endpoint %s: %s (will retry)", ep.name, exc)
    annotations: AnnotationSink | None = None
    if settings.influx:
        from alerts.influx_annotations import InfluxAnnotationWriter

        inf = InfluxSettings()
        annotations = InfluxAnnotationWriter(inf.url, inf.token.get_secret_value() if inf.token
                                             else "", inf.org, inf.bucket)
    service = AlertService.create(park, db, endpoints, now_ms=now_ms, config=config, ssrf=ssrf,
                                  annotations=annotations)
    source: FileSource | KafkaSource
    if args.events_file:
        source = FileSource(args.events_file, args.follow)
        where = f"file {args.events_file}"
    else:
        topic = args.topic or kafka_alerts_topic(park.id)
        source = KafkaSource(KafkaSettings().bootstrap, topic, settings.kafka_group,
                             alerts_deadletter_topic(park.id))
        where = f"kafka topic {topic}"
    from alerts.metrics import AlertMetrics

    metrics = AlertMetrics(service.counters, lambda: Outbox(db, now_ms))
    if args.metrics_port is not None:
        metrics.serve(args.metrics_port, host=args.metrics_host)

    def make_worker() -> DeliveryWorker:
        worker = service.make_worker(Outbox(db, now_ms))
        worker.on_result = metrics.on_result
        return worker

    delivery = DeliveryThread(make_worker, now_ms)
    delivery.start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    log.info("parkmon alerts: park %s, %d endpoint(s) [%s], outbox %s, events from %s", park.id,
             len(endpoints), ", ".join(e.name for e in endpoints), db, where)
    try:
        _loop(service, source, delivery, stop, args.exit_when_idle)
    finally:
        delivery.stop()
        delivery.join(timeout=10)
        source.close()
        service.close()
    c = service.counters
    log.info("stopped: %d events (%d duplicates, %d rejected), %d notifications", c.events,
             c.duplicates, c.rejected, c.notifications)
    return 0


def _loop(service: AlertService, source: FileSource | KafkaSource, delivery: DeliveryThread,
          stop: threading.Event, exit_when_idle: bool) -> None:
    while not stop.is_set():
        service.apply_commands()
        for raw in source.poll(0.2):
            try:
                notes = service.handle(raw)
            except PayloadError as exc:
                service.counters.rejected += 1
                log.warning("rejected detection event (%s): %s", exc.reason, exc.message)
                source.dead_letter(raw, exc.reason, exc.message)
                continue
            if notes:
                delivery.wake()
        source.commit()
        if service.tick():
            delivery.wake()
        if exit_when_idle and source.exhausted and not service.lifecycle.has_unsent_changes() \
                and service.outbox.counts()["pending"] == 0:
            return
        if source.exhausted:
            time.sleep(0.2)
