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
from coevo.operators.latent_fold import fold_coefficients, latent_fold_prune

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
    # a tolerance above the cheapest cost: exactly the cheapest neuron goes, weights and bias, nothing else
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


def first_seed(cost_of, what: str) -> int:
    """The first seed in 0..199 whose pair() makes every latent cut cost more than 1e-4: a random
    pair often has a latent neuron whose removal helps, which no tolerance >= 0 can refuse."""
    for seed in range(200):
        if cost_of(seed).min() > 1e-4:
            return seed
    pytest.fail(f"no seed in 0..199 gives a pair where every {what} costs something")


def test_latent_ablation_cuts_nothing_below_the_cheapest_cost():
    seed = first_seed(lambda s: latent_costs(*pair(s, alive=1.0))[1], "silencing")
    enc, dec, x = pair(seed, alive=1.0)
    base, cost = latent_costs(enc, dec, x)
    ctx, rng = context_of(enc, dec, x), np.random.default_rng(0)
    net = enc.network(0, Encoder)
    latent_ablation_prune(net, 0.5, rng, ctx, tolerance=cost.min() / base * (1 - 1e-6))
    assert net.layers[-1].alive_neurons().all()
    latent_ablation_prune(net, 0.5, rng, ctx, tolerance=cost.min() / base * (1 + 1e-6))
    assert np.flatnonzero(~net.layers[-1].alive_neurons()).tolist() == [int(np.argmin(cost))]


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


# ---------------------------------------------------------------- latent_fold and fold_input

def decoder_output(dec_stack, codes: torch.Tensor, mask: torch.Tensor | None = None,
                   params: torch.Tensor | None = None) -> torch.Tensor:
    h = codes.double()
    params = dec_stack.params[0] if params is None else params
    mask = dec_stack.mask[0] if mask is None else mask
    for spec, (w, b), (wm, bm) in zip(dec_stack.layout.layers, dec_stack.layout.split(params.double()),
                                      dec_stack.layout.split(mask)):
        z = h @ (w * wm).T + b * bm
        h = torch.relu(z) if spec.activation == "relu" else torch.sigmoid(z)
    return h


def encoder_codes(enc_stack, x: torch.Tensor) -> torch.Tensor:
    h = x.double()
    for spec, (w, b), (wm, bm) in zip(enc_stack.layout.layers, enc_stack.layout.split(enc_stack.params[0].double()),
                                      enc_stack.layout.split(enc_stack.mask[0])):
        z = h @ (w * wm).T + b * bm
        h = torch.relu(z) if spec.activation == "relu" else torch.sigmoid(z)
    return h


def test_fold_input_keeps_the_decoder_function_when_the_input_is_the_combination():
    enc, dec, x = pair(11, alive=1.0)
    rng = np.random.default_rng(1)
    codes = rng.random((20, 3))
    coefficients, offset = np.array([0.7, 0.0, -1.3]), 0.25
    codes[:, 1] = offset + codes @ coefficients  # input 1 is exactly a combination of 0 and 2
    before = decoder_output(dec, torch.as_tensor(codes))
    net = dec.network(0, Decoder)
    net.fold_input(1, coefficients, offset)
    assert not net.layers[0].weight_mask[:, 1].any()
    dec.store_masks(0, net, "latent_fold")
    after = decoder_output(dec, torch.as_tensor(codes))
    np.testing.assert_allclose(after.numpy(), before.numpy(), atol=1e-5)
    # the stored row holds the edited weights and biases, and the masks the cut column
    (w0, b0), _ = dec.layout.split(dec.params[0].numpy())
    np.testing.assert_array_equal(w0 * net.layers[0].weight_mask, net.layers[0].weight * net.layers[0].weight_mask)
    np.testing.assert_array_equal(b0, net.layers[0].bias)
    for bad, match in [(lambda n: n.fold_input(1, np.array([0.0, 1.0, 0.0]), 0.0), "into itself"),
                       (lambda n: n.fold_input(3, np.zeros(3), 0.0), "not an input"),
                       (lambda n: n.fold_input(0, np.array([0.0, np.nan, 0.0]), 0.0), "finite"),
                       (lambda n: n.fold_input(1, np.zeros(3), 0.0), "no alive weight")]:
        with pytest.raises(ValueError, match=match):
            bad(dec.network(0, Decoder))
    with pytest.raises(ValueError, match="only a decoder"):
        enc.network(0, Encoder).fold_input(0, np.zeros(enc.layout.layers[0].fan_in), 0.0)


