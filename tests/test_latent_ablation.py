"""context.loss_without (exact ablation) and the latent_ablation operator, each checked against
a direct computation: the pair's loss after really pruning the neuron."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from coevo import config, runner
from coevo.genome import Decoder, Encoder
from coevo.operators.latent_ablation import latent_ablation_prune

from conftest import TINY
from test_seed_operators import context_of, pair


def pair_loss(enc, dec, enc_mask, dec_mask, x, loss: str) -> float:
    """The pair's loss from torch, with the given flat masks multiplied into the weights."""
    h = x.double()
    for stack, mask in ((enc, enc_mask), (dec, dec_mask)):
        for spec, (w, b), (wm, bm) in zip(stack.layout.layers, stack.layout.split(stack.params[0].double()),
                                          stack.layout.split(mask)):
            z = h @ (w * wm).T + b * bm
            h = torch.relu(z) if spec.activation == "relu" else torch.sigmoid(z)
    target = x.double()
    fn = {"l1": F.l1_loss, "mse": F.mse_loss, "bce": F.binary_cross_entropy}[loss]
    return float(fn(h, target))


def pruned(stack, layer: int, neuron: int) -> torch.Tensor:
    """A copy of row 0's flat mask with one neuron's incoming weights and bias masked."""
    mask = stack.mask[0].clone()
    wm, bm = stack.layout.split(mask)[layer]
    wm[neuron] = False
    bm[neuron] = False
    return mask


@pytest.mark.parametrize("loss", ["l1", "mse", "bce"])
def test_loss_without_equals_the_loss_of_the_really_pruned_pair(loss):
    enc, dec, x = pair(3)
    ctx = context_of(enc, dec, x, loss)
    assert ctx.loss() == pytest.approx(pair_loss(enc, dec, enc.mask[0], dec.mask[0], x, loss), rel=1e-12)
    for role, cls, stack in (("encoder", Encoder, enc), ("decoder", Decoder, dec)):
        net = stack.network(0, cls)
        for layer in range(len(stack.layout.layers)):
            width = stack.layout.layers[layer].fan_out
            neurons = np.arange(width)[::-1]  # any order, answered in the order asked
            got = ctx.loss_without(net, layer, neurons)
            want = [pair_loss(enc, dec, pruned(enc, layer, j) if role == "encoder" else enc.mask[0],
                              pruned(dec, layer, j) if role == "decoder" else dec.mask[0], x, loss)
                    for j in neurons]
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-13)
    assert ctx.loss_without(enc.network(0, Encoder), 1, []).shape == (0,)


def test_loss_without_refuses_a_neuron_or_layer_out_of_range():
    enc, dec, x = pair(3)
    ctx = context_of(enc, dec, x)
    net = enc.network(0, Encoder)
    with pytest.raises(IndexError, match="layer 5"):
        ctx.loss_without(net, 5, [0])
    with pytest.raises(IndexError, match=r"neurons must be in 0\.\.2"):
        ctx.loss_without(net, 1, [3])


def latent_costs(enc, dec, x) -> tuple[float, np.ndarray]:
    """The pair's loss, and how much really pruning each latent neuron raises it."""
    last = len(enc.layout.layers) - 1
    base = pair_loss(enc, dec, enc.mask[0], dec.mask[0], x, "l1")
    width = enc.layout.layers[last].fan_out
    return base, np.array([pair_loss(enc, dec, pruned(enc, last, j), dec.mask[0], x, "l1")
                           for j in range(width)]) - base


@pytest.mark.parametrize("seed", range(4, 10))
def test_latent_ablation_cuts_the_cheapest_latent_neuron_only_within_tolerance(seed):
    enc, dec, x = pair(seed)
    ctx = context_of(enc, dec, x)
    last = len(enc.layout.layers) - 1
    base, cost = latent_costs(enc, dec, x)
    rng = np.random.default_rng(0)
    # a tolerance below the cheapest cost cuts nothing (a cut that lowers the loss is always made)
    if cost.min() > 1e-9:
        strict = enc.network(0, Encoder)
        latent_ablation_prune(strict, 0.5, rng, ctx, tolerance=cost.min() / base * (1 - 1e-6))
        assert strict.layers[last].alive_neurons().all()
    # a tolerance above it: exactly the cheapest neuron goes, weights and bias, nothing else
    net = enc.network(0, Encoder)
    before = [(layer.weight_mask.copy(), layer.bias_mask.copy()) for layer in net.layers]
    latent_ablation_prune(net, 0.5, rng, ctx, tolerance=max(cost.min() / base * (1 + 1e-6), 0.0))
    alive = net.layers[last].alive_neurons()
    assert alive.sum() == 2
    cheapest = int(np.flatnonzero(~alive)[0])
    assert cost[cheapest] == pytest.approx(cost.min(), abs=1e-12)  # one of the cheapest (ties: rng's pick)
    assert not net.layers[last].weight_mask[cheapest].any() and not net.layers[last].bias_mask[cheapest]
    for k, (layer, (wm, bm)) in enumerate(zip(net.layers, before)):
        keep = np.ones(wm.shape[0], dtype=bool)
        if k == last:
            keep[cheapest] = False
        np.testing.assert_array_equal(layer.weight_mask[keep], wm[keep])
        np.testing.assert_array_equal(layer.bias_mask[keep], bm[keep])


def test_latent_ablation_leaves_decoders_and_the_last_latent_neuron_alone():
    enc, dec, x = pair(5)
    ctx = context_of(enc, dec, x)
    rng = np.random.default_rng(0)
    decoder = dec.network(0, Decoder)
    masks = [layer.weight_mask.copy() for layer in decoder.layers]
    latent_ablation_prune(decoder, 1.0, rng, ctx, tolerance=10.0)
    for layer, wm in zip(decoder.layers, masks):
        np.testing.assert_array_equal(layer.weight_mask, wm)
    net = enc.network(0, Encoder)
    for _ in range(5):  # an enormous tolerance cuts one neuron a call, down to one
        latent_ablation_prune(net, 1.0, rng, ctx, tolerance=1e9)
    assert net.layers[-1].alive_neurons().sum() == 1
    with pytest.raises(ValueError, match="tolerance"):
        latent_ablation_prune(net, 1.0, rng, ctx, tolerance=-1.0)


def test_a_latent_ablation_run_cuts_latent_neurons_and_keeps_them_cut(tmp_path):
    """In both modes: with a loose tolerance the latent layer shrinks, and the summary's
    latent_alive counts it."""
    for mode in ("coevolution", "canonical"):
        cfg = config.load(None, TINY + [f"run.mode={mode}", "prune.operator=latent_ablation", "prune.probability=1",
                                        "prune.schedule=fixed", "prune.params.tolerance=1.0", "run.generations=6"])
        run_dir = runner.start(cfg, tmp_path / mode, quiet=True)
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["latent_alive"] < cfg.model.latent
        assert summary["latent_alive"] >= 1
