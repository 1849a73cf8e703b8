"""Regrowth as a mutation (prune.grow_fraction, RigL/SET) and inputs that may die
(prune.keep_inputs = false)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from coevo import config
from coevo.cli import main
from coevo.evolution import regrowth
from coevo.population import Stack
from coevo.genome import Layout, LayerSpec
from coevo.operators.base import LayerGradients


def stack_of(masks: list[np.ndarray]) -> Stack:
    """One network of two layers (3 -> 4 -> 2, no activation needed), given its flat mask row."""
    layout = Layout((LayerSpec(3, 4, "relu"), LayerSpec(4, 2, "sigmoid")))
    params = np.arange(1, layout.size + 1, dtype=np.float32)[None, :]
    stack = Stack.fresh(layout, params)
    stack.mask[0] = torch.as_tensor(masks[0])
    stack.exp_avg.fill_(1.0)
    stack.exp_avg_sq.fill_(1.0)
    return stack


def test_amounts_keep_the_kept_count_of_the_plain_prune():
    for a, g in ((0.1, 0.2), (0.0, 0.1), (0.5, 0.05)):
        asked = regrowth.operator_amount(a, g)
        alive = 1000.0
        after = alive * (1 - asked) + alive * asked * regrowth.regrow_share(a, g)
        assert after == pytest.approx(alive * (1 - a))
    assert regrowth.regrow_share(0.0, 0.1) == pytest.approx(1.0)  # at rest: a swap
    assert regrowth.regrow_share(0.0, 0.0) == 0.0


def test_grow_revives_only_entries_dead_before_the_mutation_with_zero_weights_and_moments():
    layout = Layout((LayerSpec(3, 4, "relu"), LayerSpec(4, 2, "sigmoid")))
    before = np.ones(layout.size, dtype=bool)
    before[:6] = False  # dead before: six weights of the first layer
    stack = stack_of([before])
    now = before.copy()
    now[6:10] = False  # the operator cut four more in layer 0
    stack.mask[0] = torch.as_tensor(now)
    revived = regrowth.grow(stack, 0, before, 0.5, np.random.default_rng(0), None)
    mask = stack.mask[0].numpy()
    assert revived == 2
    back = np.flatnonzero(mask & ~now)
    assert back.size == 2 and np.all(back < 6)  # from the old dead, never the four just cut
    assert not mask[6:10].any()
    for field in (stack.params, stack.exp_avg, stack.exp_avg_sq):
        assert torch.all(field[0, torch.as_tensor(back)] == 0)
    assert torch.all(stack.params[0, torch.as_tensor(mask & ~np.isin(np.arange(mask.size), back))] != 0)


def test_grow_by_gradient_picks_the_largest_gradients_among_the_dead():
    layout = Layout((LayerSpec(3, 4, "relu"), LayerSpec(4, 2, "sigmoid")))
    before = np.ones(layout.size, dtype=bool)
    before[:8] = False
    stack = stack_of([before])
    now = before.copy()
    now[8:12] = False
    stack.mask[0] = torch.as_tensor(now)
    g0 = np.zeros((4, 3))
    g0.flat[[2, 5]] = [-5.0, 3.0]  # dead entries 2 and 5 have the largest |gradient|
    g0.flat[9] = 100.0  # just cut: not eligible
    grads = [LayerGradients(g0, np.zeros(4), np.zeros(4), 1.0),
             LayerGradients(np.zeros((2, 4)), np.zeros(2), np.zeros(2), 1.0)]
    assert regrowth.grow(stack, 0, before, 0.5, np.random.default_rng(1), grads) == 2
    assert sorted(np.flatnonzero(stack.mask[0].numpy() & ~now)) == [2, 5]


def vary(overrides, stacks=None):
    """One generation's variation of four cells (their own parents), from fresh stacks or ``stacks``."""
    from coevo.evolution.loop import make_toolbox
    from coevo.evolution.problem import build
    from coevo.evolution.variation import CellData, vary_cells

    cfg = config.load(None, overrides)
    problem = build(cfg)
    enc, dec = stacks if stacks is not None else problem.fresh_stacks(4)
    cells = np.arange(4)
    return vary_cells(enc, dec, cells, cells, cells, np.full(4, 1e-3), 1.0, 0, CellData(problem.train, cfg),
                      make_toolbox(cfg).mutate, cfg.prune.operator)


def test_a_mutation_with_regrowth_moves_connections_and_prunes_what_the_plain_one_does(tiny_overrides):
    common = tiny_overrides + ["prune.operator=magnitude", "prune.probability=1", "prune.target_kept=0",
                               "prune.reset_fraction=0", "prune.params.scope=layer"]
    start = vary(common + ["prune.amount=0.5"])  # a pruned pair, with dead entries to revive
    old = (start.encoders.mask.clone(), start.decoders.mask.clone())
    plain = vary(common + ["prune.amount=0.2"], (start.encoders, start.decoders))
    grown = vary(common + ["prune.amount=0.2", "prune.grow_fraction=0.25"], (start.encoders, start.decoders))
    for p, g, before in ((plain.encoders, grown.encoders, old[0]), (plain.decoders, grown.decoders, old[1])):
        per_layer = len(p.layout.layers) * 4  # stochastic rounding: at most one entry per layer and network
        assert abs(int(p.mask.sum()) - int(g.mask.sum())) <= per_layer
        revived = g.mask & ~before
        assert int(revived.sum()) > 0  # a different topology: old dead entries are back
        assert torch.all(g.params[revived] == 0) and torch.all(g.exp_avg_sq[revived] == 0)
        assert not bool((p.mask & ~before).any())  # the plain prune never revives


