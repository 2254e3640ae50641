"""Benefit sharing: who is credited with what an exchange saves (pure, no I/O).

An exchange avoids CO2 (computed against its baseline, see docs/kpis.md) and saves money
(`avoided_cost_by_party`: each side's declared avoided cost, e.g. the virgin input the consumer no
longer buys, the disposal the supplier no longer pays). A sharing rule turns the two totals into one
`Credit` per party; whatever the rule, the credits add up to the totals.

Rules (frozen pydantic models, so a park file can declare them later by `kind`):

- `FixedShares(shares)`: party i gets `shares[i]` of both totals (shares >= 0, sum 1 within 1e-9).
- `Proportional()`: weight of i = avoided_cost_i / sum(avoided_cost); equal split when all are 0.
- `Shapley(links, synergy)`: weight of i = phi_i / v(N), phi the Shapley value of the coalition game
  v; equal split when v(N) == 0. Without links every party is essential (v(S) = total when S holds
  all parties, else 0), which gives the equal split. With links, v is `chain_value(links, synergy)`.

Chain coalition value (`chain_value`): a chain A->B->C is the links A->B and B->C, each with the
savings it realises. A link's savings are realised only when both its ends are in the coalition:
    v(S) = sum(link.savings for links with supplier and consumer in S)
           + synergy if S holds every party of the chain, else 0.
For this game each link's savings are split half and half between its two ends and the synergy
equally between all parties of the chain, so a middle party is credited for both of its links.

Shapley values (`shapley_values`): exact enumeration of the 2^n coalitions when n <= exact_max (8 by
default: 256 coalitions), otherwise the mean marginal contribution over `samples` random
permutations (seeded). Each permutation's marginals sum to v(N) - v({}), so the estimate is
efficient exactly. Error bound (Hoeffding, union bound over the n players, 95 %): with every
marginal contribution in [lo, hi],
    P(max_i |phi_hat_i - phi_i| >= eps) <= 0.05  for  eps = (hi - lo) * sqrt(ln(2 n / 0.05) / (2 m)),
m = samples. The range is `marginal_range` when given (chain games give a certain one, see
`chain_marginal_range`), otherwise the observed range of the sampled marginals (an estimate).
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from parkmon.park.sharing import (  # the rules are park-file declarations (domain)
    SHARE_SUM_TOLERANCE,
    AllocationError,
    ChainLink,
    FixedShares,
    Proportional,
    Shapley,
    SharingRule,
)

CONFIDENCE = 0.95
__all__ = ["SHARE_SUM_TOLERANCE", "AllocationError", "ChainLink", "Credit", "FixedShares",
           "Proportional", "Shapley", "SharingRule", "allocate_exchange", "allocate_park",
           "chain_marginal_range", "chain_value", "hoeffding_bound", "shapley_values",
           "sharing_weights"]


@dataclass(frozen=True)
class Credit:
    """What one enterprise is credited with: avoided CO2 (kg) and savings (park currency)."""

    enterprise: str
    avoided_co2_kg: float
    savings: float

    def __add__(self, other: Credit) -> Credit:
        if other.enterprise != self.enterprise:
            raise AllocationError("Credit", [
                f"cannot add the credit of {other.enterprise!r} to that of {self.enterprise!r}"])
        return Credit(self.enterprise, self.avoided_co2_kg + other.avoided_co2_kg,
                      self.savings + other.savings)


ValueFn = Callable[[frozenset[str]], float]


def chain_value(links: Sequence[ChainLink], synergy: float = 0.0) -> ValueFn:
    """v(S) = savings of the links with both ends in S, + synergy when S holds the whole chain."""
    links = tuple(links)
    everyone = frozenset(p for link in links for p in (link.supplier, link.consumer))

    def v(coalition: frozenset[str]) -> float:
        total = math.fsum(link.savings for link in links
                          if link.supplier in coalition and link.consumer in coalition)
        if everyone and everyone <= coalition:
            total += synergy
        return total

    return v


def chain_marginal_range(links: Sequence[ChainLink], synergy: float = 0.0) -> tuple[float, float]:
    """A certain [lo, hi] for any player's marginal contribution to `chain_value(links, synergy)`."""
    lo = hi = 0.0
    players = {p for link in links for p in (link.supplier, link.consumer)}
    for p in players:
        touching = [link.savings for link in links if p in (link.supplier, link.consumer)]
        lo = min(lo, math.fsum(s for s in touching if s < 0) + min(0.0, synergy))
        hi = max(hi, math.fsum(s for s in touching if s > 0) + max(0.0, synergy))
    return lo, hi


