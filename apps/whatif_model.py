"""The what-if scenario file (pydantic model, JSON Schema) and the park changes it applies.

`changed_park_data` turns the park file's mapping into the changed park's mapping; the park loader
then checks the result like any park file, so a change that breaks the park is reported with the
loader's paths. See docs/whatif.md for every change kind and its exact meaning.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from parkmon.errors import ParkFileError
from parkmon.units import UnitError, parse_quantity

EXAMPLES = Path(__file__).with_name("whatif_examples")
KINDS = ("remove_exchange", "emission_factor", "prices", "add_alternative", "demand",
         "add_exchange")


class _M(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RemoveExchange(_M):
    """The exchange stops for good: consumers buy virgin input, suppliers dispose of the flow."""

    kind: Literal["remove_exchange"]
    exchange: str


class EmissionFactorChange(_M):
    kind: Literal["emission_factor"]
    carrier: str
    value: float = Field(ge=0)
    unit: str
    source: str = "what-if scenario"


class PriceChange(_M):
    kind: Literal["prices"]
    exchange: str
    virgin_price: float | None = Field(default=None, ge=0)
    disposal_price: float | None = Field(default=None, ge=0)


class AddAlternative(_M):
    kind: Literal["add_alternative"]
    enterprise: str
    external: bool = False
    carrier: str
    material: str | None = None
    spare_capacity: str
    lead_time_h: float = Field(default=0.0, ge=0)
    exchanges: list[str] = []


class DemandChange(_M):
    """A consumer's demand changes by `factor` for the whole run: the exchange's nominal rate
    (its suppliers send what the consumers take) or one meter's nominal rate."""

    kind: Literal["demand"]
    exchange: str | None = None
    meter: str | None = None
    factor: float = Field(ge=0, le=100)

    @model_validator(mode="after")
    def _one_target(self) -> DemandChange:
        if (self.exchange is None) == (self.meter is None):
            raise ValueError("give exactly one of 'exchange' or 'meter'")
        return self


