"""Units: every quantity a park file or a reading may use, converted to one canonical unit (pint).

Canonical units inside parkmon:

==========  ================  ===============
dimension   quantity (counter) rate
==========  ================  ===============
energy      MWh               MWh/h
mass        t                 t/h
volume      m3                m3/h
==========  ================  ===============

A counter meter reports a cumulative quantity (``MWh``, ``t``, ``m3`` or any compatible unit such
as ``kWh``, ``GJ``, ``kg``, ``L``); a rate meter reports quantity per hour (``MWh/h``, ``kW``,
``t/h``, ``m3/h``, ``t/yr`` ...). Emission factors are mass of CO2e per canonical quantity
(``t/MWh``, ``t/t``, ``t/m3``); the file may write ``kg/kWh``, ``t/TJ`` ...

Conversions are multiplicative (no offset units are accepted), so the factor between two unit
strings is computed once with pint and cached: converting a reading is one multiplication.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from parkmon.errors import ParkmonError

Dimension = Literal["energy", "mass", "volume"]

CANONICAL_QUANTITY: dict[str, str] = {"energy": "MWh", "mass": "t", "volume": "m3"}
CANONICAL_RATE: dict[str, str] = {d: f"{u}/h" for d, u in CANONICAL_QUANTITY.items()}

# Extra unit names used by meters and gas/oil trade that pint does not define.
_DEFINITIONS = (
    "m3 = meter ** 3",
    "Nm3 = meter ** 3",  # normal cubic metre (gas volume at normal conditions)
    "Sm3 = meter ** 3",  # standard cubic metre
    "mmBtu = 1e6 * british_thermal_unit = MMBtu",
    "tCO2 = metric_ton",
    "tCO2e = metric_ton",
    "kgCO2 = kilogram",
    "kgCO2e = kilogram",
)


class UnitError(ParkmonError):
    """A unit that cannot be used where it was given. `reason` is a contracts.Reason code."""

    reason = "unit_mismatch"

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


class UnknownUnitError(UnitError):
    reason = "unknown_unit"


class UnitMismatchError(UnitError):
    """The unit exists but measures something else (e.g. kW for a counter in MWh)."""

    reason = "unit_mismatch"


@lru_cache(maxsize=1)
def registry() -> Any:
    """The process-wide pint registry (built lazily: about 0.3 s)."""
    import pint

    ureg: Any = pint.UnitRegistry(autoconvert_offset_to_baseunit=False)
    for definition in _DEFINITIONS:
        ureg.define(definition)
    return ureg


@dataclass(frozen=True, slots=True)
class UnitInfo:
    """What a unit string measures and how to bring it to the canonical unit."""

    unit: str
    dimension: Dimension
    is_rate: bool
    canonical_unit: str
    scale: float  # canonical = value * scale


_DIMENSIONALITIES: dict[str, tuple[Dimension, bool]] = {}


def _dimensionalities() -> dict[str, tuple[Dimension, bool]]:
    if not _DIMENSIONALITIES:
        ureg = registry()
        for dim, unit in CANONICAL_QUANTITY.items():
            dq = ureg.Quantity(1, unit).dimensionality
            dr = ureg.Quantity(1, f"{unit}/h").dimensionality
            _DIMENSIONALITIES[str(dq)] = (dim, False)  # type: ignore[assignment]
            _DIMENSIONALITIES[str(dr)] = (dim, True)  # type: ignore[assignment]
    return _DIMENSIONALITIES


#: the unit strings handed to pint: names (``MWh``, ``m3``, ``t``), numbers, ``*``, ``/``,
#: parentheses, spaces, and integer exponents of at most two digits (``m**3``, ``h^-1``) directly
#: after a name or a number. pint evaluates a unit string as an arithmetic expression with Python
#: numbers, so ``9**9**9**9`` (10 characters) would compute a power tower and never return; an
#: exponent after another exponent or after ``)`` is refused for the same reason.
_UNIT_TOKEN = re.compile(r"\s+|(?P<name>[^\W\d]\w*)|(?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d{1,3})?)"
                         r"|(?P<pow>(?:\*\*|\^)\s*[+-]?\d{1,2})(?!\d)|(?P<op>\*(?!\*)|[/()])")
_UNIT_MAX_CHARS = 64


def _unit_syntax_problem(unit: str) -> str | None:
    """Why `unit` is not safe to hand to pint (None when it is)."""
    if len(unit) > _UNIT_MAX_CHARS:
        return f"longer than {_UNIT_MAX_CHARS} characters"
    pos, prev = 0, ""
    while pos < len(unit):
        m = _UNIT_TOKEN.match(unit, pos)
        if m is None:
            return f"unexpected character {unit[pos]!r} at position {pos}"
        kind = m.lastgroup or ""
        if kind == "pow" and prev not in ("name", "num"):
            return "an exponent must follow a unit name or a number (no towers, no (...)**n)"
        if kind:
            prev = kind
        pos = m.end()
    return None


def _parse(unit: str) -> Any:
    ureg = registry()
    if not isinstance(unit, str) or not unit.strip():
        raise UnknownUnitError(f"unit {unit!r} is empty; expected e.g. 'MWh', 't', 'm3', 't/h'")
    problem = _unit_syntax_problem(unit)
    if problem is not None:
        raise UnknownUnitError(f"unit {unit[:_UNIT_MAX_CHARS]!r} is not a unit expression parkmon "
                               f"accepts: {problem}; expected e.g. 'MWh', 'GJ', 't', 'm3', 't/h', "
                               "'m**3/h'")
    try:
        q = ureg.Quantity(1, unit.strip())
    except Exception as exc:  # pint raises several error types (UndefinedUnitError, syntax errors)
        raise UnknownUnitError(
            f"unknown unit {unit!r}; expected an energy, mass or volume unit such as "
            "'MWh', 'GJ', 'kWh', 't', 'kg', 'm3' (or per hour for rates: 'MW', 't/h', 'm3/h')"
        ) from exc
    return q


@lru_cache(maxsize=4096)
def unit_info(unit: str) -> UnitInfo:
    """Classify a unit string: dimension, rate or quantity, canonical unit and scale factor.

    Raises UnknownUnitError for an unknown unit, UnitMismatchError for a unit that is neither an
    energy, mass or volume quantity nor such a quantity per time.
    """
    q = _parse(unit)
    found = _dimensionalities().get(str(q.dimensionality))
    if found is None:
        raise UnitMismatchError(
            f"unit {unit!r} measures {q.dimensionality}; expected an energy, mass or volume "
            "quantity (MWh, t, m3) or a rate of one (MWh/h, t/h, m3/h)"
        )
    dim, is_rate = found
    canonical = CANONICAL_RATE[dim] if is_rate else CANONICAL_QUANTITY[dim]
    scale = float(q.to(canonical).magnitude)
    return UnitInfo(unit=unit, dimension=dim, is_rate=is_rate, canonical_unit=canonical, scale=scale)


@lru_cache(maxsize=16384)
def conversion_factor(unit: str, canonical_unit: str) -> float:
    """Multiplier taking a value in `unit` to `canonical_unit`; raises a UnitError if incompatible."""
    q = _parse(unit)
    try:
        target = registry().Unit(canonical_unit)
    except Exception as exc:
        raise UnknownUnitError(f"unknown target unit {canonical_unit!r}") from exc
    try:
        return float(q.to(target).magnitude)
    except Exception as exc:  # pint.DimensionalityError
        raise UnitMismatchError(
            f"unit {unit!r} cannot be converted to {canonical_unit!r} "
            f"({q.dimensionality} vs {registry().Quantity(1, target).dimensionality})"
        ) from exc


def to_canonical(value: float, unit: str, canonical_unit: str) -> float:
    """Convert `value` given in `unit` into `canonical_unit` (e.g. 1500 kWh -> 1.5 MWh).

    Raises UnknownUnitError / UnitMismatchError (both ParkmonError, with a `reason` code).
    """
    if unit == canonical_unit:
        return float(value)
    return float(value) * conversion_factor(unit, canonical_unit)


def from_canonical(value: float, canonical_unit: str, unit: str) -> float:
    """Inverse of to_canonical: express a canonical value in `unit` (used by the simulator)."""
    if unit == canonical_unit:
        return float(value)
    return float(value) / conversion_factor(unit, canonical_unit)


@dataclass(frozen=True, slots=True)
class ParsedQuantity:
    value: float  # in canonical units
    info: UnitInfo


def parse_quantity(text: str | int | float, default_unit: str | None = None) -> ParsedQuantity:
    """Parse '80 t/h', '200000 t/yr', '1.2 GJ' or a bare number (then in `default_unit`)."""
    if isinstance(text, bool):
        raise UnitMismatchError(f"expected a quantity such as '80 t/h', got {text!r}")
    if isinstance(text, int | float):
        if default_unit is None:
            raise UnitMismatchError(f"{text!r} has no unit; write it with one, e.g. '{text} t/h'")
        magnitude, unit = float(text), default_unit
    else:
        s = str(text).strip()
        head, _, tail = s.partition(" ")
        try:
            magnitude = float(head)
        except ValueError:
            raise UnitMismatchError(
                f"cannot read quantity {text!r}; expected '<number> <unit>', e.g. '80 t/h'"
            ) from None
        unit = tail.strip() or (default_unit or "")
        if not unit:
            raise UnitMismatchError(f"{text!r} has no unit; write it with one, e.g. '{s} t/h'")
    if not math.isfinite(magnitude):
        raise UnitMismatchError(f"quantity {text!r} is not a finite number")
    info = unit_info(unit)
    return ParsedQuantity(value=magnitude * info.scale, info=info)


@lru_cache(maxsize=256)
def emission_factor_info(unit: str) -> tuple[Dimension, float]:
    """For an emission factor unit (mass CO2e per energy/mass/volume), return the dimension of the
    denominator and the scale to t CO2e per canonical quantity (t/MWh, t/t, t/m3)."""
    q = _parse(unit)
    ureg = registry()
    for dim, canon in CANONICAL_QUANTITY.items():
        target = f"t/{canon}"
        if q.dimensionality == ureg.Quantity(1, target).dimensionality:
            return dim, float(q.to(target).magnitude)  # type: ignore[return-value]
    raise UnitMismatchError(
        f"emission factor unit {unit!r} is not a mass of CO2e per energy, mass or volume; "
        "expected e.g. 'kg/kWh', 't/TJ', 't/MWh', 'kg/t', 'kg/m3'"
    )
