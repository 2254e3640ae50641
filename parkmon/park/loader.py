"""Park file (YAML) -> `Park`, reporting every problem as one line with its path into the file.

Two passes: the *file schema* (`_*Spec` models below: types, required fields, allowed values,
unknown keys) and then the *cross checks* (units and their dimensions, dangling references,
duplicates, exchange consistency). All problems of both passes are collected and raised together
as one `ParkFileError(problems=[...])`; the second pass only runs on the parts that passed the
first, so one mistake gives one line.

Problem lines look like::

    exchanges[2].suppliers[0]: no meter 'asnaes.gypsum_out'; meters of 'asnaes' are: asnaes.power_out, ...
    meters[4].unit: 'kW' is a rate unit but kind is 'counter'; a counter needs a quantity unit such as 'MWh', 'GJ', 'kWh'
"""

from __future__ import annotations

import datetime as dt
import math
import zoneinfo
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from parkmon.errors import ParkFileError
from parkmon.park.model import (
    CARRIER_DIMENSIONS,
    FATES,
    WASTE_CARRIERS,
    Alternative,
    Carrier,
    Criticality,
    Direction,
    EmissionFactor,
    Enterprise,
    Exchange,
    FactorPoint,
    Fate,
    MaintenanceWindow,
    Meter,
    MeterKind,
    Origin,
    Park,
    Product,
    Profile,
    Scope,
)
from parkmon.park.sharing import AllocationError, BenefitSharing, SharingRule
from parkmon.units import (
    CANONICAL_QUANTITY,
    UnitError,
    emission_factor_info,
    parse_quantity,
    unit_info,
)

# libyaml's safe loader is ~3x faster for the big synthetic parks; same semantics
_YAML_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

Number = float | int
QuantityText = str | float | int
ID_PATTERN = r"^[A-Za-z0-9_.-]{1,128}$"


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False)


class _ParkHeader(_Spec):
    id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    name: str
    timezone: str = "UTC"
    source: str | None = None


class _EnterpriseSpec(_Spec):
    id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    name: str
    sector: str


class _MeterSpec(_Spec):
    id: str = Field(pattern=ID_PATTERN)
    enterprise: str
    carrier: Carrier
    material: str | None = None
    direction: Direction
    origin: Origin | None = None
    fate: Fate | None = None
    kind: MeterKind
    unit: str
    period_s: float = Field(default=60.0, gt=0)
    range: tuple[Number, Number] | None = None
    capacity: QuantityText | None = None
    nominal: QuantityText | None = None
    rollover: Number | None = Field(default=None, gt=0)
    profile: Profile = "continuous"
    name: str | None = None


class _ExchangeSpec(_Spec):
    id: str = Field(pattern=ID_PATTERN)
    name: str | None = None
    material: str | None = None
    carrier: Carrier
    suppliers: list[str] = Field(min_length=1)
    consumers: list[str] = Field(min_length=1)
    consumer_shares: list[float] | None = None
    nominal_rate: QuantityText
    loss_fraction: float = Field(default=0.0, ge=0.0, lt=1.0)
    buffer_h: float = Field(default=0.0, ge=0.0)
    criticality: Criticality = "medium"
    since: int | None = None
    source: str | None = None
    virgin_price: float = Field(default=0.0, ge=0.0)
    disposal_price: float = Field(default=0.0, ge=0.0)
    sharing: SharingRule | None = Field(default=None, discriminator="kind")


class _BenefitSpec(BenefitSharing):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=False)


class _AlternativeSpec(_Spec):
    enterprise: str
    external: bool = False
    carrier: Carrier
    material: str | None = None
    spare_capacity: QuantityText
    lead_time_h: float = Field(default=0.0, ge=0.0)
    exchanges: list[str] = []
    note: str | None = None


class _FactorPointSpec(_Spec):
    start: dt.datetime
    value: float = Field(ge=0.0)


class _EmissionFactorSpec(_Spec):
    value: float = Field(ge=0.0)
    unit: str
    source: str = Field(min_length=1)
    scope: Scope | None = None
    series: list[_FactorPointSpec] = []


class _MaintenanceSpec(_Spec):
    enterprise: str
    meters: list[str] = []
    start: dt.datetime
    end: dt.datetime
    description: str | None = None


class _ProductSpec(_Spec):
    meter: str
    name: str | None = None