class AddExchange(_M):
    """A new exchange from one enterprise to another at a nominal rate. Two meters are added
    (`<from>.<id>_out`, `<to>.<id>_in`); `replaces` names the consumer's own virgin/grid input
    meter whose nominal rate falls by the same rate (the input the new flow displaces)."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)
    kind: Literal["add_exchange"]
    id: str = Field(pattern=r"^[a-z][a-z0-9_]{0,40}$")
    name: str | None = None
    from_: str = Field(alias="from")
    to: str
    carrier: str
    material: str | None = None
    rate: str
    replaces: str | None = None
    buffer_h: float = Field(default=0.0, ge=0)
    criticality: Literal["low", "medium", "high"] = "medium"
    loss_fraction: float = Field(default=0.0, ge=0, lt=1)
    virgin_price: float | None = Field(default=None, ge=0)
    disposal_price: float | None = Field(default=None, ge=0)


ParkChange = Annotated[RemoveExchange | EmissionFactorChange | PriceChange | AddAlternative
                       | DemandChange | AddExchange, Field(discriminator="kind")]


class WhatIf(_M):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    description: str = ""
    hours: float = Field(default=24.0, gt=0, le=24 * 31)
    seed: int = 1
    start: str = "2026-11-02T00:00:00Z"
    events: list[dict[str, Any]] = []
    park_changes: list[ParkChange] = []


class WhatIfError(ParkFileError):
    """A scenario file that cannot be used; one actionable line per problem."""


def load_whatif(path: str | Path) -> WhatIf:
    p = Path(path)
    if not p.is_file() and (EXAMPLES / f"{path}.yaml").is_file():
        p = EXAMPLES / f"{path}.yaml"
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        names = ", ".join(sorted(x.stem for x in EXAMPLES.glob("*.yaml")))
        raise WhatIfError(str(p), [f"{p}: file not found (shipped examples: {names})"]) from None
    except yaml.YAMLError as exc:
        raise WhatIfError(str(p), [f"(file): not valid YAML: {exc}"]) from None
    return parse_whatif(data, str(p))


def parse_whatif(data: Any, source: str = "<whatif>") -> WhatIf:
    if not isinstance(data, dict):
        raise WhatIfError(source, ["(file): expected a mapping with name, hours, events, "
                                   "park_changes"])
    try:
        return WhatIf.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ""
            for part in err["loc"]:
                if part in KINDS:
                    continue  # pydantic's union tag, not a key of the file
                loc += f"[{part}]" if isinstance(part, int) else (f".{part}" if loc else str(part))
            msg = err["msg"].removeprefix("Value error, ")
            problems.append(f"{loc or '(file)'}: {msg}, got {err.get('input')!r}")
        raise WhatIfError(source, problems) from None


def _scaled(text: Any, factor: float) -> str:
    """'200000 t/yr' x factor, in the same unit."""
    head, _, unit = str(text).strip().partition(" ")
    return f"{float(head) * factor:.12g} {unit}".strip()


def _remove_exchange(out: dict[str, Any], xid: str) -> None:
    gone = next(x for x in out["exchanges"] if x.get("id") == xid)
    # the flow stops: the consumers buy virgin input instead, the suppliers dispose of what they
    # sent (the meters go on measuring the same quantities)
    for m in out.get("meters", []):
        if m.get("id") in gone.get("consumers", []):
            m["origin"] = "virgin"
        elif m.get("id") in gone.get("suppliers", []) and m.get("carrier") in (
                "material", "biomass"):
            m["fate"] = "disposal"
    out["exchanges"] = [x for x in out["exchanges"] if x.get("id") != xid]
    for a in out.get("alternatives", []):
        if xid in a.get("exchanges", []):
            a["exchanges"] = [e for e in a["exchanges"] if e != xid]
    bs = out.get("benefit_sharing")
    if bs:
        chains = []
        for ch in bs.get("chains", []):
            xs = [e for e in ch.get("exchanges", []) if e != xid]
            if len(xs) >= 2:
                chains.append({**ch, "exchanges": xs})
        bs["chains"] = chains


def _add_exchange(out: dict[str, Any], c: AddExchange, loc: str, problems: list[str]) -> None:
    ents = {e.get("id") for e in out.get("enterprises", [])}
    meters = {m.get("id"): m for m in out.get("meters", [])}
    for field, ent in (("from", c.from_), ("to", c.to)):
        if ent not in ents:
            problems.append(f"{loc}.{field}: no enterprise {ent!r}; enterprises are: "
                            f"{', '.join(sorted(str(e) for e in ents))}")
    if c.id in {x.get("id") for x in out.get("exchanges", [])}:
        problems.append(f"{loc}.id: exchange {c.id!r} exists already")
    try:
        rate = parse_quantity(c.rate)
    except UnitError as exc:
        problems.append(f"{loc}.rate: {exc.message}")
        return
    if not rate.info.is_rate:
        problems.append(f"{loc}.rate: {c.rate!r} is a quantity, expected a rate such as '2 t/h'")
        return
    if c.replaces is not None:
        m = meters.get(c.replaces)
        if m is None or m.get("enterprise") != c.to or m.get("direction") != "input":
            problems.append(f"{loc}.replaces: {c.replaces!r} is not an input meter of {c.to!r}")
        else:
            cap = m.get("capacity") or m.get("nominal")
            nominal = m.get("nominal") or (_scaled(cap, 0.6) if cap else None)
            try:
                nom = parse_quantity(nominal) if nominal else None
            except UnitError:
                nom = None
            if nom is None or nom.info.canonical_unit != rate.info.canonical_unit:
                problems.append(f"{loc}.replaces: {c.replaces!r} has no nominal rate in "
                                f"{rate.info.canonical_unit} to reduce by {c.rate!r}")
            else:
                left = nom.value - rate.value
                if left < -1e-9 * max(1.0, nom.value):
                    problems.append(f"{loc}.rate: {c.rate!r} is more than {c.replaces!r}'s "
                                    f"nominal {nominal!r}")
                else:
                    m["nominal"] = f"{max(0.0, left):.12g} {nom.info.canonical_unit}"
    if problems:
        return
    unit = c.rate.strip().partition(" ")[2]
    common = {"carrier": c.carrier, "kind": "rate", "unit": unit,
              "range": [0, float(c.rate.split()[0]) * 2]}
    if c.material:
        common["material"] = c.material
    out.setdefault("meters", []).extend([
        {"id": f"{c.from_}.{c.id}_out", "enterprise": c.from_, "direction": "output",
         "name": f"what-if: {c.id} supply", **common},
        {"id": f"{c.to}.{c.id}_in", "enterprise": c.to, "direction": "input",
         "origin": "partner", "name": f"what-if: {c.id} delivery", **common}])
    x: dict[str, Any] = {"id": c.id, "name": c.name or f"what-if: {c.from_} -> {c.to}",
                         "carrier": c.carrier, "suppliers": [f"{c.from_}.{c.id}_out"],
                         "consumers": [f"{c.to}.{c.id}_in"], "nominal_rate": c.rate,
                         "loss_fraction": c.loss_fraction, "buffer_h": c.buffer_h,
                         "criticality": c.criticality, "source": "what-if scenario"}
    if c.material:
        x["material"] = c.material
    for k in ("virgin_price", "disposal_price"):
        if getattr(c, k) is not None:
            x[k] = getattr(c, k)
    out.setdefault("exchanges", []).append(x)


def baseline_park_data(data: dict[str, Any], changes: list[Any]) -> dict[str, Any]:
    """The baseline park: the declared park, plus the meters a new exchange adds, idle (nominal
    0, in no exchange). The simulator then draws the same noise for every meter in both runs, so
    a delta is the change's effect and not a reshuffled random stream."""
    out = copy.deepcopy(data)
    probe = changed_park_data(data, [c for c in changes if isinstance(c, AddExchange)])
    known = {m.get("id") for m in out.get("meters", [])}
    for m in probe.get("meters", []):
        if m.get("id") not in known:
            out.setdefault("meters", []).append({**m, "nominal": f"0 {m['unit']}",
                                                 "name": f"{m['name']} (idle in the baseline)"})
    return out


