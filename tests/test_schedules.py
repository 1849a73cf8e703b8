import math

import pytest

from coevo import schedules
T, p, s = 10, 0.5, 3

# (schedule, t, expected) straight from SPEC section 7
TABLE = [
    ("fixed", 0, 0.5), ("fixed", 7, 0.5), ("fixed", 10, 0.5),
    ("increase", 0, 0.0), ("increase", 5, 0.25), ("increase", 10, 0.5),
    ("decrease", 0, 0.5), ("decrease", 5, 0.25), ("decrease", 10, 0.0),
    ("population", 0, 0.0), ("population", 5, 0.5 * 5 / (10 * 3)), ("population", 10, 0.5 / 3),
    ("exponential", 0, 0.0), ("exponential", 5, 0.5 * (1 - math.exp(-1.0))), ("exponential", 10, 0.5 * (1 - math.exp(-2.0))),
    ("final_n", 7, 0.0), ("final_n", 8, 0.5), ("final_n", 10, 0.5),
    ("prune_after", 0, 0.0), ("prune_after", 9, 0.0), ("prune_after", 10, 0.5),
]


@pytest.mark.parametrize("name, t, expected", TABLE)
def test_schedule_values(name, t, expected):
    assert schedules.registry.get(name)(t, T, p, s) == pytest.approx(expected, abs=1e-12)


def test_decrease_starts_at_p_not_one():
    # the reference computes 1 - p*t/T, which starts at 1 whatever p is
    assert schedules.decrease(0, T, 0.2, s) == pytest.approx(0.2)


def test_final_n_fraction_and_exponential_rate_are_parameters():
    assert schedules.final_n(5, T, p, s, fraction=0.5) == 0.5
    assert schedules.final_n(4, T, p, s, fraction=0.5) == 0.0
    assert schedules.exponential(10, T, p, s, k=1.0) == pytest.approx(0.5 * (1 - math.exp(-1)))
    # from config, by name: [prune.schedule_params]
    assert schedules.registry.get("final_n", {"fraction": 0.5})(5, T, p, s) == 0.5
    assert schedules.registry.get("exponential", {"k": 1})(10, T, p, s) == pytest.approx(0.5 * (1 - math.exp(-1)))


def test_all_seven_are_registered():
    assert {"fixed", "increase", "decrease", "population", "exponential", "final_n", "prune_after"} <= set(
        schedules.registry.names())


@pytest.mark.parametrize("returned, match", [
    (schedules.Pruning(0.5, kept=1.5), "kept fraction 1.5"),
    (schedules.Pruning(0.5, amount=-0.1), "amount -0.1"),
    (schedules.Pruning(0.5, amount=0.1, kept=0.5), "both an amount and a kept fraction"),
    (1.2, "probability in"),
])
def test_a_schedule_returning_an_impossible_step_is_refused(returned, match):
    from coevo import config, evolve
    from coevo.errors import OperatorError

    schedules.registry.add("test_bad_step", lambda t, T, p, s: returned)
    try:
        cfg = config.load(None, ["prune.schedule=test_bad_step"])
        with pytest.raises(OperatorError, match=match):
            evolve.prune_step(cfg, 0, 5)
    finally:
        schedules.registry._items.pop("test_bad_step", None)