class _ParkFile(_Spec):
    park: _ParkHeader
    enterprises: list[_EnterpriseSpec] = Field(min_length=1)
    meters: list[_MeterSpec] = Field(min_length=1)
    exchanges: list[_ExchangeSpec] = []
    alternatives: list[_AlternativeSpec] = []
    emission_factors: dict[Carrier, _EmissionFactorSpec] = {}
    maintenance: list[_MaintenanceSpec] = []
    products: list[_ProductSpec] = []
    benefit_sharing: _BenefitSpec | None = None


_SECTIONS: dict[str, type[BaseModel]] = {
    "park": _ParkHeader,
    "enterprises": _EnterpriseSpec,
    "meters": _MeterSpec,
    "exchanges": _ExchangeSpec,
    "alternatives": _AlternativeSpec,
    "emission_factors": _EmissionFactorSpec,
    "maintenance": _MaintenanceSpec,
    "products": _ProductSpec,
    "benefit_sharing": _BenefitSpec,
}


# --------------------------------------------------------------------------------------------
# problem formatting


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(file)"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _pydantic_problem(err: Mapping[str, Any], prefix: tuple[Any, ...]) -> str:
    loc = tuple(prefix) + tuple(err["loc"])
    typ = err["type"]
    # a union/literal failure reports the branch name in loc: drop pydantic's internal tags
    loc = tuple(p for p in loc if not (isinstance(p, str) and ("[" in p or p in _BRANCH_TAGS)))
    path = _path(loc)
    if typ == "missing":
        return f"{path}: required field missing"
    if typ == "extra_forbidden":
        parent = loc[:-1]
        model = _model_at(parent)
        allowed = ", ".join(model.model_fields) if model else ""
        hint = f"; allowed fields: {allowed}" if allowed else ""
        return f"{path}: unknown field {loc[-1]!r}{hint}"
    if typ == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        hint = _FATE_CODES if loc and loc[-1] == "fate" else ""
        return f"{path}: expected {expected}, got {_short(err.get('input'))}{hint}"
    if typ == "string_pattern_mismatch":
        allowed = "letters, digits, '_', '-', '.'" if "." in str(err.get("ctx", {}).get("pattern", "")) \
            else "letters, digits, '_', '-'"
        return f"{path}: {_short(err.get('input'))} is not a valid id ({allowed})"
    return f"{path}: {err['msg']}, got {_short(err.get('input'))}"


_BRANCH_TAGS = {"str", "float", "int", "list", "tuple"}
_FATE_CODES = ("; Waste Framework Directive operations: recycling = reuse and R2-R11, "
               "energy_recovery = R1, disposal = D1-D15")


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    if not loc:
        return _ParkFile
    if isinstance(loc[0], str) and loc[0] in _SECTIONS:
        rest = [p for p in loc[1:] if isinstance(p, str)]
        if not rest or (loc[0] == "emission_factors" and len(rest) == 1):
            return _SECTIONS[loc[0]]
        if loc[0] == "emission_factors" and rest[-1] == "series":
            return _FactorPointSpec
        if loc[0] == "emission_factors" and "series" in rest:
            return _FactorPointSpec
    return None


def _ms(t: dt.datetime, tz: dt.tzinfo) -> int:
    if t.tzinfo is None:
        t = t.replace(tzinfo=tz)
    return int(t.timestamp() * 1000)


def _close_ids(ids: list[str], limit: int = 12) -> str:
    if not ids:
        return "(none)"
    shown = ", ".join(ids[:limit])
    return shown + (f", ... ({len(ids)} in all)" if len(ids) > limit else "")


# --------------------------------------------------------------------------------------------
# loading