def changed_park_data(data: dict[str, Any], changes: list[Any]) -> dict[str, Any]:
    """The park file's mapping with the changes applied (validated afterwards by the loader)."""
    out = copy.deepcopy(data)
    problems: list[str] = []
    for i, c in enumerate(changes):
        loc = f"park_changes[{i}]"
        ids = [x.get("id") for x in out.get("exchanges", [])]
        xid = getattr(c, "exchange", None)
        if isinstance(c, RemoveExchange | PriceChange | DemandChange) and xid is not None \
                and xid not in ids:
            problems.append(f"{loc}.exchange: no exchange {xid!r}; exchanges are: "
                            f"{', '.join(str(x) for x in ids)}")
            continue
        if isinstance(c, RemoveExchange):
            _remove_exchange(out, c.exchange)
        elif isinstance(c, EmissionFactorChange):
            out.setdefault("emission_factors", {})[c.carrier] = {
                "value": c.value, "unit": c.unit, "source": c.source}
        elif isinstance(c, PriceChange):
            x = next(x for x in out["exchanges"] if x.get("id") == c.exchange)
            if c.virgin_price is not None:
                x["virgin_price"] = c.virgin_price
            if c.disposal_price is not None:
                x["disposal_price"] = c.disposal_price
        elif isinstance(c, DemandChange):
            if c.exchange is not None:
                x = next(x for x in out["exchanges"] if x.get("id") == c.exchange)
                x["nominal_rate"] = _scaled(x["nominal_rate"], c.factor)
            else:
                m = next((m for m in out.get("meters", []) if m.get("id") == c.meter), None)
                if m is None:
                    problems.append(f"{loc}.meter: no meter {c.meter!r}")
                elif m.get("nominal") is None and m.get("capacity") is None:
                    problems.append(f"{loc}.meter: {c.meter!r} declares neither nominal nor "
                                    "capacity; scale its exchange instead")
                else:
                    base = m.get("nominal") or _scaled(m["capacity"], 0.6)
                    m["nominal"] = _scaled(base, c.factor)
        elif isinstance(c, AddExchange):
            _add_exchange(out, c, loc, problems)
        else:
            out.setdefault("alternatives", []).append(c.model_dump(exclude={"kind"}))
    if problems:
        raise WhatIfError("park_changes", problems)
    return out
