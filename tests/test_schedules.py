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
    (schedules.Pruning(0.5, amount=0.1, kept=0.5), "more than one of amount, kept and progress"),
    (1.2, "probability in"),
])
def test_a_schedule_returning_an_impossible_step_is_refused(returned, match):
    from coevo import config
    from coevo.errors import OperatorError
    from coevo.evolution import loop as evolve

    schedules.registry.add("test_bad_step", lambda t, T, p, s: returned)
    try:
        cfg = config.load(None, ["prune.schedule=test_bad_step"])
        with pytest.raises(OperatorError, match=match):
            evolve.prune_step(cfg, 0, 5)
    finally:
        schedules.registry._items.pop("test_bad_step", None)


# ---------------------------------------------------------------- polynomial (Zhu & Gupta 2017)

def zhu_gupta(t, t0, t1, s_i, s_f):
    """The paper's formula, written out again."""
    return s_f + (s_i - s_f) * (1 - (t - t0) / (t1 - t0)) ** 3


def test_polynomial_follows_zhu_and_gupta():
    T, s_i, s_f = 100, 0.2, 0.8
    t0, t1 = 10, 60  # round(0.1 * 100), round(0.6 * 100)
    params = dict(final_sparsity=s_f, initial_sparsity=s_i, start=0.1, end=0.6)
    for t, expected in [(t0, s_i), (35, zhu_gupta(35, t0, t1, s_i, s_f)), (t1, s_f)]:
        step = schedules.registry.get("polynomial", params)(t, T, 0.7, 3)
        assert isinstance(step, schedules.Pruning) and step.probability == 0.7 and step.amount is None
        assert step.kept == pytest.approx(1 - expected, abs=1e-12)
    assert zhu_gupta(35, t0, t1, s_i, s_f) == pytest.approx(0.8 - 0.6 * 0.125)  # halfway: 1/8 of the way left
    # the target is s_i before t0 and s_f after t1, where the schedule itself is idle (the networks train)
    assert schedules.polynomial_sparsity(5, T, **params) == s_i
    assert schedules.polynomial_sparsity(80, T, **params) == s_f
    assert schedules.polynomial(5, T, 0.7, 3, **params) == 0.0
    assert all(schedules.polynomial(t, T, 0.7, 3, **params) == 0.0 for t in range(t1 + 1, T + 1))
    # with s_i = 0 there is nothing to prune at t0 either
    assert schedules.polynomial(0, T, 0.7, 3) == 0.0


def test_polynomial_kept_never_rises_and_every_spaces_the_steps():
    T = 40
    targets = [1 - schedules.polynomial_sparsity(t, T, final_sparsity=0.9) for t in range(T + 1)]
    assert all(a >= b for a, b in zip(targets, targets[1:]))
    assert targets[0] == 1.0 and targets[30] == pytest.approx(0.1) and targets[-1] == pytest.approx(0.1)
    steps = {t: r for t in range(T + 1) if isinstance(r := schedules.polynomial(t, T, 1.0, 1, every=4), schedules.Pruning)}
    # t0 = 0 prunes nothing (s_i = 0); then every 4th generation, and t1 = 30 reaches the final target off the grid
    assert sorted(steps) == [4, 8, 12, 16, 20, 24, 28, 30]
    kept = [steps[t].kept for t in sorted(steps)]
    assert all(a > b for a, b in zip(kept, kept[1:]))
    assert kept[-1] == pytest.approx(0.1)
    assert all(steps[t].kept == pytest.approx(targets[t]) for t in steps)


@pytest.mark.parametrize("params, match", [
    ({"final_sparsity": 1.0}, "final_sparsity"),
    ({"final_sparsity": 0.5, "initial_sparsity": 0.6}, "initial_sparsity <= final_sparsity"),
    ({"initial_sparsity": -0.1}, "0 <= initial_sparsity"),
    ({"start": 0.5, "end": 0.5}, "0 <= start < end <= 1"),
    ({"end": 1.5}, "end"),
    ({"start": -0.1}, "start"),
    ({"every": 0}, "every must be an integer >= 1"),
])
def test_polynomial_refuses_impossible_parameters(params, match):
    with pytest.raises(ValueError, match=match):
        schedules.polynomial(0, 10, 0.5, 1, **params)


