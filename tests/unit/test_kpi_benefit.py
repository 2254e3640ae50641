"""Benefit-sharing KPIs per window (streams/core/kpis/benefit.py) on the hand-made park of
streams_test_park.py: P power station, G plasterboard, R refinery, N pharma. Every expected figure
below is worked out by hand from that park's quantities (one window)."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from streams_test_park import model, quantities

from parkmon.park.sharing import BenefitSharing, Chain, FixedShares, Proportional, Shapley
from streams.core.aggregates import Aggregate
from streams.core.kpis import benefit, compute_all
from streams.core.model import KpiModel

pytestmark = pytest.mark.unit

M0 = model()


def priced(rule=None, chains=(), steam_rule=None) -> KpiModel:
    """Gypsum: G no longer buys virgin gypsum at 20/t, P no longer pays 5/t to dispose of it.
    Refinery gas: P no longer buys 10/MWh of natural gas. Steam, water: no prices."""
    xs = []
    for x in M0.exchanges:
        if x.id == "X_gyp":
            x = dataclasses.replace(x, virgin_price=20.0, disposal_price=5.0)
        elif x.id == "X_gas":
            x = dataclasses.replace(x, virgin_price=10.0)
        elif x.id == "X_steam" and steam_rule is not None:
            x = dataclasses.replace(x, sharing=steam_rule)
        xs.append(x)
    return dataclasses.replace(M0, exchanges=tuple(xs), selection_cache={},
                               benefit=BenefitSharing(rule=rule or Proportional(),
                                                      chains=tuple(chains)))


def test_no_declaration_no_credit_fields():
    park, ents, xs = benefit.compute(M0, quantities(M0))
    assert (park, ents, xs) == ({}, {}, {})
    assert not any("credited_savings" in v for _, _, v in compute_all(M0, quantities(M0)))


def test_proportional_credits_follow_each_sides_avoided_cost():
    m = priced()
    park, ents, xs = benefit.compute(m, quantities(m))
    # gypsum: G 28 t x 20 = 560, P 30 t x 5 = 150; refinery gas: P 20 MWh x 10 = 200
    assert xs["X_gyp"]["savings"] == pytest.approx(710.0)
    assert xs["X_gas"]["savings"] == pytest.approx(200.0)
    assert xs["X_steam"]["savings"] == 0.0 and park["savings"] == pytest.approx(910.0)
    # avoided CO2: gypsum 28 x 0.008 = 0.224 split 150:560; steam 7.85 split equally (no prices)
    assert ents["P"]["credited_avoided_t_co2e"] == pytest.approx(0.224 * 150 / 710 + 7.85 / 2)
    assert ents["G"]["credited_avoided_t_co2e"] == pytest.approx(0.224 * 560 / 710)
    assert ents["N"]["credited_avoided_t_co2e"] == pytest.approx(7.85 / 2)
    # refinery gas: R avoids nothing, P avoids 200: proportional gives R nothing at all
    assert ents["R"] == {"credited_avoided_t_co2e": 0.0, "credited_savings": 0.0}
    assert ents["P"]["credited_savings"] == pytest.approx(150 + 200)
    assert ents["G"]["credited_savings"] == pytest.approx(560)


def test_an_exchanges_own_fixed_shares_override_the_default():
    m = priced(steam_rule=FixedShares(shares={"P": 0.7, "N": 0.3}))
    _, ents, _ = benefit.compute(m, quantities(m))
    assert ents["N"]["credited_avoided_t_co2e"] == pytest.approx(0.3 * 7.85)
    assert ents["P"]["credited_avoided_t_co2e"] == pytest.approx(0.224 * 150 / 710 + 0.7 * 7.85)


def test_three_party_chain_shapley_credits_the_enabler_unlike_proportional():
    """Chain R -> P -> G: refinery gas (link R-P worth 200) and gypsum (link P-G worth 710).
    Shapley of the chain game: each link half and half between its ends:
    R = 100, P = 100 + 355 = 455, G = 355 (of 910). Proportional gives R 0, P 350, G 560."""
    m = priced(chains=[Chain(id="rpg", exchanges=("X_gas", "X_gyp"))])
    _, ents, _ = benefit.compute(m, quantities(m))
    assert ents["R"]["credited_savings"] == pytest.approx(100.0)
    assert ents["P"]["credited_savings"] == pytest.approx(455.0)
    assert ents["G"]["credited_savings"] == pytest.approx(355.0)
    assert ents["R"]["credited_avoided_t_co2e"] == pytest.approx(0.224 * 100 / 910)
    prop = benefit.compute(priced(), quantities(m))[1]
    assert prop["R"]["credited_savings"] == 0.0 and prop["G"]["credited_savings"] == 560.0
    # a synergy of 10 % of the links' value (91) is realised by the whole chain only: 91 / 3 each
    syn = priced(chains=[Chain(id="rpg", exchanges=("X_gas", "X_gyp"), synergy=0.1)])
    s_ents = benefit.compute(syn, quantities(syn))[1]
    assert s_ents["R"]["credited_savings"] == pytest.approx(910 * (100 + 91 / 3) / 1001)


def test_credits_are_part_of_every_window_result():
    m = priced(rule=Shapley())
    rows = {(s, e): v for s, e, v in compute_all(m, quantities(m))}
    assert rows[("park", "testpark")]["savings"] == pytest.approx(910.0)
    assert rows[("exchange", "X_gyp")]["savings"] == pytest.approx(710.0)
    # Shapley without chain links: every partner is essential, equal split per exchange
    assert rows[("enterprise", "G")]["credited_savings"] == pytest.approx(355.0)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0, 1e4, allow_nan=False), min_size=4, max_size=4),
       st.sampled_from(["proportional", "shapley", "chain"]))
def test_credits_always_add_up_to_the_parks_totals(qs: list[float], kind: str):
    rule = Shapley() if kind == "shapley" else Proportional()
    chains = [Chain(id="c", exchanges=("X_gas", "X_gyp"), synergy=0.2)] if kind == "chain" else []
    m = priced(rule=rule, chains=chains)
    q = quantities(m)
    for mid, v in zip(["P.gypsum", "G.gypsum_in", "R.gas_out", "P.gas_in"], qs, strict=True):
        q[mid] = Aggregate.of(0, v, v).with_co2e(m.co2e_t(m.meters[mid], v, 0))
    park, ents, _ = benefit.compute(m, q)
    rows = {(s, e): v for s, e, v in compute_all(m, q)}
    total_avoided = rows[("park", "testpark")]["avoided_t_co2e"]
    assert sum(e["credited_savings"] for e in ents.values()) == pytest.approx(park["savings"])
    assert sum(e["credited_avoided_t_co2e"] for e in ents.values()) == pytest.approx(
        total_avoided, abs=1e-9)