def test_a_pair_at_its_target_swaps_connections_when_regrowth_is_on(tiny_overrides):
    from coevo.measures import stack_kept_fractions

    common = tiny_overrides + ["prune.operator=magnitude", "prune.probability=1", "prune.reset_fraction=0",
                               "prune.params.scope=layer", "prune.amount=0.2"]
    start = vary(common + ["prune.amount=0.5", "prune.target_kept=0"])
    before = (start.encoders.mask.clone(), start.decoders.mask.clone())
    target = float(stack_kept_fractions(start.encoders, start.decoders).kept.max())  # every pair is at its target
    plain = vary(common + [f"prune.target_kept={target!r}"], (start.encoders, start.decoders))
    assert not plain.pruned.any()  # at the target the plain mutation cuts nothing
    assert torch.equal(plain.encoders.mask, before[0]) and torch.equal(plain.decoders.mask, before[1])
    grown = vary(common + [f"prune.target_kept={target!r}", "prune.grow_fraction=0.3"], (start.encoders, start.decoders))
    swapped = torch.as_tensor(grown.pruned)
    assert bool(swapped.any())  # ... and with regrowth pairs swap connections
    for stack, old in ((grown.encoders, before[0]), (grown.decoders, before[1])):
        revived, cut = stack.mask & ~old, old & ~stack.mask
        # a swap: per network, as many old dead entries revive as alive ones are cut, so the count holds
        assert torch.equal(revived.sum(dim=1)[swapped], cut.sum(dim=1)[swapped])
        assert bool((revived.sum(dim=1)[swapped] > 0).all())
        assert torch.equal(stack.mask.sum(dim=1), old.sum(dim=1))
        assert torch.all(stack.params[revived] == 0) and torch.all(stack.exp_avg_sq[revived] == 0)
        assert not bool((revived | cut)[~swapped].any())  # a pair that did not swap is untouched
    # a swap whose cut leaves dead weight behind would lose live entries: such a pair keeps its masks
    from coevo.evolution.variation import target_tolerance

    was = stack_kept_fractions(start.encoders, start.decoders).kept
    now = stack_kept_fractions(grown.encoders, grown.decoders).kept
    assert np.all(now >= np.minimum(was, target) - target_tolerance(grown.encoders.layout, grown.decoders.layout))


def test_keep_inputs_false_lets_a_prune_cut_inputs_and_true_never_does(tmp_path, tiny_overrides, capsys):
    base = tiny_overrides + ["prune.operator=magnitude", "prune.probability=1", "prune.amount=0.6",
                             "prune.target_kept=0", "run.generations=4", "prune.reset_fraction=0"]
    dead_inputs = {}
    for keep in ("true", "false"):
        out = tmp_path / keep
        args = [x for o in base + [f"prune.keep_inputs={keep}"] for x in ("--set", o)]
        assert main(["run", "--quiet", "--out", str(out), *args]) == 0, capsys.readouterr().err
        model = torch.load(out / "best.pt", weights_only=True)
        first = next(t for n, t in model["encoder"].items() if n.endswith("weight_mask"))
        dead_inputs[keep] = int((~first.bool().any(dim=0)).sum())
    assert dead_inputs["true"] == 0
    assert dead_inputs["false"] > 0


def test_store_masks_refuses_a_dead_input_only_when_inputs_are_kept():
    from coevo.errors import OperatorError
    from coevo.genome import Encoder, Layout as L

    layout = L((LayerSpec(3, 2, "relu"),))
    stack = Stack.fresh(layout, np.ones((1, layout.size), dtype=np.float32))
    net = stack.network(0, Encoder)
    net.layers[0].weight_mask[:, 1] = False
    with pytest.raises(OperatorError, match="input unit 1 lost its last alive weight"):
        stack.store_masks(0, net, "cutter")
    net = stack.network(0, Encoder, keep_inputs=False)
    assert not net.layers[0].input_units
    net.layers[0].weight_mask[:, 1] = False
    stack.store_masks(0, net, "cutter", keep_inputs=False)
    assert not bool(stack.mask[0, torch.as_tensor([1, 4])].any())


def test_regrowth_with_the_reference_regrow_is_refused_in_one_line(tmp_path, tiny_overrides, capsys):
    args = [x for o in tiny_overrides + ["prune.regrow=true", "prune.grow_fraction=0.1"] for x in ("--set", o)]
    assert main(["run", "--quiet", "--out", str(tmp_path / "r"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert "prune.regrow keeps no mask: unset one of them" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r").exists()
