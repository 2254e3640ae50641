"""`parkmon streams worker`: run the Faust KPI worker for one park.

Options fall back to environment variables (PARKMON_KAFKA_BOOTSTRAP, PARKMON_INFLUX_URL / _ORG /
_BUCKET / _TOKEN, PARKMON_STREAMS_PARK_FILE, PARKMON_STREAMS_EVENT_LOOP); the token is only read
from the environment.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from parkmon.config import InfluxSettings, KafkaSettings
from parkmon.errors import ParkmonError


def _parser() -> argparse.ArgumentParser:
    ks, ins = KafkaSettings(), InfluxSettings()
    ap = argparse.ArgumentParser(prog="parkmon streams worker",
                                 description="Faust worker: readings -> windows/KPIs -> InfluxDB")
    ap.add_argument("--park", default=os.environ.get("PARKMON_STREAMS_PARK_FILE"),
                    help="park YAML file (default: the shipped Kalundborg example)")
    ap.add_argument("--park-id", default=None,
                    help="override the park id (topic names, tags); default: the file's id")
    ap.add_argument("--bootstrap", default=ks.bootstrap)
    ap.add_argument("--influx-url", default=ins.url)
    ap.add_argument("--influx-org", default=ins.org)
    ap.add_argument("--influx-bucket", default=ins.bucket)
    ap.add_argument("--partitions", type=int, default=None,
                    help="partitions of the readings topic: created with this many if missing, "
                         "checked otherwise (default: as it is, 1 if created)")
    ap.add_argument("--app-id", default=None, help="consumer group (default parkmon-streams-<park>)")
    ap.add_argument("--base-window-ms", type=int, default=60_000)
    ap.add_argument("--grace-ms", type=int, default=120_000)
    ap.add_argument("--batch-max", type=int, default=5000)
    ap.add_argument("--flush-interval-s", type=float, default=1.0)
    ap.add_argument("--idle-close-ms", type=int, default=None,
                    help="close windows of a partition idle this long (wall clock)")
    ap.add_argument("--session-timeout-s", type=float, default=30.0,
                    help="Kafka group session timeout: a killed worker's partitions move after it")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--no-kpis", action="store_true", help="meter windows only (no KPI agent)")
    ap.add_argument("--engine", choices=("faust", "batch"),
                    default=os.environ.get("PARKMON_STREAMS_ENGINE", "faust"),
                    help="faust: the Faust app (agents, changelog tables); batch: the same core "
                         "and guarantees in one confluent-kafka batch loop, ~3x the throughput "
                         "(docs/streams-worker.md)")
    ap.add_argument("--metrics-port", type=int,
                    default=int(os.environ.get("PARKMON_STREAMS_METRICS_PORT", "-1")),
                    help="batch engine: serve GET /metrics and /healthz on this port (0 = any "
                         "free port, -1 = off)")
    ap.add_argument("--metrics-host", default="127.0.0.1")
    ap.add_argument("--loglevel", default="info")
    ap.add_argument("--event-loop", choices=("uvloop", "asyncio"),
                    default=os.environ.get("PARKMON_STREAMS_EVENT_LOOP", "uvloop"),
                    help="event loop of the worker (default uvloop when installed, else asyncio)")
    return ap


def _install_event_loop(name: str) -> str:
    """Make `name` the loop Faust runs on; return the one actually installed.

    Faust's per-reading path (fetch -> conductor -> stream queue -> agent -> ack) is mostly
    event-loop work (tasks, futures, callbacks): on uvloop, Faust alone used about a fifth less
    CPU per reading (docs/streams-worker.md, Throughput). The loop changes no ordering or acking, so the
    delivery guarantees are the same with either.
    """
    if name == "uvloop":
        try:
            import uvloop
        except ImportError:
            logging.getLogger("parkmon.streams").warning(
                "uvloop is not installed: running on asyncio's default loop (slower)")
            name = "asyncio"
        else:
            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.set_event_loop(asyncio.new_event_loop())
    return name


def _setup_influx(argv: list[str]) -> int:
    ins = InfluxSettings()
    ap = argparse.ArgumentParser(prog="parkmon streams setup-influx",
                                 description="retention of the raw bucket, hourly bucket and "
                                             "downsampling task (idempotent)")
    ap.add_argument("--influx-url", default=ins.url)
    ap.add_argument("--influx-org", default=ins.org)
    ap.add_argument("--influx-bucket", default=ins.bucket)
    ap.add_argument("--raw-retention-days", type=int, default=30)
    ap.add_argument("--hourly-retention-days", type=int, default=5 * 365)
    args = ap.parse_args(argv)
    if ins.token is None:
        print("parkmon streams setup-influx: set PARKMON_INFLUX_TOKEN", file=sys.stderr)
        return 2
    from streams.influx_setup import ensure_long_term

    try:
        res = ensure_long_term(args.influx_url, ins.token.get_secret_value(), args.influx_org,
                               args.influx_bucket, raw_retention_days=args.raw_retention_days,
                               hourly_retention_days=args.hourly_retention_days)
    except ParkmonError as exc:
        print(f"parkmon streams setup-influx: {exc}", file=sys.stderr)
        return 1
    print(f"hourly bucket {res['bucket_1h']}, downsampling task {res['task_id']}")
    return 0


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: parkmon streams worker [options]        run the Faust KPI worker\n"
              "       parkmon streams setup-influx [options]  retention + downsampling task")
        return 0 if argv else 2
    if argv[0] == "setup-influx":
        return _setup_influx(argv[1:])
    if argv[0] != "worker":
        print(f"parkmon streams: unknown subcommand {argv[0]!r} (expected: worker, "
              "setup-influx)", file=sys.stderr)
        return 2
    args = _parser().parse_args(argv[1:])
    logging.basicConfig(level=args.loglevel.upper(),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    loop_name = _install_event_loop(args.event_loop)
    logging.getLogger("parkmon.streams").info("event loop: %s", loop_name)
    try:
        from parkmon.park import example_park_path, load_park
        from streams.app import WorkerOptions, create_app, ensure_topics
        from streams.core.model import KpiModel
        from streams.influx_sink import InfluxSink

        park = load_park(Path(args.park) if args.park else example_park_path("kalundborg"))
        if args.park_id:
            park = park.model_copy(update={"id": args.park_id})
        model = KpiModel.from_park(park)
        token = InfluxSettings().token
        if token is None:
            print("parkmon streams worker: set PARKMON_INFLUX_TOKEN", file=sys.stderr)
            return 2
        parts = ensure_topics(args.bootstrap, park.id, args.partitions or 1)
        if args.partitions and parts != args.partitions:
            print(f"parkmon streams worker: topic has {parts} partitions, not "
                  f"{args.partitions}", file=sys.stderr)
            return 2
        opts = WorkerOptions(
            park_id=park.id, bootstrap=args.bootstrap, app_id=args.app_id, partitions=parts,
            base_window_ms=args.base_window_ms, grace_ms=args.grace_ms,
            batch_max=args.batch_max, flush_interval_s=args.flush_interval_s,
            idle_close_ms=args.idle_close_ms, kpis=not args.no_kpis,
            session_timeout_s=args.session_timeout_s,
            data_dir=args.data_dir or f"/tmp/parkmon-streams-{os.getpid()}",
        )
        sink = InfluxSink.connect(args.influx_url, token.get_secret_value(), args.influx_org,
                                  args.influx_bucket)
        if args.engine == "batch":
            from streams.batch_worker import BatchWorker, ensure_changelogs

            ensure_changelogs(opts, parts)
            bw = BatchWorker(opts, model, sink, metrics_port=args.metrics_port,
                             metrics_host=args.metrics_host)
            bw.install_signal_handlers()
            return bw.run()
        app = create_app(opts, model, sink)
    except ParkmonError as exc:
        print(f"parkmon streams worker: {exc}", file=sys.stderr)
        return 2
    from faust.worker import Worker

    worker = Worker(app, loglevel=args.loglevel, quiet=True)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0
