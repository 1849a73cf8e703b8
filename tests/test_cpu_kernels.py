"""The network-by-network Numba kernels (coevo.training.cpu_kernels) against the torch-ops path."""

import numpy as np
import pytest
import torch

from coevo.population import FIELDS, Stack
from coevo.genome import LayerSpec, Layout, autoencoder_layouts, init_params
from coevo.training import batched, cpu_kernels


def _stack(layout, n, rng, pruned=0.3):
    stack = Stack.fresh(layout, init_params(layout, n, rng))
    stack.mask &= torch.as_tensor(rng.random(stack.mask.shape) > pruned)
    stack.apply_masks()
    stack.steps += 3  # a carried-over optimizer: bias corrections start mid-way
    return stack


def _setup(enc_layout, dec_layout, n=6, rows=23, seed=0):
    rng = np.random.default_rng(seed)
    enc, dec = _stack(enc_layout, n, rng), _stack(dec_layout, n, rng)
    data = torch.as_tensor((rng.random((rows, enc_layout.layers[0].fan_in)) > 0.4).astype(np.float32))
    parents = np.array([1, 1, 5, 0])  # a pair may be selected twice, another never
    orders = np.stack([rng.permutation(rows) for _ in parents])
    lr = np.geomspace(1e-3, 3e-2, len(parents))
    return enc, dec, data, parents, orders, lr


def _close(a: Stack, b: Stack, atol=1e-5):
    assert torch.equal(a.mask, b.mask) and torch.equal(a.steps, b.steps)
    for field in ("params", "exp_avg", "exp_avg_sq"):
        x, y = getattr(a, field), getattr(b, field)
        assert torch.allclose(x, y, atol=atol, rtol=1e-4), (field, (x - y).abs().max())


@pytest.mark.parametrize("loss", ["l1", "mse", "bce"])
@pytest.mark.parametrize("fresh", [False, True])
def test_training_equals_the_torch_path(loss, fresh):
    enc_l, dec_l = autoencoder_layouts(17, [9, 6], 3)
    enc, dec, data, parents, orders, lr = _setup(enc_l, dec_l)
    before = {f: (getattr(enc, f).clone(), getattr(dec, f).clone()) for f in FIELDS}
    # 23 rows in batches of 5: the last batch has 3
    e1, d1, loss1 = cpu_kernels.train_pairs(enc, dec, parents, parents, data, orders, lr, 5, loss, 0.5, 0.999, fresh)
    e2, d2, loss2 = batched.train_pairs(enc, dec, parents, parents, data, orders, lr, 5, loss, 0.5, 0.999, fresh)
    _close(e1, e2)
    _close(d1, d2)
    assert np.allclose(loss1, loss2, rtol=1e-5)
    for f in FIELDS:  # the population it read from is untouched
        assert torch.equal(getattr(enc, f), before[f][0]) and torch.equal(getattr(dec, f), before[f][1])
    for stack in (e1, d1):
        assert torch.all(stack.params[~stack.mask] == 0) and torch.all(stack.exp_avg_sq[~stack.mask] == 0)
    assert not torch.equal(e1.params, enc.params[torch.as_tensor(parents)])  # it trained
    assert torch.equal(e1.steps, torch.full((4,), 1.0 if fresh else 3.0 + 5, dtype=torch.float64))  # 5 batches


STEPS_ENC = [3.0, 40.0, 0.0, 7.0, 1.0, 12.0]
STEPS_DEC = [9.0, 2.0, 25.0, 0.0, 5.0, 60.0]


def _independent_setup():
    """Pairs whose encoder and decoder come from different cells with different Adam step
    counts (``selection.pairing = "independent"``)."""
    enc, dec, data, _, orders, lr = _setup(*autoencoder_layouts(17, [9, 6], 3))
    enc.steps = torch.tensor(STEPS_ENC, dtype=torch.float64)
    dec.steps = torch.tensor(STEPS_DEC, dtype=torch.float64)
    enc_parents, dec_parents = np.array([1, 1, 5, 0]), np.array([2, 4, 5, 3])
    return enc, dec, enc_parents, dec_parents, data, orders, lr


@pytest.mark.parametrize("loss", ["l1", "bce"])
@pytest.mark.parametrize("fresh", [False, True])
def test_encoder_and_decoder_from_different_cells_equal_the_torch_path(loss, fresh):
    enc, dec, enc_parents, dec_parents, data, orders, lr = _independent_setup()
    e1, d1, loss1 = cpu_kernels.train_pairs(enc, dec, enc_parents, dec_parents, data, orders, lr, 5, loss, 0.5,
                                            0.999, fresh)
    e2, d2, loss2 = batched.train_pairs(enc, dec, enc_parents, dec_parents, data, orders, lr, 5, loss, 0.5, 0.999,
                                        fresh)
    _close(e1, e2)
    _close(d1, d2)
    assert np.allclose(loss1, loss2, rtol=1e-5)
    # each network comes from its own cell, with its mask and its own step count (+ 5 batches)
    assert torch.equal(e1.mask, enc.mask[enc_parents]) and torch.equal(d1.mask, dec.mask[dec_parents])
    assert torch.equal(e1.steps, torch.ones(4, dtype=torch.float64) if fresh else enc.steps[enc_parents] + 5)
    assert torch.equal(d1.steps, torch.ones(4, dtype=torch.float64) if fresh else dec.steps[dec_parents] + 5)


