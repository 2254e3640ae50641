import pytest

from streams.core.counters import counter_delta, rate_integral, step

pytestmark = pytest.mark.unit


def test_counter_increase_is_the_difference():
    assert counter_delta(10.0, 12.5).quantity == pytest.approx(2.5)
    assert counter_delta(10.0, 10.0).quantity == 0.0


def test_counter_reset_to_zero_counts_the_new_register_value():
    s = counter_delta(500.0, 3.0)  # no known roll-over: the device restarted from 0
    assert s.reset and s.quantity == pytest.approx(3.0)


def test_counter_rollover_at_register_limit():
    s = counter_delta(999_998.0, 1.5, rollover=1_000_000.0)
    assert s.reset and s.quantity == pytest.approx(2.0 + 1.5)


def test_low_register_decrease_with_rollover_known_is_a_reset():
    s = counter_delta(10.0, 2.0, rollover=1_000_000.0)
    assert s.reset and s.quantity == pytest.approx(2.0)


def test_rate_trapezoid_over_interval():
    # 6 MWh/h to 12 MWh/h over 10 minutes: mean 9 MWh/h * 1/6 h = 1.5 MWh
    assert rate_integral(0, 6.0, 600_000, 12.0, 900_000).quantity == pytest.approx(1.5)


def test_rate_gap_not_integrated():
    s = rate_integral(0, 6.0, 600_000, 6.0, max_gap_ms=300_000)
    assert s.gap and s.quantity == 0.0


def test_first_reading_adds_nothing():
    assert step("counter", None, 0, 42.0).quantity == 0.0
    assert step("rate", None, 0, 42.0).quantity == 0.0
