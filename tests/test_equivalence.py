"""The batched generation equals a straightforward per-module, per-pair one (benchmarks/plain.py)."""

import random

import numpy as np
import pytest
import torch

from benchmarks.plain import from_stack, plain_generation, to_rows
from coevo import config
from coevo.engines import LocalEngine
from coevo.evolution import topology
from coevo.evolution.loop import make_toolbox, select_parents, solution_concept
from coevo.evolution.problem import build
from coevo.evolution.variation import CellData


@pytest.mark.parametrize("loss, concept, probability, pairing", [
    ("l1", "best", 1.0, "encoder"), ("mse", "mean", 0.5, "encoder"), ("bce", "worst", 0.0, "encoder"),
    ("l1", "best", 1.0, "independent"), ("mse", "worst", 0.5, "independent"),
])
def test_batched_generation_equals_per_pair_loop(tiny_overrides, loss, concept, probability, pairing):
    cfg = config.load(None, tiny_overrides + [f"model.loss={loss}", f"selection.solution_concept={concept}",
                                              "grid.cells=5", "train.learning_rate=0.01", "prune.target_kept=0",
                                              # the paper's operator: the plain loop prunes one network at a time
                                              "prune.operator=random", "prune.schedule=exponential",
                                              # nor does it have the exploration mutation
                                              "prune.reset_fraction=0", f"selection.pairing={pairing}"])
    problem = build(cfg)
    neighbours = topology.neighbourhoods(cfg.grid)
    enc, dec = problem.fresh_stacks(5)
    if pairing == "independent":  # encoders and decoders with their own, different step counts
        enc.steps += torch.tensor([0.0, 4.0, 9.0, 1.0, 30.0], dtype=torch.float64)
        dec.steps += torch.tensor([12.0, 0.0, 2.0, 50.0, 3.0], dtype=torch.float64)
    lr = np.linspace(0.005, 0.02, 5)
    split = False  # did some cell train an encoder and a decoder from different cells
    toolbox = make_toolbox(cfg)
    plain_enc, plain_dec = from_stack(enc), from_stack(dec)

    for gen in range(2):  # two generations: moments and masks carried over
        engine = LocalEngine()
        engine.start(CellData(problem.train, cfg), neighbours)
        engine.load(enc, dec)
        losses = engine.evaluate(gen).numpy()
        enc_fit, dec_fit = solution_concept(losses, concept)
        random.seed(f"{cfg.run.seed}:{gen}")
        enc_parents, dec_parents = select_parents(neighbours, enc_fit, dec_fit, toolbox, pairing)
        split |= bool((enc_parents != dec_parents).any())
        engine.vary(enc_parents, dec_parents, lr, probability, gen, toolbox.mutate, cfg.prune.operator)
        enc, dec = engine.centres()

        random.seed(f"{cfg.run.seed}:{gen}")
        plain_enc, plain_dec = plain_generation(plain_enc, plain_dec, lr, neighbours, problem.train, cfg, gen,
                                                probability, toolbox)
        for stack, nets in ((enc, plain_enc), (dec, plain_dec)):
            params, masks = to_rows(nets)
            assert torch.equal(stack.mask, masks)
            assert torch.allclose(stack.params, params, atol=2e-5, rtol=1e-4), (stack.params - params).abs().max()
            assert stack.steps.tolist() == [n.step for n in nets]
    assert split == (pairing == "independent")
    if probability == 1.0:
        assert not bool(enc.mask.all())  # pruning really happened and was matched


@pytest.mark.parametrize("dec_parents", [[1, 2, 3, 4, 5, 6, 0], [2, 2, 4, 3, 6, 0, 0]], ids=["encoder", "independent"])
def test_torch_path_equals_the_cpu_kernels(tiny_overrides, monkeypatch, dec_parents):
    """Other devices run coevo.training.batched's torch ops; on the CPU the same generation must come out,
    also when a cell trains an encoder and a decoder from different cells with different step counts."""
    from coevo.evolution import variation as cells
    from coevo.training import batched

    cfg = config.load(None, tiny_overrides + ["grid.cells=7", "prune.probability=0.5"])
    problem = build(cfg)
    neighbours = topology.neighbourhoods(cfg.grid)
    enc, dec = problem.fresh_stacks(7)
    enc_parents, dec_parents = np.array([1, 2, 3, 4, 5, 6, 0]), np.array(dec_parents)
    enc.steps += torch.arange(7, dtype=torch.float64)
    dec.steps += 3 * torch.arange(7, dtype=torch.float64).flip(0)
    lr = np.linspace(0.001, 0.01, 7)
    toolbox = make_toolbox(cfg)
    results = []
    for path in ("cpu", "torch"):
        if path == "torch":
            monkeypatch.setattr(cells.cpu_kernels, "train_pairs", batched.train_pairs)
            monkeypatch.setattr(cells.cpu_kernels, "pair_losses", lambda e, d, nbr, *a:
                                batched.pair_losses(e, d, torch.as_tensor(nbr), *a))
        engine = LocalEngine()
        engine.start(CellData(problem.train, cfg), neighbours)
        engine.load(enc, dec)
        losses = engine.evaluate(0)
        train_loss, pruned, _events = engine.vary(enc_parents, dec_parents, lr, 0.5, 0, toolbox.mutate, cfg.prune.operator)
        results.append((losses, train_loss, pruned, engine.centres()))
    (l1, t1, p1, c1), (l2, t2, p2, c2) = results
    assert torch.allclose(l1, l2, atol=1e-6)
    assert p1.any() and np.array_equal(p1, p2)
    assert np.allclose(t1, t2, rtol=1e-5)
    for a, b in zip(c1, c2):
        assert torch.equal(a.mask, b.mask) and torch.equal(a.steps, b.steps)
        assert torch.allclose(a.params, b.params, atol=1e-5)
        assert torch.allclose(a.exp_avg_sq, b.exp_avg_sq, atol=1e-9)