def hoeffding_bound(n_players: int, samples: int, value_range: float,
                    confidence: float = CONFIDENCE) -> float:
    """eps such that all n sampled Shapley values are within eps of the exact ones w.p. >= confidence."""
    alpha = 1.0 - confidence
    return value_range * math.sqrt(math.log(2 * n_players / alpha) / (2 * samples))


def shapley_values(players: Sequence[str], value_fn: ValueFn, *, exact_max: int = 8,
                   samples: int = 2000, seed: int = 0,
                   marginal_range: tuple[float, float] | None = None,
                   ) -> tuple[dict[str, float], float]:
    """(Shapley value per player, error bound): exact (bound 0.0) for n <= exact_max, else sampled."""
    players = list(players)
    if len(set(players)) != len(players):
        raise AllocationError("shapley", [f"players {players} repeat a name: list each once"])
    n = len(players)
    if n == 0:
        return {}, 0.0
    cache: dict[frozenset[str], float] = {}

    def v(s: frozenset[str]) -> float:
        if s not in cache:
            cache[s] = float(value_fn(s))
        return cache[s]

    if n <= exact_max:
        fact = [math.factorial(k) for k in range(n + 1)]
        phi: dict[str, float] = {}
        for i in players:
            others = [p for p in players if p != i]
            terms = []
            for size in range(n):
                weight = fact[size] * fact[n - size - 1] / fact[n]
                for combo in itertools.combinations(others, size):
                    s = frozenset(combo)
                    terms.append(weight * (v(s | {i}) - v(s)))
            phi[i] = math.fsum(terms)
        return phi, 0.0

    if samples < 1:
        raise AllocationError("shapley", [f"samples={samples}: expected at least 1 permutation"])
    rng = random.Random(seed)
    sums: dict[str, list[float]] = {p: [] for p in players}
    lo_seen, hi_seen = math.inf, -math.inf
    order = list(players)
    for _ in range(samples):
        rng.shuffle(order)
        coalition: frozenset[str] = frozenset()
        before = v(coalition)
        for p in order:
            coalition = coalition | {p}
            after = v(coalition)
            delta = after - before
            sums[p].append(delta)
            lo_seen, hi_seen = min(lo_seen, delta), max(hi_seen, delta)
            before = after
    lo, hi = marginal_range if marginal_range is not None else (lo_seen, hi_seen)
    return ({p: math.fsum(d) / samples for p, d in sums.items()},
            hoeffding_bound(n, samples, hi - lo))


def _check_inputs(parties: Sequence[str], avoided_co2_kg: float,
                  avoided_cost_by_party: Mapping[str, float]) -> list[str]:
    problems = []
    if not parties:
        problems.append("no parties: an exchange has at least a supplier and a consumer")
    if len(set(parties)) != len(parties):
        problems.append(f"parties {list(parties)} repeat a name: list each once")
    if not math.isfinite(avoided_co2_kg):
        problems.append(f"avoided_co2_kg is {avoided_co2_kg!r}: expected a finite number")
    unknown = sorted(set(avoided_cost_by_party) - set(parties))
    if unknown:
        problems.append(f"avoided cost declared for {unknown}, not parties of the exchange "
                        f"{list(parties)}")
    problems += [f"avoided cost of {p!r} is {c!r}: expected a finite number"
                 for p, c in sorted(avoided_cost_by_party.items()) if not math.isfinite(c)]
    return problems


