"""The `parkmon` command. Each subcommand lives with the stage that owns it and is imported lazily,
so `parkmon park check` does not import Faust and a broken optional stage never breaks the others.

A subcommand target is `module:function` where function(argv: list[str]) -> int.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "park": ("parkmon.park.cli:main", "check or show a park description file"),
    "simulate": ("simulators.cli:main", "publish a simulated sensor fleet over MQTT"),
    "gateway": ("ingest.cli:main", "run the MQTT -> Kafka ingest gateway"),
    "streams": ("streams.cli:main", "run the Faust KPI worker (streams worker)"),
    "alerts": ("alerts.cli:main", "run the alert service (detection follow-up, webhook delivery)"),
    "detect": ("detect.worker:main", "run the detectors on the readings topic and publish detection events"),
    "evaluate": ("detect.evaluate:main", "score the detectors on labelled scenarios"),
    "services": ("parkmon.devservices.cli:main", "install/start/stop local Mosquitto, Kafka, InfluxDB"),
    "demo": ("apps.demo:main", "run the whole monitor in one process on an embedded park"),
    "whatif": ("apps.whatif:main", "what-if on the park model: baseline vs changed park, KPI deltas, impact, alerts"),
    "ledger": ("streams.ledger_cli:main", "verify, export, sync or sign the tamper-evident exchange ledger"),
    "report": ("apps.control_report:main", "HTML control-room snapshot from a live InfluxDB for a time range"),
    "edge": ("apps.edge.service:main", "run the whole monitor in one process on live MQTT, writing to InfluxDB"),
    "influx-tokens": ("apps.influx_tokens:main", "create least-privilege InfluxDB tokens per service"),
}


def _usage() -> str:
    lines = ["usage: parkmon COMMAND [ARGS...]", "", "commands:"]
    for name, (_target, help_text) in COMMANDS.items():
        lines.append(f"  {name:<10} {help_text}")
    lines.append("")
    lines.append("Run `parkmon COMMAND --help` for the options of a command.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0 if args else 2
    if args[0] == "--version":
        from parkmon import __version__

        print(__version__)
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"parkmon: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, func_name = COMMANDS[name][0].split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        print(f"parkmon {name}: not available in this build ({exc})", file=sys.stderr)
        return 2
    func = getattr(module, func_name)
    try:
        code: int = func(rest)
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
