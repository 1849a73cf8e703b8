"""SPEC 6: VARIANCE and CONJUNCTIVE on hand-computed cases, `amount`, the last neuron, and lazy
activations (RANDOM never records them)."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest

from coevo import operators
from coevo.cli import main
from coevo.config import PruneConfig
from coevo.genome import Layer, Network
from coevo.operators.base import PruneContext
from coevo.operators.conjunctive import Conjunctive
from coevo.operators.kernels import lexicase_filter, lowest_with_random_ties
from coevo.operators.variance import EPSILON, neuron_weights

from coevo.operators.random_pruning import random_prune


def variance_prune(net, amount, rng, context, direction="low"):
    return operators.registry.get("variance", {"direction": direction})(net, amount, rng, context)


def layer(out: int, fan_in: int, bias: bool = True) -> Layer:
    rng = np.random.default_rng(0)
    return Layer(rng.normal(size=(out, fan_in)).astype(np.float32), np.zeros(out, np.float32),
                 np.ones((out, fan_in), bool), np.full(out, bias))


def context(acts: list[np.ndarray], **settings) -> PruneContext:
    return PruneContext(0, PruneConfig(**settings), lambda: {"network": acts})


conjunctive_prune = Conjunctive()  # the default threshold, 0.1


def refuse() -> dict:
    raise AssertionError("activations were recorded")


# ---------------------------------------------------------------- CONJUNCTIVE

# 6 neurons x 4 cases. Neuron 5 is pruned: it must neither be a candidate nor stretch the scale.
# Normalised over the alive neurons 0-4, marked (< 0.1):
#   case 0: [0, .05, 1, .02, .5]  (lo 0, hi 1)    -> {0, 1, 3}
#   case 1: [0, 10, 2, .5, 8]     -> [0, 1, .2, .05, .8]  -> {0, 3}   (with neuron 5's -10: {0} only)
#   case 2: all alike             -> skipped
#   case 3: [0, 5, 9, .8, .5]     -> [0, .56, 1, .089, .056] -> {0, 3, 4}
# In any order the intersection is {0, 3}.
CRAFTED = np.array([
    [0.0, 0.05, 1.0, 0.02, 0.5, 0.0],
    [0.0, 10.0, 2.0, 0.5, 8.0, -10.0],
    [1.0, 1.0, 1.0, 1.0, 1.0, 7.0],
    [0.0, 5.0, 9.0, 0.8, 0.5, 0.0],
])


def crafted_net() -> Network:
    lay = layer(6, 3)
    lay.weight_mask[5] = False
    lay.bias_mask[5] = False
    lay.weight_mask[0, 1] = False  # a partly pruned neuron is still alive
    return Network([lay])


@pytest.mark.parametrize("seed", range(8))
def test_conjunctive_prunes_exactly_the_expected_neurons(seed):
    net = crafted_net()
    conjunctive_prune(net, 1.0, np.random.default_rng(seed), context([CRAFTED]))
    lay = net.layers[0]
    assert list(np.flatnonzero(~lay.alive_neurons())) == [0, 3, 5]
    # whole neurons: incoming row and bias; nothing else touched
    assert not lay.weight_mask[[0, 3]].any() and not lay.bias_mask[[0, 3]].any()
    assert lay.weight_mask[[1, 2, 4]].all() and lay.bias_mask[[1, 2, 4]].all()


def test_lexicase_filter_order_skip_and_stop_rules():
    alive = np.array([True] * 5 + [False])
    f = lambda order, tau=0.1: list(np.flatnonzero(lexicase_filter(CRAFTED, alive, np.array(order), tau)))
    assert f([0, 1, 2, 3]) == [0, 3]
    assert f([0]) == [0, 1, 3]
    # case order matters: a case marking {1} narrows {0, 1, 3} to one neuron, and the filter stops
    case_1_only = np.vstack([CRAFTED, [[3.0, 0.0, 5.0, 3.2, 9.0, 0.0]]])  # normalised: only neuron 1 < 0.1
    g = lambda order: list(np.flatnonzero(lexicase_filter(case_1_only, alive, np.array(order), 0.1)))
    assert g([0, 4, 1]) == [1]
    # a case that would empty the pool is skipped: {0, 3} and {1} are disjoint
    assert g([1, 4, 0]) == [0, 3]
    # no case narrows the pool (tau = 0, or only constant cases): nothing survives, nothing is pruned
    assert f([0, 1, 3], tau=0.0) == []
    assert f([2]) == []
    # the pruned neuron's -10 would have changed case 1: counted as alive, it alone is marked
    all_alive = np.ones(6, bool)
    assert list(np.flatnonzero(lexicase_filter(CRAFTED, all_alive, np.array([1]), 0.1))) == [5]


def test_conjunctive_amount_caps_neurons_and_draws_among_survivors():
    # 5 alive neurons, amount 0.2 -> cap exactly 1: one of the survivors {0, 3}, either one
    chosen = set()
    for seed in range(40):
        net = crafted_net()
        conjunctive_prune(net, 0.2, np.random.default_rng(seed), context([CRAFTED]))
        dead = set(np.flatnonzero(~net.layers[0].alive_neurons())) - {5}
        assert len(dead) == 1 and dead <= {0, 3}
        chosen |= dead
    assert chosen == {0, 3}
    net = crafted_net()
    conjunctive_prune(net, 0.0, np.random.default_rng(0), context([CRAFTED]))
    assert net.layers[0].alive_neurons().sum() == 5


def test_conjunctive_threshold_is_a_parameter():
    acts = np.tile(np.linspace(0.0, 1.0, 10), (3, 1))  # normalised values 0, .11, .22, ...
    for tau, expected in ((0.1, 1), (0.3, 3), (0.0, 0)):
        net = Network([layer(10, 4)])
        operators.registry.get("conjunctive", {"threshold": tau})(net, 1.0, np.random.default_rng(0), context([acts]))
        assert (~net.layers[0].alive_neurons()).sum() == expected
    assert Conjunctive().threshold == 0.1 and PruneConfig().cases == 100
    with pytest.raises(ValueError, match=r"must be in \[0, 1\], got 1.5"):
        Conjunctive(threshold=1.5)


def test_conjunctive_never_prunes_every_alive_neuron():
    acts = np.zeros((5, 4))
    acts[:, 0] = 1.0  # neurons 1-3 are always marked: pruned at once, neuron 0 is left alone
    net = Network([layer(4, 2)])
    for seed in range(6):
        conjunctive_prune(net, 1.0, np.random.default_rng(seed), context([acts]))
        assert net.layers[0].alive_neurons().sum() >= 1
    assert list(np.flatnonzero(net.layers[0].alive_neurons())) == [0]
    # one alive neuron left: nothing to choose, nothing pruned
    lay = layer(3, 2)
    lay.weight_mask[1:] = False
    lay.bias_mask[1:] = False
    net = Network([lay])
    Conjunctive(threshold=0.5)(net, 1.0, np.random.default_rng(0), context([np.zeros((4, 3))]))
    assert lay.alive_neurons().sum() == 1


# ---------------------------------------------------------------- VARIANCE

def test_variance_weights_are_hand_computed():
    std = np.array([0.0, 1.0, 2.0, 3.0, 99.0])
    alive = np.array([True, True, True, True, False])  # the pruned neuron does not stretch the scale
    np.testing.assert_allclose(neuron_weights(std, alive, "low")[:4], [1 + EPSILON, 2 / 3 + EPSILON,
                                                                       1 / 3 + EPSILON, EPSILON])
    np.testing.assert_allclose(neuron_weights(std, alive, "high")[:4], [EPSILON, 1 / 3 + EPSILON,
                                                                        2 / 3 + EPSILON, 1 + EPSILON])
    np.testing.assert_allclose(neuron_weights(np.ones(3), np.ones(3, bool)), 0.5 + EPSILON)  # all alike


def test_weighted_draw_follows_the_weights_exactly():
    # variance's keys E / w (E ~ Exp(1)), lowest first: entry i goes first with probability w_i / sum(w)
    w = np.array([1.0, 2.0, 3.0, 4.0])
    counts = np.zeros(4)
    rng = np.random.default_rng(5)
    for _ in range(20000):
        counts[lowest_with_random_ties(rng.standard_exponential(4) / w, 1, rng)] += 1
    np.testing.assert_allclose(counts / 20000, w / w.sum(), atol=0.015)


@pytest.mark.parametrize("direction", ["low", "high"])
def test_variance_prunes_low_variance_neurons_more_often(direction):
    rng = np.random.default_rng(0)
    spread = np.array([0.0, 0.8, 1.6, 2.4, 3.2, 4.0])  # neuron j's output std
    acts = rng.normal(size=(100, 6)) * spread
    counts = np.zeros(6)
    for seed in range(400):
        net = Network([layer(6, 20)])
        variance_prune(net, 0.1, np.random.default_rng(seed), context([acts]), direction=direction)
        counts += (~net.layers[0].weight_mask).sum(axis=1) + ~net.layers[0].bias_mask
    if direction == "high":
        counts = counts[::-1]
    assert np.all(np.diff(counts) < 0), counts  # strictly fewer pruned as the spread grows (or falls)
    assert counts[0] > 20 * counts[-1]


def test_variance_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="activations of layer 0"):
        variance_prune(Network([layer(6, 2)]), 0.1, np.random.default_rng(0), context([np.zeros((3, 5))]))


# ---------------------------------------------------------------- every operator

GUIDED = {"variance": variance_prune, "conjunctive": Conjunctive(threshold=0.5), "random": random_prune}
LAST_NEURON = {**GUIDED, "conjunctive": Conjunctive(threshold=1.0)}


@pytest.mark.parametrize("name", sorted(GUIDED))
@pytest.mark.parametrize("amount", [0.0, 0.05, 0.3])
def test_amount_bounds_how_much_is_pruned(name, amount):
    rng = np.random.default_rng(1)
    shapes = [(30, 10), (10, 30), (40, 10)]
    acts = [rng.random((50, out)) for out, _ in shapes]
    for seed in range(10):
        net = Network([layer(out, fan_in) for out, fan_in in shapes])
        before = [(l.alive, l.alive_neurons().sum()) for l in net.layers]
        GUIDED[name](net, amount, np.random.default_rng(seed), context(acts))
        for l, (alive, neurons) in zip(net.layers, before):
            if name == "conjunctive":  # amount caps whole neurons
                assert neurons - l.alive_neurons().sum() <= np.ceil(amount * neurons)
            else:
                assert np.floor(amount * alive) <= alive - l.alive <= np.ceil(amount * alive)


@pytest.mark.parametrize("name", sorted(GUIDED))
def test_the_last_neuron_of_a_layer_survives(name):
    rng = np.random.default_rng(2)
    net = Network([layer(3, 2), layer(2, 3, bias=False)])
    for seed in range(30):
        acts = [rng.random((8, 3)), rng.random((8, 2))]
        LAST_NEURON[name](net, 1.0, np.random.default_rng(seed), context(acts))
        assert all(l.alive_neurons().sum() >= 1 for l in net.layers)
    assert all(l.alive_neurons().sum() == 1 for l in net.layers)  # amount 1 does go all the way down


def test_builtins_are_registered():
    assert {"none", "random", "variance", "conjunctive"} <= set(operators.registry.names())


# ---------------------------------------------------------------- lazy activations

def test_random_and_none_never_record_activations():
    net = Network([layer(30, 10), layer(10, 30)])
    ctx = PruneContext(0, PruneConfig(), refuse)
    operators.registry.get("random")(net, 0.5, np.random.default_rng(0), ctx)
    operators.registry.get("none")(net, 0.5, np.random.default_rng(0), ctx)
    assert net.kept_fraction() < 1
    with pytest.raises(AssertionError, match="recorded"):
        variance_prune(net, 0.5, np.random.default_rng(0), ctx)


def test_runs_record_activations_only_for_guided_operators(tmp_path, tiny_overrides, monkeypatch, capsys):
    """End to end: count the recordings the real loop makes; RANDOM makes none."""
    import coevo.evolution.context

    calls = []

    @dataclasses.dataclass
    class CountingContext(PruneContext):
        def __post_init__(self) -> None:
            record = self.record

            def counted() -> dict:
                calls.append(record())
                return calls[-1]

            self.record = counted

    monkeypatch.setattr(coevo.evolution.context, "PruneContext", CountingContext)
    kept = {}
    for name in ("random", "variance", "conjunctive"):
        calls.clear()
        out = tmp_path / name
        overrides = [f"prune.operator={name}", "prune.probability=1", "prune.amount=0.3", "prune.cases=7",
                     "prune.target_kept=0"]  # no target: every generation prunes every cell
        args = [x for o in tiny_overrides + overrides for x in ("--set", o)]
        assert main(["run", "--quiet", "--out", str(out), *args]) == 0, capsys.readouterr().err
        kept[name] = json.loads((out / "summary.json").read_text())["kept_fraction"]
        assert len(calls) == (0 if name == "random" else 3 * 4), (name, len(calls))  # generations x cells, once each
        for acts in calls:  # prune.cases rows, every layer of both networks (widths 8, 3 | 8, 40)
            assert [a.shape for a in acts["encoder"] + acts["decoder"]] == [(7, 8), (7, 3), (7, 8), (7, 40)]
    assert all(k < 1 for k in kept.values()), kept


# ---------------------------------------------------------------- parameters from config

def test_builtin_parameters_reach_the_operators_through_the_cli(tmp_path, tiny_overrides, capsys):
    """threshold 0 prunes nothing (no case can narrow the pool); a TOML [prune.params] table and
    --set prune.params.NAME=... both reach the operator."""
    kept = {}
    for tau in (0.0, 0.6):
        out = tmp_path / f"tau{tau}"
        config_file = tmp_path / f"tau{tau}.toml"
        config_file.write_text(f'[prune]\noperator = "conjunctive"\nprobability = 1.0\namount = 0.5\n'
                               f'reset_fraction = 0.0\n'  # kept 1.0 exactly when nothing is pruned
                               f'[prune.params]\nthreshold = {tau}\n')
        args = [x for o in tiny_overrides for x in ("--set", o)]
        assert main(["run", "--quiet", "--config", str(config_file), "--out", str(out), *args]) == 0, \
            capsys.readouterr().err
        kept[tau] = json.loads((out / "summary.json").read_text())["kept_fraction"]
        assert 'threshold = ' + repr(tau) in (out / "config.toml").read_text()
    assert kept[0.0] == 1.0 and kept[0.6] < 0.9, kept
    code = main(["run", "--quiet", "--out", str(tmp_path / "bad"), *[x for o in tiny_overrides for x in ("--set", o)],
                 "--set", "prune.operator=variance", "--set", "prune.params.direction=sideways"])
    err = capsys.readouterr().err
    assert code == 2 and "prune.params.direction = 'sideways' is not allowed; choose one of: low, high" in err
    assert not (tmp_path / "bad").exists()


def test_coevo_operators_lists_parameters_with_defaults(capsys):
    assert main(["operators"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^  conjunctive +Lexicase.*\n +parameters: threshold: float = 0\.1$", out, re.M)
    assert re.search(r"^  variance +.*\n +parameters: scope: 'layer' \| 'global' \| 'model' = 'layer', unit: 'weight' = "
                     r"'weight', max_layer_fraction: float = 1\.0, encoder_scale: float = 1\.0, "
                     r"direction: 'low' \| 'high' = 'low'$", out, re.M)
    assert re.search(r"^  magnitude +.*\n +parameters: scope: 'layer' \| 'global' \| 'model' = 'model', unit: 'weight' \| "
                     r"'neuron' = 'weight', max_layer_fraction: float = 1\.0, reduce: 'l2' \| 'l1' \| 'max' = 'l2', "
                     r"encoder_scale: float = 0\.5", out, re.M)
    assert re.search(r"^  exponential +.*\n +parameters: k: float = 2\.0$", out, re.M)
    assert re.search(r"^  final_n +.*\n +parameters: fraction: float = 0\.25$", out, re.M)
    assert re.search(r"^  none +.*\n  \S", out, re.M)  # no parameters: no parameters line
