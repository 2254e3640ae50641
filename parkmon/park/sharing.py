"""Benefit-sharing declarations of a park file (domain: plain data, validated on load).

What the rules mean and how credits are computed is in streams/core/allocation.py and
docs/kpis.md ("Benefit sharing"); the park-file syntax is in docs/park-file.md.

Park file:

    benefit_sharing:              # optional; without it no credits are computed
      currency: EUR
      rule: {kind: proportional}  # park-wide default: fixed | proportional | shapley
      chains:                     # multi-party chains shared by the Shapley value as a whole
        - id: energy_chain
          exchanges: [steam, district_heat]
          synergy: 0.1            # whole-chain extra value, as a fraction of its links' value
    exchanges:
      - id: gypsum
        ...
        virgin_price: 30          # currency per canonical unit (t, MWh, m3) the consumer no longer buys
        disposal_price: 15        # currency per unit the supplier no longer pays to dispose of
        sharing: {kind: fixed, shares: {asnaes: 0.6, gyproc: 0.4}}   # overrides the default
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from parkmon.errors import ParkFileError

SHARE_SUM_TOLERANCE = 1e-9


class AllocationError(ParkFileError):
    """A sharing rule or its inputs cannot be applied. `problems` holds one actionable line each."""

    def __init__(self, where: str, problems: list[str]) -> None:
        super().__init__(where, problems)


@dataclass(frozen=True)
class ChainLink:
    """One link of a multi-party chain: `supplier` -> `consumer`, realising `savings`."""

    supplier: str
    consumer: str
    savings: float


class _Rule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FixedShares(_Rule):
    kind: Literal["fixed"] = "fixed"
    shares: dict[str, float]

    @model_validator(mode="after")
    def _check(self) -> FixedShares:
        problems = [f"share of {p!r} is {s!r}: expected a finite number >= 0"
                    for p, s in sorted(self.shares.items()) if not (math.isfinite(s) and s >= 0)]
        total = math.fsum(self.shares.values())
        if not problems and abs(total - 1.0) > SHARE_SUM_TOLERANCE:
            listed = ", ".join(f"{p}={s:g}" for p, s in sorted(self.shares.items()))
            problems.append(f"shares {listed} sum to {total:.12g}: expected 1 "
                            f"(within {SHARE_SUM_TOLERANCE:g}); rescale them or fix one")
        if not self.shares:
            problems.append("no shares: declare one share per party of the exchange")
        if problems:
            raise AllocationError("sharing rule 'fixed'", problems)
        return self


class Proportional(_Rule):
    kind: Literal["proportional"] = "proportional"


class Shapley(_Rule):
    kind: Literal["shapley"] = "shapley"
    links: tuple[ChainLink, ...] = ()
    synergy: float = 0.0
    exact_max: int = 8
    samples: int = 2000
    seed: int = 0

SharingRule = FixedShares | Proportional | Shapley


class Chain(BaseModel):
    """Exchanges whose benefit is shared over all their partners by the Shapley value."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    id: str
    exchanges: tuple[str, ...] = Field(min_length=2)
    #: extra value only the whole chain realises, as a fraction of the sum of its links' values
    synergy: float = Field(default=0.0, ge=0.0)
    exact_max: int = Field(default=8, ge=1, le=16)
    samples: int = Field(default=2000, ge=100)
    seed: int = 0


class BenefitSharing(BaseModel):
    """The park-wide part of the declaration: currency, default rule, chains."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    currency: str = "EUR"
    rule: SharingRule = Field(default_factory=Proportional, discriminator="kind")
    chains: tuple[Chain, ...] = ()