def test_each_half_bias_corrects_with_its_own_step_count():
    """Against torch.optim.Adam, which keeps a step count per parameter (the plain oracle of
    benchmarks/plain.py): the kernel must bias-correct each half with its own network's count."""
    import copy

    from benchmarks.plain import from_stack, plain_train_pair, to_rows
    from coevo import config

    enc, dec, enc_parents, dec_parents, data, orders, lr = _independent_setup()
    cfg = config.load(None, ["train.batch_size=5", "model.loss=mse", "train.bce_weight=0"])
    e1, d1, _ = cpu_kernels.train_pairs(enc, dec, enc_parents, dec_parents, data, orders, lr, 5, "mse", 0.5, 0.999)
    plain_enc, plain_dec = from_stack(enc), from_stack(dec)
    trained = []
    for i, (e, d) in enumerate(zip(enc_parents, dec_parents)):
        pair = copy.deepcopy(plain_enc[e]), copy.deepcopy(plain_dec[d])
        plain_train_pair(*pair, float(lr[i]), orders[i], data, cfg)
        trained.append(pair)
    for stack, nets in ((e1, [p[0] for p in trained]), (d1, [p[1] for p in trained])):
        params, _ = to_rows(nets)
        assert torch.allclose(stack.params, params, atol=2e-5, rtol=1e-4), (stack.params - params).abs().max()
        assert stack.steps.tolist() == [n.step for n in nets]


@pytest.mark.parametrize("loss", ["l1", "bce"])
def test_bce_weight_trains_alike_on_both_paths(loss):
    enc, dec, data, parents, orders, lr = _setup(*autoencoder_layouts(17, [9], 3))
    plain = cpu_kernels.train_pairs(enc, dec, parents, parents, data, orders, lr, 5, loss, 0.5, 0.999)
    e1, d1, loss1 = cpu_kernels.train_pairs(enc, dec, parents, parents, data, orders, lr, 5, loss, 0.5, 0.999,
                                            bce_weight=0.3)
    e2, d2, loss2 = batched.train_pairs(enc, dec, parents, parents, data, orders, lr, 5, loss, 0.5, 0.999,
                                        bce_weight=0.3)
    _close(e1, e2)
    _close(d1, d2)
    assert np.allclose(loss1, loss2, rtol=1e-5)
    assert not torch.equal(e1.params, plain[0].params)  # the term changed the training


def test_bce_weight_adds_the_bce_gradient():
    """The output gradient is autograd's of mean L1 + w x mean BCE (outputs away from the clamp)."""
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 8, requires_grad=True)
    target = (torch.rand(3, 5, 8) > 0.5).float()
    out = logits.sigmoid()
    loss = (out - target).abs().mean(dim=(1, 2)) + 0.2 * torch.nn.functional.binary_cross_entropy(
        out, target, reduction="none").mean(dim=(1, 2))
    loss.sum().backward()
    grad = batched._output_grad(out.detach(), target, "l1", "sigmoid", bce_weight=0.2)
    assert torch.allclose(grad, logits.grad, atol=1e-7)


def test_sigmoid_hidden_layers_and_relu_output():
    enc_l = Layout((LayerSpec(12, 7, "sigmoid"), LayerSpec(7, 4, "sigmoid")))
    dec_l = Layout((LayerSpec(4, 12, "relu"),))
    enc, dec, data, parents, orders, lr = _setup(enc_l, dec_l, rows=20)
    e1, d1, _ = cpu_kernels.train_pairs(enc, dec, parents, parents, data, orders, lr, 4, "mse", 0.9, 0.99)
    e2, d2, _ = batched.train_pairs(enc, dec, parents, parents, data, orders, lr, 4, "mse", 0.9, 0.99)
    _close(e1, e2)
    _close(d1, d2)


