"""Write grafana/dashboards/<name>.json from the grafanalib definitions (deterministic)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from grafanalib._gen import DashboardEncoder

from grafana.dashboards import DASHBOARDS

OUT_DIR = Path(__file__).resolve().parent / "dashboards"


def render(name: str) -> str:
    dash = DASHBOARDS[name]().to_json_data()
    return json.dumps(dash, cls=DashboardEncoder, indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    OUT_DIR.mkdir(exist_ok=True)
    for name in DASHBOARDS:
        path = OUT_DIR / f"{name}.json"
        path.write_text(render(name))
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