def sharing_weights(rule: SharingRule, parties: Sequence[str],
                    avoided_cost_by_party: Mapping[str, float]) -> dict[str, float]:
    """The fraction of both totals each party is credited with under `rule` (sums to 1)."""
    parties = list(parties)
    n = len(parties)
    if isinstance(rule, FixedShares):
        missing = sorted(set(parties) - set(rule.shares))
        extra = sorted(set(rule.shares) - set(parties))
        if missing or extra:
            raise AllocationError("sharing rule 'fixed'", [
                f"shares are declared for {sorted(rule.shares)} but the exchange's parties are "
                f"{sorted(parties)} (missing {missing}, unknown {extra}): declare one share per party"])
        return {p: rule.shares[p] for p in parties}
    if isinstance(rule, Proportional):
        costs = {p: float(avoided_cost_by_party.get(p, 0.0)) for p in parties}
        negative = sorted(p for p, c in costs.items() if c < 0)
        if negative:
            raise AllocationError("sharing rule 'proportional'", [
                f"avoided cost of {negative} is negative: proportional sharing needs costs >= 0; "
                "use fixed shares or Shapley for an exchange that costs one side"])
        total = math.fsum(costs.values())
        if total == 0:
            return {p: 1.0 / n for p in parties}
        return {p: c / total for p, c in costs.items()}
    # Shapley
    if rule.links:
        outside = sorted({q for link in rule.links for q in (link.supplier, link.consumer)}
                         - set(parties))
        if outside:
            raise AllocationError("sharing rule 'shapley'", [
                f"chain links name {outside}, not parties of the exchange {parties}"])
        value_fn = chain_value(rule.links, rule.synergy)
        marginal_range: tuple[float, float] | None = chain_marginal_range(rule.links, rule.synergy)
    else:
        everyone = frozenset(parties)

        def value_fn(s: frozenset[str]) -> float:
            return 1.0 if s == everyone else 0.0

        marginal_range = (0.0, 1.0)
    phi, _ = shapley_values(parties, value_fn, exact_max=rule.exact_max, samples=rule.samples,
                            seed=rule.seed, marginal_range=marginal_range)
    grand = math.fsum(phi.values())
    if abs(grand) <= 1e-12 * math.fsum(abs(x) for x in phi.values()):
        return {p: 1.0 / n for p in parties}
    return {p: phi[p] / grand for p in parties}


def allocate_exchange(rule: SharingRule, parties: Sequence[str], avoided_co2_kg: float,
                      avoided_cost_by_party: Mapping[str, float]) -> dict[str, Credit]:
    """One `Credit` per party: its weight under `rule` of the avoided CO2 and of the total savings
    (sum of `avoided_cost_by_party`; a party without a declared cost counts 0)."""
    problems = _check_inputs(parties, avoided_co2_kg, avoided_cost_by_party)
    if problems:
        raise AllocationError("allocate_exchange", problems)
    weights = sharing_weights(rule, parties, avoided_cost_by_party)
    savings = math.fsum(avoided_cost_by_party.values())
    return {p: Credit(p, w * avoided_co2_kg, w * savings) for p, w in weights.items()}


def allocate_park(results: Iterable[Mapping[str, Credit]]) -> dict[str, Credit]:
    """Credits per enterprise summed over per-exchange results (each from `allocate_exchange`)."""
    co2: dict[str, list[float]] = {}
    money: dict[str, list[float]] = {}
    for result in results:
        for credit in result.values():
            co2.setdefault(credit.enterprise, []).append(credit.avoided_co2_kg)
            money.setdefault(credit.enterprise, []).append(credit.savings)
    return {e: Credit(e, math.fsum(co2[e]), math.fsum(money[e])) for e in co2}
