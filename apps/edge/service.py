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

from apps.edge.checkpoint import (  # noqa: F401
    CheckpointParts,
    CheckpointStats,
    CheckpointStore,
    detector_code_version,
)
from apps.edge.intake import TrackingDeduplicator, Watermark, _Acking, _Msg, message_digest  # noqa: F401
from apps.edge.metrics import EdgeMetrics, _PipelineCollector  # noqa: F401
from apps.edge.settings import CHECKPOINT_FILE, CHECKPOINT_FORMAT, EdgeSettings, wall_ms  # noqa: F401
from apps.edge.sinks import BufferSink  # noqa: F401
from parkmon import state
from parkmon.config import GatewaySettings, InfluxSettings, MqttSettings
from parkmon.errors import ParkmonError
from streams.core.points import PointSpec

log = logging.getLogger("parkmon.edge")


# -- pieces --------------------------------------------------------------------------------------


# -- the service ---------------------------------------------------------------------------------
class EdgeService:
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

    # -- checkpoints ---------------------------------------------------------------------------
    def restore(self) -> bool:
        doc = self.store.load()
        if doc is None:
            log.info("no checkpoint: starting empty", extra={"event": "fresh_start",
                                                             "path": str(self.store.path)})
            self._track_dedup({})
            return False
        if doc.get("park") != self.park.id:
            raise ParkmonError(f"{self.store.path} is the checkpoint of park {doc.get('park')!r}, "
                               f"not {self.park.id!r}; use another PARKMON_EDGE_STATE_DIR")
        pipeline = dict(doc["pipeline"])
        pipeline["engine"] = {
            "windows": {**doc["windows_meta"], "meters": doc["meters"]},
            "kpis": {"meta": doc["kpis_meta"],
                     "windows": {str(w): d for w, d in doc["kpi_windows"].items()}}}
        pipeline["dedup"] = doc["dedup"]
        self.pipe.restore(pipeline)
        self._track_dedup(doc["dedup"])
        restored_detectors = False
        if doc.get("detector_version") == self._detector_version and doc.get("monitor"):
            try:
                self.pipe.monitor = state.loads(doc["monitor"], "park-monitor",
                                               f"{self.store.path} (detectors)")
                restored_detectors = True
            except Exception as exc:  # noqa: BLE001 - fall back to re-learning
                log.warning("detector state not restored (%s): detectors re-learn", exc)
        else:
            log.warning("detector code changed since the checkpoint: detectors re-learn",
                        extra={"event": "detectors_reset"})
        self.wm.value = doc.get("watermark_ms")
        self.wm.event_max_ms = self.pipe.max_ts_ms
        self.wm.hold(self.now_ms())
        # generation 0: older than any connection of this process
        self._unconfirmed = {int(mid): (0, bytes(dig))
                             for mid, dig in doc.get("in_state_unacked", [])}
        self._last_advance_wm = doc.get("last_advance_wm")
        self.cp.seq = self.cp.restored_seq = int(doc["seq"])
        self.cp.restored_detectors = restored_detectors
        self._refresh_stats()
        log.info("checkpoint restored", extra={
            "event": "restored", "seq": self.cp.seq, "written_ms": doc.get("written_ms"),
            "watermark_ms": self.wm.value, "detectors": restored_detectors,
            "readings": self.pipe.counters.readings})
        return True

    def _track_dedup(self, snap: dict[str, list[int]]) -> None:
        self.pipe.dedup = TrackingDeduplicator.from_snapshot(snap, self.s.dedup_per_meter)

    def _parts(self, seq: int, acking: list[_Acking]) -> CheckpointParts:
        """The checkpoint's content: small state whole, large state where it changed."""
        pipe = self.pipe
        eng = pipe.engine
        dedup = pipe.dedup
        small = pipe.snapshot_small()
        meta = {"format": CHECKPOINT_FORMAT, "park": self.park.id, "seq": seq,
                "written_ms": self.now_ms(), "pipeline": small,
                "windows_meta": eng.windows.meta_state(), "kpis_meta": eng.kpis.meta_state(),
                "monitor": state.dumps(pipe.monitor, "park-monitor"),
                "detector_version": self._detector_version, "watermark_ms": self.wm.value,
                "last_advance_wm": self._last_advance_wm,
                # what this checkpoint acknowledges next (and what may not be acknowledged yet):
                # after a kill -9 the broker may redeliver any of it, already in this state
                "in_state_unacked": [
                    (mid, dig) for mid, (_gen, dig) in
                    {**self._unconfirmed, **self._recent_acked,
                     **{a.mid: (a.generation, a.digest) for a in acking}}.items()]}
        meters = {m: eng.windows.meter_state(m) for m in eng.windows.take_dirty()}
        dd = dedup.take_dirty() if isinstance(dedup, TrackingDeduplicator) else set()
        kpi_dirty = eng.kpis.take_dirty()
        kpi_windows = {w: st for w in kpi_dirty if (st := eng.kpis.window_state(w)) is not None}
        gone = self.store.kpi_windows_stored - set(eng.kpis.base)
        keys = {m: dedup.keys_of(m) for m in dd} if isinstance(dedup, TrackingDeduplicator) \
            else {}
        return CheckpointParts(meta, {m: v for m, v in meters.items() if v is not None}, keys,
                               kpi_windows, gone)

    def checkpoint(self, reason: str) -> bool:
        """Points to InfluxDB, then state to disk, then MQTT acks. False if InfluxDB failed."""
        from parkmon.errors import SinkBackpressure, SinkError

        if self._store_broken:
            return False
        t0 = time.perf_counter()
        points = self._take_points()
        try:
            self.writer.write(points)
        except (SinkError, SinkBackpressure) as exc:
            self._retry_points = points
            self.cp.influx_failures += 1
            self.cp.last_error = str(exc)
            self.metrics.influx_failures.inc()
            self._influx_retry_at = self.now_ms() + 5_000
            log.error("checkpoint postponed: InfluxDB write failed", extra={
                "event": "influx_failed", "error": str(exc), "points": len(points),
                "unacked": len(self.unacked)})
            return False
        self.cp.last_error = None
        seq = self.cp.seq + 1
        acking = [_Acking(m.mid, m.generation, message_digest(m.topic, m.payload))
                  for m in self.unacked if m.qos and not m.superseded]
        try:
            size = self.store.save(self._parts(seq, acking))
        except BaseException:
            # the changed-rows bookkeeping is gone with this checkpoint: never write another one
            # (nothing more is acknowledged; the next start restores the last good checkpoint)
            self._store_broken = True
            self.stop_event.set()
            raise
        # durable from here on: health and metrics report it only now
        self.cp.seq = seq
        acked = 0
        recent = self._recent_acked
        digest = {a.mid: a.digest for a in acking}
        for msg in self.unacked:
            if msg.superseded:
                continue
            if self.mqtt.ack(msg.mid, msg.qos, msg.generation):
                acked += 1
                if msg.qos:
                    recent.pop(msg.mid, None)
                    recent[msg.mid] = (msg.generation, digest[msg.mid])
            elif msg.qos:
                # connection lost (or a newer one): the broker redelivers it with this packet id
                self._unconfirmed[msg.mid] = (msg.generation, digest[msg.mid])
        for mid in list(recent)[:max(0, len(recent) - 2 * self.s.checkpoint_messages)]:
            del recent[mid]  # bounded: only the latest acks can still be in flight
        self.unacked = []
        # keep memory bounded (windows / kpis were taken with the points)
        self.pipe.events.clear()
        self.pipe.notifications.clear()
        self._changed = False
        self._last_cp_wall = self.now_ms()
        c = self.cp
        c.count += 1
        c.last_wall_ms = self._last_cp_wall
        c.last_bytes = size
        c.points_written += len(points)
        c.messages_acked += acked
        m = self.metrics
        m.checkpoints.inc()
        m.points_written.inc(len(points))
        m.messages_acked.inc(acked)
        m.unacked.set(0)
        m.checkpoint_seconds.observe(time.perf_counter() - t0)
        log.debug("checkpoint", extra={"event": "checkpoint", "seq": c.seq, "reason": reason,
                                       "points": len(points), "acked": acked, "bytes": size})
        return True

    def _take_points(self) -> list[PointSpec]:
        """Points of every window and indicator result since the last checkpoint (the latest
        per key), plus those of a failed write (newer results of the same series win)."""
        from streams.core.points import to_points

        pipe = self.pipe
        outs: list[Any] = [*pipe.windows.values(), *pipe.kpis.values()]
        pipe.windows.clear()
        pipe.kpis.clear()
        points = to_points(self.park.id, outs)
        if self._retry_points:
            merged = {p.series_key: p for p in self._retry_points}
            merged.update((p.series_key, p) for p in points)
            points = list(merged.values())
            self._retry_points = []
        return points

    def _checkpoint_limit(self) -> int:
        lim = self.s.checkpoint_messages
        if self.cp.learned_inflight is not None:
            lim = min(lim, self.cp.learned_inflight)
        return max(1, lim)

    def _learn_stall(self, n: int) -> None:
        """A pause with exactly the same number of unacknowledged messages twice in a row, below
        our limit: the broker's in-flight limit. Checkpoint at it from now on."""
        streak = self.cp.stall_streak
        streak.append(n)
        del streak[:-2]
        if len(streak) == 2 and streak[0] == streak[1] and n < self._checkpoint_limit():
            self.cp.learned_inflight = n
            log.warning("broker in-flight limit appears to be %d messages (below "
                        "PARKMON_EDGE_CHECKPOINT_MESSAGES=%d): checkpointing every %d messages",
                        n, self.s.checkpoint_messages, n,
                        extra={"event": "inflight_limit", "limit": n})

    # -- main loop -------------------------------------------------------------------------------
    def _subscribed(self) -> bool:
        return bool(self.mqtt.connected and self.mqtt.subscribed.is_set())

    def _input_live(self) -> bool:
        """Subscribed on the connection the idle timer was restarted for: only then may a
        silence be the devices' (never while disconnected or before a reconnect is noticed)."""
        return (self._was_subscribed and self._subscribed()
                and getattr(self.mqtt, "generation", 0) == self._sub_generation)

    def _advance(self, wall: int, force: bool = False) -> None:
        self.wm.observe(self.pipe.max_ts_ms, wall)
        # idle only when the silence is the devices': not while messages wait in the inbox or for
        # a checkpoint (the broker holds back once its in-flight window is full), nor while
        # InfluxDB is failing
        wm = self.wm.at(wall, may_idle=self._input_live() and self.inbox.empty()
                        and not self.unacked and self.cp.last_error is None)
        if wm is None:
            return
        due = self._last_advance_wm is None or wm - self._last_advance_wm >= \
            self.s.advance_every_ms
        if due or (force and wm != self._last_advance_wm):
            self._last_advance_wm = wm
            self.pipe.advance(wm)
            self._changed = True
        elif force and self.alerts is not None:
            self.alerts.tick()
        self.metrics.watermark.set(wm)

    def _redelivery(self, m: _Msg) -> bool:
        """True if `m` is the broker's redelivery of a message fed on an earlier connection and
        not acknowledged there (the acknowledgement could not be sent): same packet id, topic and
        payload. Its readings are in the pipeline state already; feeding it again would count
        them twice (duplicates, and rejected readings, which have no idempotency key)."""
        if not m.qos:
            return False
        dig: bytes | None = None
        for table in (self._unconfirmed, self._recent_acked):
            old = table.get(m.mid)
            if old is None or old[0] >= m.generation:
                continue
            dig = dig or message_digest(m.topic, m.payload)
            # matched, or the broker reused the id: the earlier message was acknowledged
            del table[m.mid]
            if old[1] == dig:
                return True
        if self.unacked and self.unacked[0].generation < m.generation:
            # fed on the lost connection, waiting for the next checkpoint
            for u in self.unacked:
                if u.mid == m.mid and u.generation < m.generation and not u.superseded \
                        and u.topic == m.topic and u.payload == m.payload:
                    u.superseded = True
                    return True
        return False

    def _feed(self, m: _Msg) -> None:
        if self._redelivery(m):
            # acknowledged with the next checkpoint, which persists the state holding it
            self.redelivered_skipped += 1
            self.unacked.append(m)
            return
        try:
            self.pipe.feed(m.topic, m.payload)
        except Exception as exc:  # a bug must not stop the service nor block the session
            self.pipe.counters.rejected["processing_error"] += 1
            log.exception("processing failed", extra={"event": "processing_error",
                                                      "mqtt_topic": m.topic, "error": repr(exc)})
        self.unacked.append(m)
        self._changed = True

    def step(self, timeout_s: float) -> None:
        """One iteration: feed what arrived (up to the checkpoint limit), advance, checkpoint."""
        wall = self.now_ms()
        self._loop_alive_wall = wall
        sub = self._subscribed()
        gen = getattr(self.mqtt, "generation", 0)
        if sub and (not self._was_subscribed or gen != self._sub_generation):
            # the idle clock starts once the session's backlog can arrive (also after a
            # disconnect and reconnect that both happened during one long step)
            self.wm.hold(wall)
            self._sub_generation = gen
        self._was_subscribed = sub
        fed = 0
        late_before = self.pipe.counters.late_beyond_grace
        limit = self._checkpoint_limit()
        try:
            m = self.inbox.get(timeout=timeout_s)
        except queue.Empty:
            m = None
        while m is not None:
            self._feed(m)
            fed += 1
            if len(self.unacked) >= limit:
                break
            try:
                m = self.inbox.get_nowait()
            except queue.Empty:
                m = None
        wall = self.now_ms()
        self._log_late(self.pipe.counters.late_beyond_grace - late_before, wall)
        if fed:
            self._last_msg_wall = wall
            self.wm.observe(self.pipe.max_ts_ms, wall)
            self._advance(wall)
        if wall - self._last_tick_wall >= self.s.tick_interval_s * 1000:
            self._last_tick_wall = wall
            self._advance(wall, force=True)
            if self.delivery is not None and self.pipe.notifications:
                self.delivery.wake()
            self._refresh_stats()
        self.metrics.unacked.set(len(self.unacked))
        if wall < self._influx_retry_at:
            return
        n = len(self.unacked)
        if n >= limit:
            self.cp.stall_streak.clear()
            learned = self.cp.learned_inflight
            if learned is not None and n + self.inbox.qsize() > learned:
                # the broker sent more unacknowledged messages than the learned limit: it was a
                # pause of the devices, not the broker's window
                self.cp.learned_inflight = None
                log.info("in-flight limit %d forgotten: %d messages arrived unacknowledged",
                         learned, n + self.inbox.qsize(), extra={"event": "inflight_limit_reset"})
            self.checkpoint("messages")
        elif n and wall - self._last_msg_wall >= self.s.stall_s * 1000:
            self._learn_stall(n)
            self.checkpoint("pause")
        elif (self._changed or n or self._retry_points) and \
                wall - self._last_cp_wall >= self.s.checkpoint_interval_s * 1000:
            self.checkpoint("interval")

    def _log_late(self, n: int, wall: int) -> None:
        """Readings late beyond grace: a warning with an example, at most one every 10 s."""
        self._late_unlogged += n
        if not self._late_unlogged or wall - self._late_logged_wall < 10_000:
            return
        lr = self.pipe.last_late
        log.warning("%d reading(s) late beyond grace (more than GRACE_MS behind the largest "
                    "event time seen)", self._late_unlogged, extra={
                        "event": "late", "count": self._late_unlogged,
                        "meter": lr.meter if lr else None, "ts_ms": lr.ts_ms if lr else None,
                        "max_ts_ms": self.pipe.max_ts_ms, "watermark_ms": self.wm.value})
        self._late_unlogged = 0
        self._late_logged_wall = wall

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