def test_threads_do_not_change_the_result():
    enc, dec, data, parents, orders, lr = _setup(*autoencoder_layouts(17, [9], 3))
    one = cpu_kernels.train_pairs(enc, dec, parents, parents, data, orders, lr, 5, "l1", 0.5, 0.999, threads=1)
    two = cpu_kernels.train_pairs(enc, dec, parents, parents, data, orders, lr, 5, "l1", 0.5, 0.999, threads=2)
    for a, b in ((one[0], two[0]), (one[1], two[1])):
        for field in FIELDS:
            assert torch.equal(getattr(a, field), getattr(b, field)), field
    assert np.array_equal(one[2], two[2])
    nbr = np.array([[0, 5, 1], [1, 0, 2], [2, 1, 3], [3, 2, 4]])
    batches = data[:12].reshape(4, 3, -1)
    assert torch.equal(cpu_kernels.pair_losses(enc, dec, nbr, batches, "l1", threads=1),
                       cpu_kernels.pair_losses(enc, dec, nbr, batches, "l1", threads=2))


def test_training_loss_is_the_epoch_mean_of_batch_losses():
    """With a zero learning rate nothing moves, so the epoch's loss is the loss on all rows."""
    enc_l, dec_l = autoencoder_layouts(17, [9, 6], 3)
    enc, dec, data, parents, orders, _ = _setup(enc_l, dec_l)
    _, _, got = cpu_kernels.train_pairs(enc, dec, parents, parents, data, orders, np.zeros(len(parents)), 5, "l1",
                                        0.5, 0.999)
    want = [batched.reconstruction_loss(batched.pair_forward(enc_l, dec_l, enc.params[k], dec.params[k], data),
                                        data, "l1").item() for k in parents]
    assert np.allclose(got, want, rtol=1e-5)


@pytest.mark.parametrize("loss", ["l1", "mse", "bce"])
def test_pair_losses_equal_the_torch_path(loss):
    enc, dec, data, *_ = _setup(*autoencoder_layouts(17, [9], 3))
    nbr = np.array([[0, 5, 1, 2], [1, 0, 2, 2], [2, 1, 3, 4], [5, 4, 0, 1]])  # repeats are allowed
    batches = data[:20].reshape(4, 5, -1)
    got = cpu_kernels.pair_losses(enc, dec, nbr, batches, loss)
    want = batched.pair_losses(enc, dec, torch.as_tensor(nbr), batches, loss)
    assert got.shape == (4, 4, 4) and torch.allclose(got, want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("loss", ["l1", "mse", "bce"])
def test_centre_losses_equal_the_torch_path(loss):
    enc, dec, data, *_ = _setup(*autoencoder_layouts(17, [9], 3))
    got = cpu_kernels.centre_losses(enc, dec, data, loss, chunk=4)  # 23 rows: a last chunk of 3
    want = batched.centre_losses(enc, dec, data, loss)
    assert got.shape == (6,) and torch.allclose(got, want, rtol=1e-5)


def test_vectorised_sigmoid_matches_torch():
    h = np.concatenate([np.linspace(-120, 120, 20001, dtype=np.float32), np.float32([0.0, -0.0, 1e-30, 88.5, -88.5])])
    want = torch.sigmoid(torch.as_tensor(h)).numpy()
    got = h.copy()
    cpu_kernels._sigmoid_(got, np.empty(h.size, dtype=np.int32))
    assert np.all((got >= 0) & (got <= 1))
    assert np.allclose(got, want, rtol=8e-7, atol=1e-37)


def test_kernels_leave_torch_thread_count_alone():
    """Numba's OpenMP pool is torch's: starting it must not turn a one-thread run (parallel
    sweeps, Ray workers) into a two-thread one. Run in a fresh process, where the pool starts."""
    import subprocess
    import sys

    code = """
import numpy as np, torch
torch.set_num_threads(1)
from coevo.population import Stack
from coevo.genome import autoencoder_layouts, init_params
from coevo.training import cpu_kernels
enc_l, dec_l = autoencoder_layouts(6, [4], 2)
rng = np.random.default_rng(0)
enc, dec = Stack.fresh(enc_l, init_params(enc_l, 2, rng)), Stack.fresh(dec_l, init_params(dec_l, 2, rng))
cpu_kernels.train_pairs(enc, dec, np.arange(2), np.arange(2), torch.rand(8, 6), np.stack([np.arange(8)] * 2),
                        np.full(2, 0.01), 4, "l1", 0.5, 0.999)
print(torch.get_num_threads())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1"


def test_fields_are_views_and_a_non_contiguous_stack_is_refused():
    """A contiguous copy of an output stack would take the kernel's writes and lose them."""
    layout, _ = autoencoder_layouts(17, [9], 3)
    stack = _stack(layout, 8, np.random.default_rng(0))
    for field, view in zip(FIELDS, cpu_kernels._fields(stack)):
        if getattr(stack, field).numel():  # empty optional fields (no flips, no memory) share nothing
            assert np.shares_memory(view, getattr(stack, field).numpy()), field
    every_other = stack.map(lambda t: t[::2])  # a strided view of every second network
    with pytest.raises(ValueError, match="params is not C-contiguous"):
        cpu_kernels._fields(every_other)