def test_polynomial_is_listed_with_typed_parameters():
    from coevo import config
    from coevo.errors import ConfigError, OperatorError
    from coevo.evolution import loop as evolve

    text = schedules.registry.describe_parameters(schedules.registry.get("polynomial"))
    assert "final_sparsity: float = 0.9" in text and "every: int = 1" in text
    # from config, by name: 11 generations, T = 10, t1 = 5; t = 4 is on the grid of every 2
    cfg = config.load(None, ["run.generations=11", "prune.schedule=polynomial", "prune.probability=1",
                             "prune.schedule_params.every=2", "prune.schedule_params.end=0.5"])
    assert evolve.prune_step(cfg, 4, 1).kept == pytest.approx(1 - 0.9 * (1 - (1 - 4 / 5) ** 3))
    assert evolve.prune_step(cfg, 3, 1).probability == 0.0
    with pytest.raises(ConfigError, match="every must be an integer"):
        evolve.prune_step(config.load(None, ["prune.schedule=polynomial", "prune.schedule_params.every=1.5"]), 0, 1)
    with pytest.raises(OperatorError, match="0 <= start < end <= 1"):
        evolve.prune_step(config.load(None, ["prune.schedule=polynomial", "prune.schedule_params.end=0"]), 0, 1)


def test_a_polynomial_run_ends_at_the_final_sparsity(tmp_path):
    """Coevolution, random pruning at p = 1 to sparsity 0.5 by half the run: the masks keep about
    half of every pair's entries at the end (stochastic rounding per layer allows a little)."""
    from conftest import TINY

    from coevo import config, runner
    from coevo.observers import Observer

    cfg = config.load(None, TINY + ["run.generations=7", "prune.operator=random", "prune.schedule=polynomial",
                                    "prune.probability=1", "prune.target_kept=0",
                                    "prune.schedule_params.final_sparsity=0.5", "prune.schedule_params.end=0.5"])
    rows = []

    class Rows(Observer):
        def on_generation(self, row, state):
            rows.append((row["prune_probability"], row["mask_kept_mean"]))

    runner.start(cfg, out=tmp_path / "run", quiet=True, observers=[Rows()])
    assert [p for p, _ in rows] == [0, 1, 1, 1, 0, 0, 0]  # t0 = 0 (nothing to prune), t1 = round(0.5 * 6) = 3
    kept = [k for _, k in rows]
    assert kept[0] == 1.0 and kept[1] < 0.75 and kept[2] < 0.6  # on the way down (the mean over the cells)
    assert kept[-1] == pytest.approx(0.5, abs=0.05)


# ---------------------------------------------------------------- gradual: the cubic ramp to prune.target_kept

def test_gradual_ramps_to_the_target_kept_fraction_and_then_trains():
    from coevo import config
    from coevo.evolution import loop as evolve

    T = 40
    for target in (0.1, 0.05):
        cfg = config.load(overrides=[f"prune.target_kept={target}", "prune.schedule=gradual", "run.generations=41"])
        kept = []
        for t in range(T + 1):
            step = evolve.prune_step(cfg, t, 3)
            kept.append(step.kept_goal(target))
        assert kept[0] is None and step.kept_goal(target) is None  # nothing to prune at t0, training only after t1 = 30
        ramp = [k for k in kept if k is not None]
        assert all(a > b for a, b in zip(ramp, ramp[1:]))
        assert kept[30] == pytest.approx(target)
        # the same cube as polynomial's, scaled to the target: halfway, 1/8 of the way is left
        assert kept[15] == pytest.approx(1 - (1 - target) * (1 - 0.125))


def test_gradual_needs_a_target():
    from coevo import config
    from coevo.errors import ConfigError

    with pytest.raises(ConfigError, match="prunes towards prune.target_kept"):
        config.load(overrides=["prune.schedule=gradual", "prune.target_kept=0"])


def test_a_schedule_returning_progress_and_kept_is_refused():
    from coevo import config
    from coevo.errors import OperatorError
    from coevo.evolution import loop as evolve

    @schedules.register("test_two_targets")
    def two(t, T, p, s):
        return schedules.Pruning(p, kept=0.5, progress=0.5)

    try:
        cfg = config.load(overrides=["prune.schedule=test_two_targets"])
        with pytest.raises(OperatorError, match="more than one of amount, kept and progress"):
            evolve.prune_step(cfg, 1, 3)
    finally:
        schedules.registry._items.pop("test_two_targets", None)
