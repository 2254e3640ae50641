"""The layout's one-way floors, checked on the real import graph (docs/architecture.md).

    3 apps       compositions: the `parkmon` command, edge mode, demo, reports
    2 adapters   services and I/O edges: ingest gateway, streams workers, detect worker, alert
                 delivery, simulator publisher, dashboards, dev services
    1 cores      pure logic: streams.core, detectors, impact, alert lifecycle, validation, dedup,
                 the simulated fleet
    0 domain     parkmon: park model, units, contracts, config, errors

A module may import its own floor and the floors below, never one above; product code never
imports the test helpers (tests.support) and never uses pickle (state that must survive an
upgrade is versioned JSON, parkmon/state.py).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
PRODUCT = ("parkmon", "ingest", "streams", "detect", "alerts", "simulators", "apps", "grafana")

# longest prefix wins
FLOORS: dict[str, int] = {
    "parkmon": 0,
    "parkmon.devservices": 2,
    "streams": 2,
    "streams.core": 1,
    "detect": 1,
    "detect.worker": 2,
    "detect.evaluate": 2,
    "alerts": 2,
    "alerts.impact": 1,
    "alerts.model": 1,
    "alerts.lifecycle": 1,
    "ingest": 2,
    "ingest.validate": 1,
    "ingest.dedup": 1,
    "ingest.payload_schema": 1,
    "simulators": 1,
    "simulators.publisher": 2,
    "simulators.cli": 2,
    "simulators.bench": 2,
    "grafana": 2,
    "apps": 3,
}
PICKLE_STILL_USED: set[str] = set()  # none left
FLOOR_NAMES = {0: "domain", 1: "core", 2: "adapter", 3: "app"}


def floor_of(module: str) -> int | None:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in FLOORS:
            return FLOORS[prefix]
    return None


def module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, module: str) -> list[tuple[int, str]]:
    """(line, imported module) for every import in the file, relative imports resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # `from pkg import sub` imports the submodule (and pkg's __init__, checked on its own)
            folder = REPO.joinpath(*target.split("."))
            subs = [a.name for a in node.names
                    if (folder / f"{a.name}.py").exists() or (folder / a.name).is_dir()]
            if subs and len(subs) == len(node.names):
                found.extend((node.lineno, f"{target}.{s}") for s in subs)
            else:
                found.append((node.lineno, target))
    return found


def product_graph() -> dict[str, tuple[Path, list[tuple[int, str]]]]:
    graph = {}
    for top in PRODUCT:
        for path in sorted((REPO / top).rglob("*.py")):
            mod = module_name(path)
            graph[mod] = (path, imports_of(path, mod))
    return graph


def violations(graph: dict[str, tuple[Path, list[tuple[int, str]]]]) -> list[str]:
    problems = []
    for mod, (path, imports) in sorted(graph.items()):
        here = floor_of(mod)
        if here is None:
            problems.append(f"{path}: module {mod} is on no floor; add it to FLOORS")
            continue
        for line, target in imports:
            top = target.split(".")[0]
            where = f"{path.relative_to(REPO) if path.is_absolute() else path}:{line}"
            if top == "tests":
                problems.append(f"{where}: product module {mod} imports test helper {target}")
            elif top == "pickle" and mod not in PICKLE_STILL_USED:
                problems.append(f"{where}: {mod} uses pickle; state must be versioned JSON")
            elif top in PRODUCT:
                there = floor_of(target)
                if there is not None and there > here:
                    problems.append(
                        f"{where}: {mod} ({FLOOR_NAMES[here]}) imports {target} "
                        f"({FLOOR_NAMES[there]}): imports must only go down a floor")
    return problems


def test_every_product_import_goes_down_the_floors() -> None:
    graph = product_graph()
    assert len(graph) > 80  # the walk found the packages
    assert violations(graph) == []


def test_the_check_catches_an_upward_import_a_test_helper_and_pickle() -> None:
    planted = {
        "streams.core.windows": (Path("streams/core/windows.py"),
                                 [(3, "streams.influx_sink"), (4, "parkmon.errors")]),
        "parkmon.units": (Path("parkmon/units.py"), [(7, "apps.cli")]),
        "alerts.service": (Path("alerts/service.py"), [(9, "tests.support.alerts"),
                                                       (10, "pickle")]),
        "ingest.gateway": (Path("ingest/gateway.py"), [(2, "ingest.validate")]),
    }
    found = violations(planted)
    assert len(found) == 4
    assert "streams/core/windows.py:3" in found[3] and "(core) imports streams.influx_sink" in found[3]
    assert any("parkmon/units.py:7" in p and "(domain) imports apps.cli (app)" in p for p in found)
    assert any("test helper tests.support.alerts" in p for p in found)
    assert any("uses pickle" in p for p in found)


def test_the_pickle_allowance_only_shrinks() -> None:
    graph = product_graph()
    users = {m for m, (_, imps) in graph.items() if any(t == "pickle" for _, t in imps)}
    assert users <= PICKLE_STILL_USED


def test_relative_imports_are_resolved(tmp_path: Path) -> None:
    src = tmp_path / "mod.py"
    src.write_text("from . import events\nfrom ..core import windows\n")
    got = [t for _, t in imports_of(src, "streams.core.kpis.mod")]
    assert "streams.core.kpis" in got and "streams.core.core" in got
