"""The batched generation equals a straightforward per-module, per-pair one (benchmarks/plain.py)."""

import random

import numpy as np
import pytest
import torch

from benchmarks.plain import from_stack, plain_generation, to_rows
from coevo import config, topology
from coevo.cells import CellData
from coevo.engines import LocalEngine
from coevo.evolve import make_toolbox, select_parents, solution_concept
from coevo.problem import build


@pytest.mark.parametrize("loss, concept, probability", [("l1", "best", 1.0), ("mse", "mean", 0.5),
                                                        ("bce", "worst", 0.0)])
def test_batched_generation_equals_per_pair_loop(tiny_overrides, loss, concept, probability):
    cfg = config.load(None, tiny_overrides + [f"model.loss={loss}", f"selection.solution_concept={concept}",
                                              "grid.cells=5", "train.learning_rate=0.01"])
    problem = build(cfg)
    neighbours = topology.neighbourhoods(cfg.grid)
    enc, dec = problem.fresh_stacks(5)
    lr = np.linspace(0.005, 0.02, 5)
    toolbox = make_toolbox(cfg)
    plain_enc, plain_dec = from_stack(enc), from_stack(dec)

    for gen in range(2):  # two generations: moments and masks carried over
        engine = LocalEngine()
        engine.start(CellData(problem.train, cfg), neighbours)
        losses = engine.evaluate(enc, dec, gen).numpy()
        enc_fit, dec_fit = solution_concept(losses, concept)
        random.seed(f"{cfg.run.seed}:{gen}")
        parents = select_parents(neighbours, enc_fit, dec_fit, toolbox)
        variation = engine.vary(enc, dec, parents, lr, probability, gen, toolbox.mutate, cfg.prune.operator)
        enc, dec = variation.encoders, variation.decoders

        random.seed(f"{cfg.run.seed}:{gen}")
        plain_enc, plain_dec = plain_generation(plain_enc, plain_dec, lr, neighbours, problem.train, cfg, gen,
                                                probability, toolbox)
        for stack, nets in ((enc, plain_enc), (dec, plain_dec)):
            params, masks = to_rows(nets)
            assert torch.equal(stack.mask, masks)
            assert torch.allclose(stack.params, params, atol=2e-5, rtol=1e-4), (stack.params - params).abs().max()
    if probability == 1.0:
        assert not bool(enc.mask.all())  # pruning really happened and was matched


def test_cache_sized_cell_groups_change_nothing(tiny_overrides, monkeypatch):
    from coevo import cells

    cfg = config.load(None, tiny_overrides + ["grid.cells=7", "prune.probability=0.5"])
    problem = build(cfg)
    neighbours = topology.neighbourhoods(cfg.grid)
    enc, dec = problem.fresh_stacks(7)
    parents = np.array([1, 2, 3, 4, 5, 6, 0])
    lr = np.linspace(0.001, 0.01, 7)
    toolbox = make_toolbox(cfg)
    results = []
    for budget, eval_budget in ((1 << 40, 1 << 40), (1, 1)):  # one group; then one cell per group
        monkeypatch.setattr(cells, "CACHE_BUDGET_BYTES", budget)
        monkeypatch.setattr(cells, "EVAL_BUDGET_ELEMENTS", eval_budget)
        engine = LocalEngine()
        engine.start(CellData(problem.train, cfg), neighbours)
        losses = engine.evaluate(enc, dec, 0)
        v = engine.vary(enc, dec, parents, lr, 0.5, 0, toolbox.mutate, cfg.prune.operator)
        results.append((losses, v))
    (l1, v1), (l2, v2) = results
    assert torch.allclose(l1, l2, atol=1e-6)
    assert torch.equal(v1.encoders.mask, v2.encoders.mask) and np.array_equal(v1.pruned, v2.pruned)
    assert torch.allclose(v1.encoders.params, v2.encoders.params, atol=1e-6)
    assert torch.allclose(v1.decoders.exp_avg_sq, v2.decoders.exp_avg_sq, atol=1e-9)
