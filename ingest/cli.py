"""`parkmon gateway --park FILE`: run the MQTT -> Kafka ingest gateway until SIGTERM/SIGINT.

Configuration comes from the environment (PARKMON_MQTT_*, PARKMON_KAFKA_*, PARKMON_GATEWAY_*; see
docs/ingest.md); the options below override the most common ones. Logs are JSON lines on stderr.
Exit codes: 0 clean shutdown, 1 fatal Kafka error, 2 bad configuration or park file.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from typing import Any

from pydantic import ValidationError

from parkmon.errors import ConfigError, ParkmonError

_STD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message",
                                                                                    "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg and every `extra=` field."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for k, v in record.__dict__.items():
            if k not in _STD_ATTRS and not k.startswith("_"):
                out[k] = v
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="parkmon gateway", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--park", help="park file (YAML); default PARKMON_GATEWAY_PARK_FILE")
    ap.add_argument("--metrics-port", type=int, help="port of /metrics and /healthz "
                    "(0: any free port, -1: off); default PARKMON_GATEWAY_METRICS_PORT or 9108")
    ap.add_argument("--client-id", help="MQTT client id (fixed: it names the persistent "
                    "session); default PARKMON_MQTT_CLIENT_ID")
    ap.add_argument("--share-group", help="join the MQTT 5 shared subscription "
                    "$share/GROUP/parkmon/<park>/+/readings")
    ap.add_argument("--log-level", help="DEBUG, INFO, WARNING (default INFO)")
    args = ap.parse_args(argv)

    from parkmon.config import GatewaySettings, KafkaSettings, MqttSettings

    try:
        gw = GatewaySettings()
        mq = MqttSettings()
        kafka = KafkaSettings()
    except ValidationError as exc:
        print(f"parkmon gateway: bad setting in the environment:\n{exc}", file=sys.stderr)
        return 2
    overrides: dict[str, Any] = {}
    if args.park:
        overrides["park_file"] = args.park
    if args.metrics_port is not None:
        overrides["metrics_port"] = args.metrics_port
    if args.log_level:
        overrides["log_level"] = args.log_level
    gw = gw.model_copy(update=overrides)
    mq_over: dict[str, Any] = {}
    if args.client_id:
        mq_over["client_id"] = args.client_id
    if args.share_group:
        mq_over["share_group"] = args.share_group
    mq = mq.model_copy(update=mq_over)
    setup_logging(gw.log_level)
    log = logging.getLogger("parkmon.gateway")
    # JSON mode renders SecretStr as "**********": the effective settings, never a secret
    log.debug("settings", extra={"event": "settings", "mqtt": mq.model_dump(mode="json"),
                                 "kafka": kafka.model_dump(mode="json"),
                                 "gateway": gw.model_dump(mode="json")})
    from parkmon.cliutil import load_park_or_explain

    park = load_park_or_explain("gateway", gw.park_file, "PARKMON_GATEWAY_PARK_FILE")
    if park is None:
        return 2

    from ingest.gateway import Gateway

    try:
        gateway = Gateway(park, gateway=gw, mqtt_settings=mq, kafka=kafka)
    except ConfigError as exc:
        print(f"parkmon gateway: {exc}", file=sys.stderr)
        return 2

    def _stop(signum: int, _frame: Any) -> None:
        log.info("signal received", extra={"event": "signal", "signal": signal.Signals(signum).name})
        gateway.stop_event.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        return gateway.run()
    except ParkmonError as exc:
        log.error("gateway failed", extra={"event": "failed", "error": str(exc)})
        return 1
    except Exception as exc:  # e.g. Kafka unreachable at start: one clear line, no traceback
        log.error("gateway failed", extra={"event": "failed", "error": repr(exc)})
        return 1