def test_context_inputs_and_loss_with_inputs_equal_a_direct_computation():
    enc, dec, x = pair(12)
    ctx = context_of(enc, dec, x)
    codes = encoder_codes(enc, x)
    np.testing.assert_allclose(ctx.inputs(dec.network(0, Decoder)), codes.numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(ctx.inputs(enc.network(0, Encoder)), x.numpy())
    rng = np.random.default_rng(2)
    variants = rng.random((4,) + tuple(codes.shape))
    want = [float(F.l1_loss(decoder_output(dec, torch.as_tensor(v)), x.double())) for v in variants]
    np.testing.assert_allclose(ctx.loss_with_inputs(dec.network(0, Decoder), variants), want, rtol=1e-10)
    with pytest.raises(ValueError, match="variants x 9 cases x 3 inputs"):
        ctx.loss_with_inputs(dec.network(0, Decoder), variants[0])


def test_latent_fold_folds_the_cheapest_latent_neuron_as_a_direct_refit_ranks_them():
    """The operator's cost of each latent input equals the loss of the pair whose decoder really
    got that least-squares fold; the cheapest goes, and the stored pair has that loss."""
    for seed in range(13, 17):
        enc, dec, x = pair(seed, alive=1.0)
        ctx = context_of(enc, dec, x)
        base, real = real_fold_costs(enc, dec, x)
        net = dec.network(0, Decoder)
        latent_fold_prune(net, 0.5, np.random.default_rng(0), ctx, tolerance=max(real.min() / base, 0) + 1e-4)
        cut = np.flatnonzero(~net.layers[0].weight_mask.any(axis=0))
        assert cut.size == 1 and real[cut[0]] == pytest.approx(real.min(), abs=1e-6), (real, cut)


def real_fold_costs(enc, dec, x) -> tuple[float, np.ndarray]:
    """The pair's loss, and how much the decoder really folded by each latent input's
    least-squares fit (stored in a scratch stack) raises it."""
    codes = encoder_codes(enc, x).numpy()
    base = float(F.l1_loss(decoder_output(dec, torch.as_tensor(codes)), x.double()))
    real = []
    for j in range(3):
        net = dec.network(0, Decoder)
        coefficients, offset = fold_coefficients(codes, j, np.array([k for k in range(3) if k != j]))
        net.fold_input(j, coefficients, offset)
        scratch = type(dec).fresh(dec.layout, dec.params.clone())
        scratch.store_masks(0, net, "latent_fold")
        real.append(float(F.l1_loss(decoder_output(scratch, torch.as_tensor(codes)), x.double())) - base)
    return base, np.array(real)


def test_latent_fold_folds_nothing_below_the_cheapest_cost():
    seed = first_seed(lambda s: real_fold_costs(*pair(s, alive=1.0))[1], "fold")
    enc, dec, x = pair(seed, alive=1.0)
    base, real = real_fold_costs(enc, dec, x)
    net = dec.network(0, Decoder)
    latent_fold_prune(net, 0.5, np.random.default_rng(0), context_of(enc, dec, x), tolerance=real.min() / base * 0.5)
    assert net.layers[0].weight_mask.any(axis=0).all()


def test_latent_fold_finds_a_duplicated_latent_neuron_and_leaves_encoders_alone():
    enc, dec, x = pair(17, alive=1.0)
    (w0, b0), (w1, b1) = enc.layout.split(enc.params[0])
    w1[2], b1[2] = w1[0], b1[0]  # latent neuron 2 copies latent neuron 0: its code is redundant
    ctx = context_of(enc, dec, x)
    codes = encoder_codes(enc, x)
    before = float(F.l1_loss(decoder_output(dec, codes), x.double()))
    net = dec.network(0, Decoder)
    latent_fold_prune(net, 0.5, np.random.default_rng(0), ctx, tolerance=1e-6)
    assert net.layers[0].weight_mask.any(axis=0).sum() == 2, "a copy folds into the other at no cost"
    dec.store_masks(0, net, "latent_fold")
    # the copy's fold is free, so the fold made (the cheapest) costs nothing, in the stored pair
    assert float(F.l1_loss(decoder_output(dec, codes), x.double())) <= before * (1 + 1e-5)
    encoder = enc.network(0, Encoder)
    masks = [layer.weight_mask.copy() for layer in encoder.layers]
    latent_fold_prune(encoder, 0.5, np.random.default_rng(0), ctx, tolerance=1e9)
    assert all(np.array_equal(layer.weight_mask, m) for layer, m in zip(encoder.layers, masks))
    for _ in range(5):  # an enormous tolerance folds one input a call, down to one
        latent_fold_prune(net, 1.0, np.random.default_rng(0), ctx, tolerance=1e9)
    assert net.layers[0].weight_mask.any(axis=0).sum() == 1


def test_a_latent_fold_run_shrinks_the_live_latent_layer(tmp_path):
    for mode in ("coevolution", "canonical"):
        cfg = config.load(None, TINY + [f"run.mode={mode}", "prune.operator=latent_fold", "prune.probability=1",
                                        "prune.schedule=fixed", "prune.params.tolerance=100", "run.generations=6"])
        run_dir = runner.start(cfg, tmp_path / mode, quiet=True)
        summary = json.loads((run_dir / "summary.json").read_text())
        assert 1 <= summary["latent_alive"] < cfg.model.latent
