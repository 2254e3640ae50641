r"""`parkmon edge --park FILE`: the whole monitor in ONE process on live MQTT, writing to InfluxDB.

    Mosquitto --(QoS 1, fixed client id, persistent session, manual ack)--> queue
        --> EdgePipeline (validate, dedup, windows, KPIs, detectors, alerts)
        --> points buffer --checkpoint--> InfluxDB ; alerts --> durable outbox --> webhooks

Durability without Kafka is at-least-once plus idempotent results, through *checkpoints*. A
checkpoint, taken every `checkpoint_messages` unacknowledged messages, every
`checkpoint_interval_s`, when the stream pauses for `stall_s`, and at shutdown, does in order:

1. write every point produced since the previous checkpoint to InfluxDB, synchronously (a point's
   timestamp is its window start, so writing it again overwrites it);
2. persist the pipeline state (windows, indicators, dedup memory, counter baselines, pending
   window results, detector objects) to `<state_dir>/edge-state.sqlite` in one SQLite transaction
   (WAL, synchronous=FULL: atomic and durable); only the meters and indicator windows that changed
   since the previous checkpoint are rewritten;
3. acknowledge to the broker every MQTT message fed before the checkpoint.

After a crash (kill -9 included) the process restores the last checkpoint and the broker
redelivers every message that was not acknowledged, i.e. everything fed after that checkpoint
(and possibly some fed before it whose PUBACKs had not left yet: the checkpoint stores their
packet ids and digests, and such a redelivery, same id and content, is not fed again, only
acknowledged after the next checkpoint). Points written after the checkpoint are rewritten with
the same values. Alerts go through the AlertService, whose outbox remembers event ids, so a
replayed detection is not notified twice. After a connection loss (the process lives on), the
messages fed but not acknowledged on the lost connection come back the same way.
`checkpoint_seq` changes once a checkpoint is durable; a stop always takes a final one.

Event time: the watermark is the largest accepted `ts_ms` minus `watermark_lag_ms`; when no
reading has advanced it for `idle_after_s` (while subscribed, counted from the latest connection),
it moves on with the wall clock (times `idle_clock_rate`), so silent meters are noticed and the
last windows close without traffic. It never does while the input is disconnected.

Unacknowledged messages count against the broker's in-flight limit (Mosquitto
`max_inflight_messages`, 20 by default, 100 in the dev broker) and the client's Receive Maximum
(set to `checkpoint_messages`): the broker sends no more until some are acknowledged. So
`checkpoint_messages` must not exceed the broker's limit; if it does, the pause rule (`stall_s`)
still checkpoints, the service learns the limit (logged) and checkpoints at it, until more
unacknowledged messages than that arrive (then the pauses were the devices', not the broker's).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from apps.edge.checkpoint import (
    Checkpointing,
    CheckpointStats,
    CheckpointStore,
    detector_code_version,
)
from apps.edge.intake import IntakeLoop, Watermark, _Msg
from apps.edge.metrics import EdgeMetrics
from apps.edge.settings import EdgeSettings, wall_ms
from parkmon.config import GatewaySettings, InfluxSettings, MqttSettings
from parkmon.errors import ParkmonError
from streams.core.points import PointSpec

log = logging.getLogger("parkmon.edge")


# -- pieces --------------------------------------------------------------------------------------


# -- the service ---------------------------------------------------------------------------------
class EdgeService(IntakeLoop, Checkpointing):
    """The edge service: construction, MQTT callbacks, health, start/stop. The main loop is
    `IntakeLoop` (apps/edge/intake.py), checkpoints and restore are `Checkpointing`
    (apps/edge/checkpoint.py)."""

    def __init__(self, park: Any, settings: EdgeSettings | None = None, *,
                 mqtt_settings: MqttSettings | None = None,
                 influx: InfluxSettings | None = None,
                 point_writer: Any = None,
                 alert_service: Any = None,
                 now_ms: Callable[[], int] = wall_ms) -> None:
        """point_writer: object with write(points) (default: streams.influx_sink.InfluxSink on
        PARKMON_INFLUX_*). alert_service: an AlertService (default: built from PARKMON_ALERTS_*)."""
        from apps.edge.pipeline import EdgePipeline
        from ingest.validate import Limits

        self.park = park
        self.s = settings or EdgeSettings()
        self.mqtt_settings = mqtt_settings or MqttSettings()
        self.influx = influx or InfluxSettings()
        self.now_ms = now_ms
        self.store = CheckpointStore(self.s.state_dir)
        # outputs since the last checkpoint are the pipeline's own `windows` / `kpis` dicts (the
        # latest result per key); they become points once per checkpoint, not once per output
        self._retry_points: list[PointSpec] = []
        self._ledger_pending: list[Any] = []  # closed exchange windows for the ledger
        self.ledger = self._ledger() if self.s.ledger else None
        self.writer = point_writer if point_writer is not None else self._influx_writer()
        self.delivery: Any = None
        self.alerts = alert_service if alert_service is not None else self._alert_service()
        self.pipe = EdgePipeline(
            park, now_ms=now_ms, alerts=self.alerts,
            base_window_ms=self.s.base_window_ms, grace_ms=self.s.grace_ms,
            dedup_per_meter=self.s.dedup_per_meter,
            limits=Limits(max_payload_bytes=self.s.max_payload_bytes,
                          max_future_ms=self.s.max_future_ms, max_past_ms=self.s.max_past_ms,
                          counter_reset_fraction=self.s.counter_reset_fraction))
        self.wm = Watermark(self.s.watermark_lag_ms, int(self.s.idle_after_s * 1000),
                            self.s.idle_clock_rate, progress_wall_ms=now_ms())
        self.inbox: queue.Queue[_Msg] = queue.Queue()
        self.unacked: list[_Msg] = []
        # messages in the state whose acknowledgement may not have reached the broker: packet
        # id -> (connection generation, digest). The broker redelivers such a message on the
        # next connection with the same packet id (and reuses an id only once it is
        # acknowledged). `_unconfirmed`: acks that could not be sent (connection lost) and, after
        # a restart, those of the restored checkpoint; `_recent_acked`: the latest acks sent,
        # which a connection loss or kill -9 may still have swallowed (paho sends them from its
        # own thread). Persisted with each checkpoint.
        self._unconfirmed: dict[int, tuple[int, bytes]] = {}
        self._recent_acked: dict[int, tuple[int, bytes]] = {}
        self.redelivered_skipped = 0
        self._late_unlogged = 0
        self._late_logged_wall = 0
        self.cp = CheckpointStats()
        self.stop_event = threading.Event()
        self.draining = False
        self.stats_view: dict[str, Any] = {}
        self.metrics = EdgeMetrics(self)
        self.health: Any = None
        self._loop_alive_wall = now_ms()
        self._last_advance_wm: int | None = None
        self._last_tick_wall = 0
        self._last_msg_wall = now_ms()
        self._last_cp_wall = now_ms()
        self._changed = False
        self._was_subscribed = False
        self._sub_generation: int | None = None  # the connection the idle timer was held for
        self._store_broken = False
        self._influx_retry_at = 0
        self._detector_version = detector_code_version()
        from ingest.mqtt_in import MqttIn, subscription_topic

        gw = GatewaySettings().model_copy(update={
            "receive_maximum": max(1, self.s.checkpoint_messages),
            "keepalive_s": self.s.keepalive_s})
        self.mqtt = MqttIn(self.mqtt_settings, gw, subscription_topic(park.id, None),
                           self._on_message, self._on_connection)

    # -- construction helpers ---------------------------------------------------------------
    def _influx_writer(self) -> Any:
        from streams.influx_sink import InfluxSink

        token = self.influx.token.get_secret_value() if self.influx.token else ""
        return InfluxSink.connect(self.influx.url, token, self.influx.org, self.influx.bucket,
                                  max_total_s=self.s.influx_max_retry_s)

    def _ledger(self) -> Any:
        from apps.edge.settings import LEDGER_FILE
        from streams.ledger_store import LedgerStore, exchange_signers, load_keys

        return LedgerStore(self.store.dir / LEDGER_FILE, self.park.id,
                           signing_keys=load_keys(self.s.ledger_keys_dir, ".key"),
                           signers=exchange_signers(self.park))

    def _alert_service(self) -> Any:
        from alerts.cli import AlertsSettings, build_endpoints
        from alerts.delivery.outbox import Outbox
        from alerts.delivery.ssrf import SsrfPolicy
        from alerts.delivery.webhook import RetryPolicy
        from alerts.delivery.worker import DeliveryThread
        from alerts.lifecycle import LifecycleConfig
        from alerts.service import AlertService, AlertServiceConfig

        a = AlertsSettings()
        endpoints = build_endpoints(a)
        db = a.db if "db" in a.model_fields_set else str(self.store.dir / "alerts-outbox.sqlite")
        config = AlertServiceConfig(
            lifecycle=LifecycleConfig(group_wait_ms=a.group_wait_ms,
                                      group_interval_ms=a.group_interval_ms,
                                      repeat_interval_ms=a.repeat_interval_ms),
            retry=RetryPolicy(initial_backoff_ms=a.backoff_initial_ms,
                              max_backoff_ms=a.backoff_max_ms,
                              give_up_after_ms=a.give_up_after_ms))
        ssrf = SsrfPolicy(allow_loopback=a.allow_loopback, allow_private=a.allow_private,
                          allow_link_local=a.allow_link_local)
        annotations = None
        if self.s.influx_alerts:
            from alerts.influx_annotations import InfluxAnnotationWriter

            token = self.influx.token.get_secret_value() if self.influx.token else ""
            annotations = InfluxAnnotationWriter(self.influx.url, token, self.influx.org,
                                                 self.influx.bucket)
        service = AlertService.create(self.park, db, endpoints, now_ms=self.now_ms,
                                      config=config, ssrf=ssrf, annotations=annotations)
        if endpoints:
            self.delivery = DeliveryThread(lambda: service.make_worker(Outbox(db, self.now_ms)),
                                           self.now_ms)
        else:
            log.warning("no webhook endpoints (PARKMON_ALERTS_ENDPOINTS): notifications stay in "
                        "the outbox %s", db)
        return service

    # -- MQTT (paho's network thread) ---------------------------------------------------------
    def _on_message(self, topic: str, payload: bytes, mid: int, qos: int, generation: int) -> None:
        if self.draining:
            return  # not fed, not acknowledged: the broker redelivers it to the next session
        self.inbox.put(_Msg(topic, payload, mid, qos, generation))

    def _on_connection(self, up: bool) -> None:
        self.metrics.mqtt_connected.set(1 if up else 0)

    def _refresh_stats(self) -> None:
        c = self.pipe.counters
        self.stats_view = {"messages": c.messages, "readings": c.readings,
                           "accepted": c.accepted, "duplicates": c.duplicates,
                           "rejected": dict(c.rejected), "late_beyond_grace": c.late_beyond_grace,
                           "window_results": c.window_results, "kpi_results": c.kpi_results,
                           "detector_events": c.detector_events,
                           "notifications": c.notifications}

    def health_status(self) -> tuple[bool, dict[str, Any]]:
        now = self.now_ms()
        loop_ok = now - self._loop_alive_wall < 30_000
        influx_ok = self.cp.last_error is None
        ok = self._subscribed() and influx_ok and loop_ok and not self.draining
        return ok, {"park": self.park.id, "mqtt_connected": self.mqtt.connected,
                    "mqtt_subscribed": self.mqtt.subscribed.is_set(), "influx_ok": influx_ok,
                    "influx_error": self.cp.last_error, "loop_ok": loop_ok,
                    "draining": self.draining, "unacked": len(self.unacked),
                    "queue": self.inbox.qsize(), "watermark_ms": self.wm.value,
                    "max_ts_ms": self.pipe.max_ts_ms, "checkpoints": self.cp.count,
                    "checkpoint_seq": self.cp.seq, "restored_seq": self.cp.restored_seq,
                    "restored_detectors": self.cp.restored_detectors,
                    "learned_inflight": self.cp.learned_inflight,
                    "redelivered": self.redelivered_skipped,
                    "awaiting_redelivery": len(self._unconfirmed),
                    "mqtt_error": self.mqtt.last_error, **self.stats_view}

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        from ingest.metrics import HealthServer

        self.restore()
        if self.s.metrics_port >= 0:
            self.health = HealthServer(self.s.metrics_host, self.s.metrics_port,
                                       self.metrics.registry, self.health_status)
            self.health.start()
            log.info("metrics endpoint", extra={"event": "http", "host": self.s.metrics_host,
                                                "port": self.health.port})
        if self.delivery is not None:
            self.delivery.start()
        self.mqtt.start()
        log.info("edge started", extra={
            "event": "started", "park": self.park.id, "subscription": self.mqtt.subscription,
            "mqtt": f"{self.mqtt_settings.host}:{self.mqtt_settings.port}",
            "client_id": self.mqtt_settings.client_id, "influx": self.influx.url,
            "bucket": self.influx.bucket, "state": str(self.store.path)})

    def run(self) -> int:
        """Start, process until `stop_event`, then shut down cleanly. Returns an exit code."""
        self.start()
        try:
            while not self.stop_event.is_set():
                self.step(timeout_s=0.05)
        finally:
            code = self.shutdown()
        return code

    def shutdown(self) -> int:
        """Stop feeding, final checkpoint (points, state, acks), disconnect."""
        self.draining = True
        ok = True
        try:
            # always (even with nothing new): the restart continues from a checkpoint taken at
            # the stop, and health shows its sequence number
            ok = self.checkpoint("shutdown")
        finally:
            time.sleep(0.2)  # let paho's thread send the acknowledgements before DISCONNECT
            self.mqtt.stop()
            if self.delivery is not None:
                self.delivery.stop()
                self.delivery.join(timeout=10)
            if self.alerts is not None:
                self.alerts.close()
            if self.health is not None:
                self.health.stop()
            self.store.close()
            if self.ledger is not None:
                self.ledger.close()
        left = self.inbox.qsize()
        log.info("edge stopped", extra={"event": "stopped", "final_checkpoint": ok,
                                        "not_fed": left, "seq": self.cp.seq,
                                        "readings": self.pipe.counters.readings,
                                        "redelivered": self.redelivered_skipped})
        return 0 if ok else 1


# -- command line --------------------------------------------------------------------------------
def main(argv: list[str]) -> int:
    """`parkmon edge --park FILE`: see the module documentation and docs/edge-mode.md."""
    import argparse
    import signal
    import sys

    from pydantic import ValidationError

    from ingest.cli import setup_logging
    from parkmon.errors import ConfigError

    ap = argparse.ArgumentParser(
        prog="parkmon edge", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run the whole monitor in one process on live MQTT (QoS 1, persistent "
                    "session, manual ack), writing windows and indicators to InfluxDB and "
                    "delivering alerts to webhooks. Configuration: PARKMON_EDGE_*, "
                    "PARKMON_MQTT_*, PARKMON_INFLUX_*, PARKMON_ALERTS_* (docs/edge-mode.md). "
                    "Exit codes: 0 clean stop, 1 final checkpoint failed, 2 bad configuration.")
    ap.add_argument("--park", help="park file (YAML); default PARKMON_EDGE_PARK_FILE")
    ap.add_argument("--state-dir", help="checkpoint directory; default PARKMON_EDGE_STATE_DIR")
    ap.add_argument("--client-id", help="MQTT client id (names the persistent session); "
                    "default PARKMON_MQTT_CLIENT_ID or parkmon-edge-<park>")
    ap.add_argument("--metrics-port", type=int, help="port of /metrics and /healthz (0: any "
                    "free port, -1: off); default PARKMON_EDGE_METRICS_PORT or 9110")
    ap.add_argument("--log-level", help="DEBUG, INFO, WARNING (default INFO)")
    args = ap.parse_args(argv)
    try:
        s = EdgeSettings()
        mq = MqttSettings()
        influx = InfluxSettings()
    except ValidationError as exc:
        print(f"parkmon edge: bad setting in the environment:\n{exc}", file=sys.stderr)
        return 2
    over: dict[str, Any] = {}
    for opt, key in (("park", "park_file"), ("state_dir", "state_dir"),
                     ("metrics_port", "metrics_port"), ("log_level", "log_level")):
        if getattr(args, opt) is not None:
            over[key] = getattr(args, opt)
    s = s.model_copy(update=over)
    setup_logging(s.log_level)
    from parkmon.cliutil import load_park_or_explain

    park = load_park_or_explain("edge", s.park_file, "PARKMON_EDGE_PARK_FILE")
    if park is None:
        return 2
    if args.client_id:
        mq = mq.model_copy(update={"client_id": args.client_id})
    elif "client_id" not in mq.model_fields_set:
        mq = mq.model_copy(update={"client_id": f"parkmon-edge-{park.id}"})
    try:
        service = EdgeService(park, s, mqtt_settings=mq, influx=influx)
    except (ConfigError, ParkmonError) as exc:
        print(f"parkmon edge: {exc}", file=sys.stderr)
        return 2

    def _stop(signum: int, _frame: Any) -> None:
        log.info("signal received", extra={"event": "signal",
                                           "signal": signal.Signals(signum).name})
        service.stop_event.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        return service.run()
    except ParkmonError as exc:
        print(f"parkmon edge: {exc}", file=sys.stderr)
        return 2