def load_park(path: str | Path) -> Park:
    """Read and validate a park file. Raises ParkFileError(problems=[...]) listing every problem."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ParkFileError(str(p), [f"{p}: file not found"]) from None
    except OSError as exc:
        raise ParkFileError(str(p), [f"{p}: cannot read file ({exc.strerror})"]) from None
    return parse_park(text, source=str(p))


def parse_park(text: str, source: str = "<park>") -> Park:
    """Validate YAML text (see load_park)."""
    try:
        data = yaml.load(text, Loader=_YAML_LOADER)  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"
        problem = getattr(exc, "problem", None) or str(exc)
        raise ParkFileError(source, [f"(file): not valid YAML at {where}: {problem}"]) from None
    if not isinstance(data, dict):
        raise ParkFileError(
            source,
            ["(file): expected a mapping with sections park, enterprises, meters, exchanges, ..."],
        )
    return build_park(data, source=source)


def build_park(data: Mapping[str, Any], source: str = "<park>") -> Park:
    """Validate an already-parsed mapping (e.g. from the generator) into a Park."""
    problems: list[str] = []
    spec = _validate_sections(data, problems)
    declared = _declared_meter_ids(data)
    park = _cross_check(spec, problems, declared)
    if problems or park is None:
        raise ParkFileError(source, problems or ["(file): invalid park"])
    return park


def _validate_sections(data: Mapping[str, Any], problems: list[str]) -> dict[str, Any]:
    """Validate section by section and item by item so that one bad item does not hide others;
    returns the valid parts (invalid list items are replaced by None to keep indexes)."""
    out: dict[str, Any] = {}
    for key in data:
        if key not in _SECTIONS:
            problems.append(f"{key}: unknown section; allowed sections: {', '.join(_SECTIONS)}")
    for name, model in _SECTIONS.items():
        raw = data.get(name)
        required = name in ("park", "enterprises", "meters")
        if raw is None:
            if required:
                problems.append(f"{name}: required section missing")
            out[name] = None if name in ("park", "benefit_sharing") else (
                {} if name == "emission_factors" else [])
            continue
        if name in ("park", "benefit_sharing"):
            out[name] = _validate_one(model, raw, (name,), problems)
        elif name == "emission_factors":
            if not isinstance(raw, dict):
                problems.append(f"{name}: expected a mapping carrier -> factor, got {_short(raw)}")
                out[name] = {}
                continue
            factors: dict[str, Any] = {}
            for carrier, item in raw.items():
                if carrier not in CARRIER_DIMENSIONS:
                    problems.append(f"{name}.{carrier}: unknown carrier; expected one of "
                                    f"{', '.join(CARRIER_DIMENSIONS)}")
                    continue
                factors[carrier] = _validate_one(model, item, (name, carrier), problems)
            out[name] = factors
        else:
            if not isinstance(raw, list):
                problems.append(f"{name}: expected a list, got {_short(raw)}")
                out[name] = []
                continue
            if required and not raw:
                problems.append(f"{name}: must list at least one item")
            out[name] = [_validate_one(model, item, (name, i), problems) for i, item in enumerate(raw)]
    return out


def _validate_one(model: type[BaseModel], raw: Any, loc: tuple[Any, ...],
                  problems: list[str]) -> Any:
    if not isinstance(raw, dict):
        problems.append(f"{_path(loc)}: expected a mapping, got {_short(raw)}")
        return None
    try:
        return model.model_validate(raw)
    except AllocationError as exc:  # a sharing rule's own check (shares that do not sum to 1)
        problems.extend(f"{_path(loc)}: {exc.source}: {p}" for p in exc.problems)
        return None
    except ValidationError as exc:
        seen: set[str] = set()
        for err in exc.errors():
            branches = [p for p in err["loc"] if isinstance(p, str) and p in _BRANCH_TAGS]
            if branches:  # a value that fits no branch of a union: one line, not one per branch
                path = _path(tuple(loc) + tuple(p for p in err["loc"] if p not in branches))
                if path not in seen:
                    seen.add(path)
                    problems.append(f"{path}: expected a quantity such as '40 t/h' (a number with "
                                    f"a unit) or a plain number, got {_short(err.get('input'))}")
                continue
            if err["type"] == "missing" and isinstance(err["loc"][-1], int):  # short [min, max]
                path = _path(tuple(loc) + tuple(err["loc"][:-1]))
                if path not in seen:
                    seen.add(path)
                    problems.append(f"{path}: expected [min, max]")
                continue
            problems.append(_pydantic_problem(err, loc))
        return None


def _declared_meter_ids(data: Mapping[str, Any]) -> list[str]:
    """Meter ids written in the file, valid or not (a reference to an invalid meter is not
    reported again as dangling)."""
    raw = data.get("meters")
    if not isinstance(raw, list):
        return []
    return [m["id"] for m in raw if isinstance(m, dict) and isinstance(m.get("id"), str)]


def _cross_check(spec: dict[str, Any], problems: list[str], declared_ids: list[str]) -> Park | None:
    declared = set(declared_ids)
    header: _ParkHeader | None = spec["park"]
    tz: dt.tzinfo = dt.UTC
    if header is not None:
        try:
            tz = zoneinfo.ZoneInfo(header.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            problems.append(f"park.timezone: unknown time zone {header.timezone!r}; "
                            "expected an IANA name such as 'Europe/Copenhagen' or 'UTC'")

    # enterprises
    enterprises: list[Enterprise] = []
    ent_index: dict[str, int] = {}
    for i, e in enumerate(spec["enterprises"]):
        if e is None:
            continue
        if e.id in ent_index:
            problems.append(f"enterprises[{i}].id: duplicate enterprise id {e.id!r} "
                            f"(first at enterprises[{ent_index[e.id]}])")
            continue
        ent_index[e.id] = i
        enterprises.append(Enterprise(id=e.id, name=e.name, sector=e.sector))
    ent_ids = list(ent_index)

    # meters
    meters: dict[str, Meter] = {}
    meter_index: dict[str, int] = {}
    meters_of: dict[str, list[str]] = {}
    for i, m in enumerate(spec["meters"]):
        if m is None:
            continue
        meter = _check_meter(i, m, ent_index, ent_ids, meter_index, problems)
        if meter is not None:
            meters[meter.id] = meter
            meter_index[meter.id] = i
            meters_of.setdefault(meter.enterprise, []).append(meter.id)

    def meter_ref(loc: str, mid: str) -> Meter | None:
        if mid in meters:
            return meters[mid]
        if mid in declared:  # written in the file but invalid: already reported there
            return None
        ent = mid.split(".", 1)[0]
        of_ent = [d for d in declared_ids if d.startswith(ent + ".")]
        if of_ent:
            hint = f"; meters of {ent!r} are: {_close_ids(of_ent)}"
        else:
            hint = f"; meter ids start with their enterprise id ({_close_ids(ent_ids)})"
        problems.append(f"{loc}: no meter {mid!r}{hint}")
        return None

    # exchanges
    exchanges: list[Exchange] = []
    ex_index: dict[str, int] = {}
    used_by: dict[str, str] = {}
    for i, x in enumerate(spec["exchanges"]):
        if x is None:
            continue
        ex = _check_exchange(i, x, meter_ref, used_by, ex_index, problems)
        if ex is not None:
            exchanges.append(ex)
            ex_index[ex.id] = i

    # a meter supplying an exchange goes to a partner: a fate must not say otherwise
    for x in exchanges:
        for mid in x.suppliers:
            sm = meters.get(mid)  # None: the meter is invalid, already reported
            fate = sm.fate if sm is not None else None
            if fate == "disposal":
                why = "its flow goes to a partner, not to disposal (D1-D15)"
            elif fate == "energy_recovery":
                why = ("a flow delivered to a partner counts as valorised, so it cannot also be "
                       "reported as energy recovery (R1)")
            else:
                continue
            problems.append(
                f"meters[{meter_index[mid]}].fate: {fate!r} contradicts exchange {x.id!r} "
                f"(exchanges[{ex_index[x.id]}]), which meter {mid!r} supplies: {why}; remove "
                "fate, or set 'recycling' (use a separate meter for a part of the flow that "
                "goes elsewhere)")

    # alternatives
    alternatives: list[Alternative] = []
    for i, a in enumerate(spec["alternatives"]):
        if a is None:
            continue
        loc = f"alternatives[{i}]"
        ok = True
        if not a.external and a.enterprise not in ent_index:
            problems.append(f"{loc}.enterprise: no enterprise {a.enterprise!r}; enterprises are: "
                            f"{_close_ids(ent_ids)} (set external: true for a supplier outside the park)")
            ok = False
        for j, xid in enumerate(a.exchanges):
            if xid not in ex_index and not any(s is not None and s.id == xid for s in spec["exchanges"]):
                problems.append(f"{loc}.exchanges[{j}]: no exchange {xid!r}; exchanges are: "
                                f"{_close_ids([s.id for s in spec['exchanges'] if s is not None])}")
                ok = False
        try:
            q = parse_quantity(a.spare_capacity)
        except UnitError as exc:
            problems.append(f"{loc}.spare_capacity: {exc.message}")
            continue
        if not q.info.is_rate:
            problems.append(f"{loc}.spare_capacity: {a.spare_capacity!r} is a quantity, "
                            "expected a rate such as '10 t/h' or '5 MW'")
            continue
        if q.info.dimension not in CARRIER_DIMENSIONS[a.carrier]:
            problems.append(f"{loc}.spare_capacity: {q.info.dimension} unit for carrier "
                            f"{a.carrier!r}; expected {' or '.join(CARRIER_DIMENSIONS[a.carrier])}")
            continue
        if ok:
            alternatives.append(Alternative(
                enterprise=a.enterprise, external=a.external, carrier=a.carrier,
                material=a.material, spare_capacity=q.value,
                quantity_unit=CANONICAL_QUANTITY[q.info.dimension], lead_time_h=a.lead_time_h,
                exchanges=tuple(a.exchanges), note=a.note))

    # emission factors
    factors: dict[str, EmissionFactor] = {}
    for carrier, f in spec["emission_factors"].items():
        if f is None:
            continue
        loc = f"emission_factors.{carrier}"
        try:
            dim, scale = emission_factor_info(f.unit)
        except UnitError as exc:
            problems.append(f"{loc}.unit: {exc.message}")
            continue
        if dim not in CARRIER_DIMENSIONS[carrier]:
            problems.append(f"{loc}.unit: {f.unit!r} is per {dim} but {carrier!r} is metered in "
                            f"{' or '.join(CARRIER_DIMENSIONS[carrier])}")
            continue
        points = sorted(
            (FactorPoint(start_ms=_ms(p.start, tz), value=p.value * scale) for p in f.series),
            key=lambda p: p.start_ms)
        factors[carrier] = EmissionFactor(
            carrier=carrier, value=f.value * scale, per_unit=CANONICAL_QUANTITY[dim],
            dimension=dim, unit=f.unit, source=f.source, scope=f.scope, series=tuple(points))
    for mid, meter in meters.items():
        ef = factors.get(meter.carrier)
        if ef is not None and meter.direction == "input" and meter.dimension != ef.dimension:
            problems.append(
                f"meters[{meter_index[mid]}].unit: {meter.unit!r} measures {meter.dimension} but the "
                f"emission factor for {meter.carrier!r} is per {ef.per_unit} "
                f"(emission_factors.{meter.carrier}.unit {ef.unit!r})")

    # maintenance
    maintenance: list[MaintenanceWindow] = []
    for i, w in enumerate(spec["maintenance"]):
        if w is None:
            continue
        loc = f"maintenance[{i}]"
        ok = True
        if w.enterprise not in ent_index:
            problems.append(f"{loc}.enterprise: no enterprise {w.enterprise!r}; enterprises are: "
                            f"{_close_ids(ent_ids)}")
            ok = False
        for j, mid in enumerate(w.meters):
            m = meter_ref(f"{loc}.meters[{j}]", mid)
            if m is not None and m.enterprise != w.enterprise:
                problems.append(f"{loc}.meters[{j}]: meter {mid!r} belongs to {m.enterprise!r}, "
                                f"not {w.enterprise!r}")
                ok = False
            ok = ok and m is not None
        start_ms, end_ms = _ms(w.start, tz), _ms(w.end, tz)
        if end_ms <= start_ms:
            problems.append(f"{loc}.end: must be after start ({w.start.isoformat()})")
            ok = False
        if ok:
            maintenance.append(MaintenanceWindow(enterprise=w.enterprise, meters=tuple(w.meters),
                                                 start_ms=start_ms, end_ms=end_ms,
                                                 description=w.description))

    # products
    products: list[Product] = []
    seen_products: set[str] = set()
    for i, pr in enumerate(spec["products"]):
        if pr is None:
            continue
        loc = f"products[{i}].meter"
        m = meter_ref(loc, pr.meter)
        if m is None:
            continue
        if m.direction != "output":
            problems.append(f"{loc}: meter {pr.meter!r} is an {m.direction} meter; a product is "
                            "counted on an output meter")
            continue
        if pr.meter in seen_products:
            problems.append(f"{loc}: meter {pr.meter!r} is listed twice")
            continue
        seen_products.add(pr.meter)
        products.append(Product(meter=pr.meter, enterprise=m.enterprise, name=pr.name))

    benefit = spec.get("benefit_sharing")
    if benefit is not None or any(x.sharing is not None for x in exchanges):
        _check_benefit(benefit, exchanges, ex_index, meters, problems)

    if header is None or problems:
        return None
    return Park(
        id=header.id, name=header.name, timezone=header.timezone, source=header.source,
        enterprises=tuple(enterprises), meters=tuple(meters.values()),
        exchanges=tuple(exchanges), alternatives=tuple(alternatives),
        emission_factors=factors, maintenance=tuple(maintenance), products=tuple(products),
        benefit_sharing=None if benefit is None else BenefitSharing.model_validate(
            benefit.model_dump()))


def _check_meter(i: int, m: _MeterSpec, ent_index: dict[str, int], ent_ids: list[str],
                 meter_index: dict[str, int], problems: list[str]) -> Meter | None:
    loc = f"meters[{i}]"
    n_before = len(problems)
    if m.id in meter_index:
        problems.append(f"{loc}.id: duplicate meter id {m.id!r} (first at meters[{meter_index[m.id]}])")
        return None
    if m.enterprise not in ent_index:
        problems.append(f"{loc}.enterprise: no enterprise {m.enterprise!r}; enterprises are: "
                        f"{_close_ids(ent_ids)}")
    elif not m.id.startswith(m.enterprise + "."):
        problems.append(f"{loc}.id: {m.id!r} must start with its enterprise id "
                        f"'{m.enterprise}.' (e.g. '{m.enterprise}.{m.id.split('.')[-1]}')")
    if m.carrier == "material" and not m.material:
        problems.append(f"{loc}.material: required for carrier 'material' (e.g. 'gypsum', 'fly_ash')")
    if m.direction == "input" and m.origin is None:
        problems.append(f"{loc}.origin: required for an input meter; expected one of "
                        "'virgin', 'grid', 'secondary', 'partner'")
    if m.direction != "input" and m.origin is not None:
        hint = ""
        if m.direction == "output" and m.carrier in WASTE_CARRIERS:
            hint = (f"; where a by-product or waste goes is its fate: "
                    f"{', '.join(repr(f) for f in FATES)}")
        problems.append(f"{loc}.origin: only input meters have an origin (this is an "
                        f"{m.direction} meter){hint}")
    if m.fate is not None:
        if m.direction != "output":
            hint = "; an input meter's provenance is its origin" if m.direction == "input" else ""
            problems.append(f"{loc}.fate: only output meters have a fate (where a by-product or "
                            f"waste goes); this is an {m.direction} meter{hint}")
        elif m.carrier not in WASTE_CARRIERS:
            why = {"wastewater": " (wastewater is outside the Waste Framework Directive)",
                   "product": " (a product is not waste)"}.get(m.carrier, "")
            problems.append(f"{loc}.fate: carrier {m.carrier!r} is not a by-product or "
                            f"waste{why}; only outputs of carrier "
                            f"{' or '.join(repr(c) for c in WASTE_CARRIERS)} have a fate")
    if m.direction == "emission" and m.carrier != "co2":
        problems.append(f"{loc}.carrier: an emission meter measures 'co2', got {m.carrier!r}")
    try:
        info = unit_info(m.unit)
    except UnitError as exc:
        problems.append(f"{loc}.unit: {exc.message}")
        return None
    if info.dimension not in CARRIER_DIMENSIONS[m.carrier]:
        examples = ", ".join(f"'{CANONICAL_QUANTITY[d]}'" for d in CARRIER_DIMENSIONS[m.carrier])
        what = f"{info.dimension} per time" if info.is_rate else info.dimension
        problems.append(f"{loc}.unit: {m.unit!r} measures {what}, but {m.carrier!r} is "
                        f"metered in {' or '.join(CARRIER_DIMENSIONS[m.carrier])} (e.g. {examples})")
        return None
    if m.kind == "counter" and info.is_rate:
        problems.append(f"{loc}.unit: {m.unit!r} is a rate unit but kind is 'counter'; a counter "
                        f"needs a quantity unit such as '{CANONICAL_QUANTITY[info.dimension]}'")
        return None
    if m.kind == "rate" and not info.is_rate:
        problems.append(f"{loc}.unit: {m.unit!r} is a quantity unit but kind is 'rate'; a rate "
                        f"needs a unit per time such as '{CANONICAL_QUANTITY[info.dimension]}/h'")
        return None
    qunit = CANONICAL_QUANTITY[info.dimension]
    if m.fate is not None and m.direction == "output" and m.carrier in WASTE_CARRIERS \
            and info.dimension != "mass":
        problems.append(f"{loc}.fate: {m.unit!r} measures {info.dimension}, but waste KPIs count "
                        f"by-products and waste by mass; meter this output in a mass unit such as "
                        f"'{'t/h' if info.is_rate else 't'}' to give it a fate")

    def rate_q(field: str, value: QuantityText | None) -> float | None:
        if value is None:
            return None
        default = m.unit if m.kind == "rate" else None
        try:
            q = parse_quantity(value, default_unit=default)
        except UnitError as exc:
            problems.append(f"{loc}.{field}: {exc.message}")
            return None
        if not q.info.is_rate or q.info.dimension != info.dimension:
            problems.append(f"{loc}.{field}: {value!r} is not a rate of {info.dimension}; expected "
                            f"e.g. '{_fmt(1)} {qunit}/h'")
            return None
        if q.value < 0:
            problems.append(f"{loc}.{field}: must not be negative, got {value!r}")
            return None
        return q.value

    capacity = rate_q("capacity", m.capacity)
    nominal = rate_q("nominal", m.nominal)
    range_min, range_max = 0.0, math.inf
    if m.range is not None:
        lo, hi = (float(v) * info.scale for v in m.range)
        if not lo < hi:
            problems.append(f"{loc}.range: min must be below max, got {list(m.range)}")
        range_min, range_max = lo, hi
    rollover = float(m.rollover) * info.scale if m.rollover is not None else None
    if m.kind == "rate":
        if m.range is None:
            problems.append(f"{loc}.range: required for a rate meter: [min, max] in {m.unit!r}")
        if m.rollover is not None:
            problems.append(f"{loc}.rollover: only counter meters roll over")
        if capacity is None and m.range is not None:
            capacity = range_max
    else:
        if capacity is None and m.capacity is None:
            problems.append(f"{loc}.capacity: required for a counter meter: the largest flow, "
                            f"e.g. '50 {qunit}/h'")
        if rollover is not None:
            range_max = min(range_max, rollover)
    if capacity is not None and nominal is not None and nominal > capacity * (1 + 1e-9):
        problems.append(f"{loc}.nominal: {m.nominal!r} exceeds capacity {m.capacity or list(m.range or [])!r}")
    if len(problems) > n_before or capacity is None:
        return None
    return Meter(
        id=m.id, enterprise=m.enterprise, carrier=m.carrier, material=m.material,
        direction=m.direction, origin=m.origin, fate=m.fate, kind=m.kind, unit=m.unit,
        canonical_unit=info.canonical_unit, quantity_unit=qunit, dimension=info.dimension,
        scale=info.scale, period_s=m.period_s, range_min=range_min, range_max=range_max,
        capacity=capacity, nominal=nominal, rollover=rollover, profile=m.profile, name=m.name)


def _fmt(v: float) -> str:
    return f"{v:g}"


def _check_exchange(i: int, x: _ExchangeSpec, meter_ref: Any, used_by: dict[str, str],
                    ex_index: dict[str, int], problems: list[str]) -> Exchange | None:
    loc = f"exchanges[{i}]"
    n_before = len(problems)
    if x.id in ex_index:
        problems.append(f"{loc}.id: duplicate exchange id {x.id!r} (first at exchanges[{ex_index[x.id]}])")
        return None
    try:
        q = parse_quantity(x.nominal_rate)
    except UnitError as exc:
        problems.append(f"{loc}.nominal_rate: {exc.message}")
        q = None
    if q is not None and not q.info.is_rate:
        problems.append(f"{loc}.nominal_rate: {x.nominal_rate!r} is a quantity, expected a rate "
                        "such as '23 t/h', '200000 t/yr' or '12 MW'")
        q = None
    dim = q.info.dimension if q is not None else None
    if dim is not None and dim not in CARRIER_DIMENSIONS[x.carrier]:
        problems.append(f"{loc}.nominal_rate: {x.nominal_rate!r} is a rate of {dim} but {x.carrier!r} "
                        f"is metered in {' or '.join(CARRIER_DIMENSIONS[x.carrier])}")
        dim = None
    if x.carrier == "material" and not x.material:
        problems.append(f"{loc}.material: required for carrier 'material'")
    for role, ids, direction in (("suppliers", x.suppliers, "output"),
                                 ("consumers", x.consumers, "input")):
        for j, mid in enumerate(ids):
            mloc = f"{loc}.{role}[{j}]"
            m = meter_ref(mloc, mid)
            if m is None:
                continue
            if m.direction != direction:
                problems.append(f"{mloc}: meter {mid!r} is an {m.direction} meter; {role} must be "
                                f"{direction} meters")
            if m.carrier != x.carrier:
                problems.append(f"{mloc}: meter {mid!r} measures {m.carrier!r}, the exchange "
                                f"carries {x.carrier!r}")
            if x.material is not None and m.material is not None and m.material != x.material:
                problems.append(f"{mloc}: meter {mid!r} measures material {m.material!r}, the "
                                f"exchange carries {x.material!r}")
            if dim is not None and m.dimension != dim:
                problems.append(f"{mloc}: meter {mid!r} measures {m.dimension} ({m.unit!r}) but "
                                f"nominal_rate {x.nominal_rate!r} is a rate of {dim}; an exchange "
                                "must be metered in one dimension to stay mass-consistent")
            if role == "consumers" and m.direction == "input" and m.origin not in ("partner", "secondary"):
                problems.append(f"{mloc}: meter {mid!r} has origin {m.origin!r}; a meter receiving "
                                "an exchange must have origin 'partner' or 'secondary'")
            if mid in used_by:
                problems.append(f"{mloc}: meter {mid!r} is already part of exchange "
                                f"{used_by[mid]!r}; a meter measures one flow")
            else:
                used_by[mid] = x.id
    shares: list[float]
    if x.consumer_shares is None:
        shares = [1.0 / len(x.consumers)] * len(x.consumers)
    else:
        shares = list(x.consumer_shares)
        if len(shares) != len(x.consumers):
            problems.append(f"{loc}.consumer_shares: {len(shares)} shares for "
                            f"{len(x.consumers)} consumers")
        elif any(s < 0 for s in shares) or abs(sum(shares) - 1.0) > 1e-6:
            problems.append(f"{loc}.consumer_shares: must be non-negative and sum to 1, "
                            f"got {shares} (sum {sum(shares):g})")
    if len(problems) > n_before or q is None or dim is None:
        return None
    return Exchange(
        id=x.id, name=x.name, material=x.material, carrier=x.carrier,
        suppliers=tuple(x.suppliers), consumers=tuple(x.consumers),
        consumer_shares=tuple(shares), nominal_rate=q.value,
        quantity_unit=CANONICAL_QUANTITY[dim], dimension=dim, loss_fraction=x.loss_fraction,
        buffer_h=x.buffer_h, criticality=x.criticality, since=x.since, source=x.source,
        virgin_price=x.virgin_price, disposal_price=x.disposal_price, sharing=x.sharing)


def exchange_parties(x: Exchange, meters: Mapping[str, Meter]) -> list[str]:
    """The enterprises of an exchange: its suppliers' then its consumers', each once."""
    out: list[str] = []
    for mid in (*x.suppliers, *x.consumers):
        m = meters.get(mid)
        if m is not None and m.enterprise not in out:
            out.append(m.enterprise)
    return out


def _check_benefit(benefit: BenefitSharing | None, exchanges: list[Exchange],
                   ex_index: dict[str, int], meters: Mapping[str, Meter],
                   problems: list[str]) -> None:
    by_id = {x.id: x for x in exchanges}
    if benefit is None:
        for x in exchanges:
            if x.sharing is not None:
                problems.append(f"exchanges[{ex_index[x.id]}].sharing: declared without a "
                                "benefit_sharing section; add `benefit_sharing: {currency: EUR}` "
                                "(its default rule is proportional)")
        return
    rules: list[tuple[str, Any, list[str]]] = [
        (f"exchanges[{ex_index[x.id]}].sharing", x.sharing, exchange_parties(x, meters))
        for x in exchanges if x.sharing is not None]
    in_chain: dict[str, str] = {}
    for i, c in enumerate(benefit.chains):
        loc = f"benefit_sharing.chains[{i}]"
        for j, xid in enumerate(c.exchanges):
            if xid not in by_id:
                problems.append(f"{loc}.exchanges[{j}]: no exchange {xid!r}; exchanges are: "
                                f"{_close_ids(list(by_id))}")
            elif xid in in_chain:
                problems.append(f"{loc}.exchanges[{j}]: exchange {xid!r} is already in chain "
                                f"{in_chain[xid]!r}; an exchange is shared in one chain at most")
            else:
                in_chain[xid] = c.id
                if by_id[xid].sharing is not None:
                    problems.append(f"exchanges[{ex_index[xid]}].sharing: exchange {xid!r} is "
                                    f"shared in chain {c.id!r} (Shapley over the chain); remove "
                                    "its own rule")
    for loc, rule, parties in rules:
        shares = getattr(rule, "shares", None)
        if shares is not None and set(shares) != set(parties):
            problems.append(f"{loc}.shares: declared for {sorted(shares)} but the exchange's "
                            f"partners are {parties}; declare one share per partner")
    default_shares = getattr(benefit.rule, "shares", None)
    if default_shares is not None:
        problems.append("benefit_sharing.rule: a fixed-shares rule names enterprises, so it "
                        "cannot be the park-wide default; declare it per exchange "
                        "(exchanges[i].sharing) and use proportional or shapley here")
