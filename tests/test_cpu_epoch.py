"""The network-by-network Numba epoch (coevo.cpu_epoch) against the torch-ops epoch."""

import numpy as np
import pytest
import torch

from coevo import batched, cpu_epoch
from coevo.genome import LayerSpec, Layout, autoencoder_layouts, init_params
from coevo.population import Stack


def _pairs(n, layout, seed=0, pruned=0.3):
    rng = np.random.default_rng(seed)
    stack = Stack.fresh(layout, init_params(layout, n, rng))
    stack.mask &= torch.as_tensor(rng.random(stack.mask.shape) > pruned)
    stack.apply_masks()
    return stack


def _clone(stack):
    return stack.map(lambda t: t.clone())


def _setup(layout, n=4, rows=23, seed=0):
    rng = np.random.default_rng(seed + 1)
    data = torch.as_tensor((rng.random((rows, layout.layers[0].fan_in)) > 0.4).astype(np.float32))
    orders = torch.as_tensor(np.stack([rng.permutation(rows) for _ in range(n)]))
    lr = np.geomspace(1e-3, 3e-2, n)
    return _pairs(n, layout, seed), data, orders, lr


def _autoencoder(d=17):
    enc, dec = autoencoder_layouts(d, [9, 6], 3)
    return enc + dec


@pytest.mark.parametrize("loss", ["l1", "mse", "bce"])
@pytest.mark.parametrize("fresh", [False, True])
def test_numba_epoch_equals_torch_epoch(loss, fresh):
    pairs, data, orders, lr = _setup(_autoencoder())
    a, b = _clone(pairs), _clone(pairs)
    a.steps += 3  # a carried-over optimizer: bias corrections start mid-way
    b.steps += 3
    loss_torch = batched.train_epoch_torch(a, data, orders, lr, 5, loss, 0.5, 0.999, fresh)  # 23 rows: last batch of 3
    loss_numba = cpu_epoch.train_epoch(b, data, orders.numpy(), lr, 5, loss, 0.5, 0.999, fresh)
    for field in ("params", "exp_avg", "exp_avg_sq"):
        x, y = getattr(a, field), getattr(b, field)
        assert torch.allclose(x, y, atol=1e-5, rtol=1e-4), (field, (x - y).abs().max())
    assert torch.equal(a.steps, b.steps)
    assert torch.equal(b.params[~b.mask], torch.zeros(int((~b.mask).sum())))  # pruned stays exactly zero
    assert np.allclose(loss_numba, loss_torch, rtol=1e-5)
    assert not torch.equal(pairs.params, b.params)  # it trained


def test_sigmoid_hidden_layers_and_relu_output():
    layout = Layout((LayerSpec(12, 7, "sigmoid"), LayerSpec(7, 4, "sigmoid"), LayerSpec(4, 12, "relu")))
    pairs, data, orders, lr = _setup(layout, n=3, rows=20)
    a, b = _clone(pairs), _clone(pairs)
    batched.train_epoch_torch(a, data, orders, lr, 4, "mse", 0.9, 0.99)
    cpu_epoch.train_epoch(b, data, orders.numpy(), lr, 4, "mse", 0.9, 0.99)
    assert torch.allclose(a.params, b.params, atol=1e-6, rtol=1e-4), (a.params - b.params).abs().max()


def test_threads_do_not_change_the_result():
    pairs, data, orders, lr = _setup(_autoencoder(), n=5)
    serial, parallel = _clone(pairs), _clone(pairs)
    loss_1 = cpu_epoch.train_epoch(serial, data, orders.numpy(), lr, 5, "l1", 0.5, 0.999, threads=1)
    loss_2 = cpu_epoch.train_epoch(parallel, data, orders.numpy(), lr, 5, "l1", 0.5, 0.999, threads=2)
    for field in ("params", "exp_avg", "exp_avg_sq", "steps"):
        assert torch.equal(getattr(serial, field), getattr(parallel, field)), field
    assert np.array_equal(loss_1, loss_2)


def test_training_loss_is_the_epoch_mean_of_batch_losses():
    """With a zero learning rate nothing moves, so the epoch's loss is the loss on all rows."""
    pairs, data, orders, _ = _setup(_autoencoder(), n=3)
    lr = np.zeros(3)
    got = cpu_epoch.train_epoch(_clone(pairs), data, orders.numpy(), lr, 5, "l1", 0.5, 0.999)
    enc, dec = autoencoder_layouts(17, [9, 6], 3)
    want = [batched.reconstruction_loss(
        batched.pair_forward(enc, dec, pairs.params[k, : enc.size], pairs.params[k, enc.size :], data), data, "l1").item()
        for k in range(3)]
    assert np.allclose(got, want, rtol=1e-5)


def test_vectorised_sigmoid_matches_torch():
    h = np.concatenate([np.linspace(-120, 120, 20001, dtype=np.float32), np.float32([0.0, -0.0, 1e-30, 88.5, -88.5])])
    want = torch.sigmoid(torch.as_tensor(h)).numpy()
    got = h.copy()
    cpu_epoch._sigmoid_(got, np.empty(h.size, dtype=np.int32))
    assert np.all((got >= 0) & (got <= 1))
    assert np.allclose(got, want, rtol=2e-7 * 4, atol=1e-37)
