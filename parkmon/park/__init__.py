"""The park description: enterprises, meters, symbiotic exchanges, alternatives, emission factors.

    from parkmon.park import load_park, example_park_path
    park = load_park(example_park_path("kalundborg"))
    park.meter("asnaes.gypsum_out").canonical_unit  # 't'

See docs/park-file.md for the file format.
"""

from __future__ import annotations

from pathlib import Path

from parkmon.park.loader import build_park, load_park, parse_park
from parkmon.park.model import (
    Alternative,
    EmissionFactor,
    Enterprise,
    Exchange,
    FactorPoint,
    MaintenanceWindow,
    Meter,
    Park,
    Product,
)

EXAMPLES_DIR = Path(__file__).parent / "examples"


def example_park_path(name: str = "kalundborg") -> Path:
    """Path of a park file shipped with parkmon (`kalundborg`)."""
    path = EXAMPLES_DIR / f"{name}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in EXAMPLES_DIR.glob("*.yaml"))
        raise FileNotFoundError(f"no example park {name!r}; examples are: {', '.join(known)}")
    return path


__all__ = [
    "Alternative", "EmissionFactor", "Enterprise", "Exchange", "FactorPoint", "MaintenanceWindow",
    "Meter", "Park", "Product", "build_park", "example_park_path", "load_park", "parse_park",
]
