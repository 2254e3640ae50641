"""Benefit sharing per exchange (streams/core/allocation.py): hand-computed cases and properties."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parkmon.errors import ParkFileError
from streams.core.allocation import (
    AllocationError,
    ChainLink,
    Credit,
    FixedShares,
    Proportional,
    Shapley,
    allocate_exchange,
    allocate_park,
    chain_marginal_range,
    chain_value,
    shapley_values,
)

pytestmark = pytest.mark.unit

# Three-party chain: the refinery's waste heat warms the fish farm (A->B), whose sludge feeds the
# biogas plant (B->C). Link savings 90 and 30, synergy 30 when the whole chain runs.
A, B, C = "refinery", "fishfarm", "biogas"
CHAIN = Shapley(links=(ChainLink(A, B, 90.0), ChainLink(B, C, 30.0)), synergy=30.0)


def test_fixed_shares_split_both_totals():
    # 300 kg and savings 100 + 50 = 150 split 0.7 / 0.3:
    # supplier 0.7 * 300 = 210 kg, 0.7 * 150 = 105; consumer 0.3 * 300 = 90 kg, 0.3 * 150 = 45
    got = allocate_exchange(FixedShares(shares={"sup": 0.7, "con": 0.3}), ["sup", "con"],
                            300.0, {"sup": 100.0, "con": 50.0})
    assert got["sup"] == Credit("sup", pytest.approx(210.0), pytest.approx(105.0))
    assert got["con"] == Credit("con", pytest.approx(90.0), pytest.approx(45.0))


def test_proportional_to_avoided_cost_and_equal_when_all_zero():
    # costs 30 / 90: weights 30/120 = 0.25 and 0.75; 200 kg -> 50 / 150 kg; savings 120 -> 30 / 90
    got = allocate_exchange(Proportional(), ["sup", "con"], 200.0, {"sup": 30.0, "con": 90.0})
    assert (got["sup"].avoided_co2_kg, got["sup"].savings) == pytest.approx((50.0, 30.0))
    assert (got["con"].avoided_co2_kg, got["con"].savings) == pytest.approx((150.0, 90.0))
    # nothing saved in money: 200 kg split equally, 100 each, savings 0
    zero = allocate_exchange(Proportional(), ["sup", "con"], 200.0, {})
    assert [(c.avoided_co2_kg, c.savings) for c in zero.values()] == [(100.0, 0.0)] * 2


def test_exact_shapley_on_the_chain_hand_computed():
    # v({})=v(A)=v(B)=v(C)=0, v(AB)=90, v(BC)=30, v(AC)=0, v(ABC)=90+30+30=150.
    # phi_A = 1/3*0 [A first] + 1/6*(v(AB)-v(B)) + 1/6*(v(AC)-v(C)) + 1/3*(v(ABC)-v(BC))
    #       = 0 + 15 + 0 + 1/3*120 = 55
    # phi_C = 0 + 1/6*(v(BC)-v(B)) + 1/6*(v(AC)-v(A)) + 1/3*(v(ABC)-v(AB)) = 5 + 0 + 20 = 25
    # phi_B = 150 - 55 - 25 = 70 (= 90/2 + 30/2 + 30/3: each link halved, synergy in thirds)
    phi, bound = shapley_values([A, B, C], chain_value(CHAIN.links, CHAIN.synergy))
    assert bound == 0.0
    assert phi == {A: pytest.approx(55.0), B: pytest.approx(70.0), C: pytest.approx(25.0)}


def test_shapley_split_differs_from_proportional_on_the_chain():
    # declared avoided costs A 30 (disposal), B 90 (feed and heat), C 30 (substrate): total 150,
    # avoided CO2 300 kg.
    costs = {A: 30.0, B: 90.0, C: 30.0}
    # proportional: 30/150 = 0.2, 0.6, 0.2 -> 60 / 180 / 60 kg, 30 / 90 / 30
    prop = allocate_exchange(Proportional(), [A, B, C], 300.0, costs)
    # Shapley: 55/150, 70/150, 25/150 of 300 kg -> 110 / 140 / 50 kg; of 150 -> 55 / 70 / 25
    shap = allocate_exchange(CHAIN, [A, B, C], 300.0, costs)
    assert [prop[p].avoided_co2_kg for p in (A, B, C)] == pytest.approx([60.0, 180.0, 60.0])
    assert [shap[p].avoided_co2_kg for p in (A, B, C)] == pytest.approx([110.0, 140.0, 50.0])
    assert [shap[p].savings for p in (A, B, C)] == pytest.approx([55.0, 70.0, 25.0])
    assert [prop[p].savings for p in (A, B, C)] == pytest.approx([30.0, 90.0, 30.0])


def test_shapley_without_links_treats_both_sides_as_essential():
    # v(S) = total only with both: phi = 1/2 each whatever the declared costs (10 vs 90)
    got = allocate_exchange(Shapley(), ["sup", "con"], 80.0, {"sup": 10.0, "con": 90.0})
    assert [(c.avoided_co2_kg, c.savings) for c in got.values()] == [(40.0, 50.0)] * 2


def test_sampled_shapley_within_its_bound_for_ten_players():
    # chain P0->P1->...->P9 with uneven link savings and a synergy for the whole chain, plus a
    # cross link P0->P9 so it is not a plain path
    players = [f"P{i}" for i in range(10)]
    links = [ChainLink(players[i], players[i + 1], float(10 * (i % 4) + 5)) for i in range(9)]
    links.append(ChainLink("P0", "P9", 40.0))
    v = chain_value(links, synergy=100.0)
    exact, zero = shapley_values(players, v, exact_max=10)
    assert zero == 0.0
    sampled, bound = shapley_values(players, v, exact_max=8, samples=2000, seed=7,
                                    marginal_range=chain_marginal_range(links, 100.0))
    lo, hi = chain_marginal_range(links, 100.0)
    # Hoeffding + union bound: (hi - lo) * sqrt(ln(2 * 10 / 0.05) / (2 * 2000))
    assert bound == pytest.approx((hi - lo) * math.sqrt(math.log(400) / 4000))
    assert 0 < bound < 15
    assert max(abs(sampled[p] - exact[p]) for p in players) <= bound
    # sampling keeps efficiency: the estimates sum to v(N)
    assert math.fsum(sampled.values()) == pytest.approx(v(frozenset(players)))
    # and it is not the exact answer by accident
    assert sampled != exact


def test_allocate_park_sums_per_enterprise():
    # exchange 1: A 210 kg / 105, B 90 kg / 45; exchange 2: B 10 kg / 1, C 5 kg / 2
    # -> A 210 / 105, B 100 / 46, C 5 / 2
    got = allocate_park([{A: Credit(A, 210.0, 105.0), B: Credit(B, 90.0, 45.0)},
                         {B: Credit(B, 10.0, 1.0), C: Credit(C, 5.0, 2.0)}])
    assert got == {A: Credit(A, 210.0, 105.0), B: Credit(B, 100.0, 46.0), C: Credit(C, 5.0, 2.0)}


# -- errors ---------------------------------------------------------------------------------


def test_shares_not_summing_to_one_name_shares_and_sum():
    with pytest.raises(AllocationError) as err:
        FixedShares(shares={"sup": 0.6, "con": 0.3})
    msg = str(err.value)
    assert "con=0.3" in msg and "sup=0.6" in msg and "sum to 0.9" in msg and "expected 1" in msg
    assert isinstance(err.value, ParkFileError)


def test_negative_share_is_named():
    with pytest.raises(AllocationError, match=r"share of 'con' is -0.5: expected a finite number >= 0"):
        FixedShares(shares={"sup": 1.5, "con": -0.5})


def test_shares_for_other_parties_are_named():
    rule = FixedShares(shares={"sup": 0.5, "other": 0.5})
    with pytest.raises(AllocationError, match=r"missing \['con'\], unknown \['other'\]"):
        allocate_exchange(rule, ["sup", "con"], 1.0, {})


def test_proportional_refuses_negative_costs_and_says_what_to_use():
    with pytest.raises(AllocationError, match=r"\['con'\] is negative.*use fixed shares or Shapley"):
        allocate_exchange(Proportional(), ["sup", "con"], 1.0, {"sup": 5.0, "con": -1.0})


def test_costs_for_unknown_parties_and_links_outside_are_named():
    with pytest.raises(AllocationError, match=r"avoided cost declared for \['ghost'\]"):
        allocate_exchange(Proportional(), ["sup", "con"], 1.0, {"ghost": 5.0})
    with pytest.raises(AllocationError, match=r"chain links name \['ghost'\]"):
        allocate_exchange(Shapley(links=(ChainLink("sup", "ghost", 1.0),)), ["sup", "con"], 1.0, {})


# -- properties: credits always add up to the whole ---------------------------------------------

names = st.lists(st.sampled_from([f"e{i}" for i in range(12)]), min_size=1, max_size=10,
                 unique=True)
amount = st.floats(0, 1e6, allow_nan=False, allow_infinity=False)


@st.composite
def exchanges(draw):
    parties = draw(names)
    costs = {p: draw(amount) for p in parties}
    co2 = draw(st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False))
    kind = draw(st.sampled_from(["fixed", "proportional", "shapley", "chain"]))
    if kind == "fixed":
        raw = [draw(st.floats(0.01, 100)) for _ in parties]
        shares = {p: r / math.fsum(raw) for p, r in zip(parties, raw, strict=True)}
        drift = math.fsum(shares.values()) - 1.0
        shares[parties[0]] -= drift
        rule = FixedShares(shares=shares)
    elif kind == "proportional":
        rule = Proportional()
    elif kind == "shapley":
        rule = Shapley()
    else:
        links = tuple(ChainLink(a, b, draw(st.floats(-100, 1000)))
                      for a, b in zip(parties, parties[1:], strict=False))
        rule = Shapley(links=links, synergy=draw(st.floats(0, 100)), exact_max=6, samples=200)
    return rule, parties, co2, costs


@settings(max_examples=150, deadline=None)
@given(case=exchanges())
def test_credits_add_up_to_the_whole_for_every_rule(case):
    rule, parties, co2, costs = case
    got = allocate_exchange(rule, parties, co2, costs)
    assert sorted(got) == sorted(parties)
    assert all(c.enterprise == p for p, c in got.items())
    total_savings = math.fsum(costs.values())
    tol = 1e-9 * len(parties)
    assert math.fsum(c.avoided_co2_kg for c in got.values()) == pytest.approx(co2, rel=tol, abs=tol)
    assert math.fsum(c.savings for c in got.values()) == pytest.approx(
        total_savings, rel=tol, abs=tol)
    # and the park total over several exchanges is the sum of theirs
    park = allocate_park([got, got])
    assert math.fsum(c.savings for c in park.values()) == pytest.approx(
        2 * total_savings, rel=tol, abs=tol)
