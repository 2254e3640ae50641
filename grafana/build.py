"""Write grafana/dashboards/<name>.json from the grafanalib definitions (deterministic).

    python -m grafana.build [--park FILE]   # default: the embedded Kalundborg-like park
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from grafanalib._gen import DashboardEncoder

from grafana.dashboards import DASHBOARDS

OUT_DIR = Path(__file__).resolve().parent / "dashboards"


def default_park() -> Any:
    from parkmon.park import example_park_path, load_park

    return load_park(example_park_path("kalundborg"))


def render(name: str, park: Any = None) -> str:
    dash = DASHBOARDS[name](park if park is not None else default_park()).to_json_data()
    return json.dumps(dash, cls=DashboardEncoder, indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m grafana.build", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--park", help="park file whose network the dashboards draw")
    ap.add_argument("--out", default=str(OUT_DIR))
    args = ap.parse_args(argv)
    park = default_park()
    if args.park:
        from parkmon.park import load_park

        park = load_park(args.park)
    out = Path(args.out)
    out.mkdir(exist_ok=True)
    for name in DASHBOARDS:
        path = out / f"{name}.json"
        path.write_text(render(name, park))
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
