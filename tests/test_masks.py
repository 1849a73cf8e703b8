"""SPEC 3: a pruned entry is exactly zero and stays zero through any amount of training."""

import numpy as np
import pytest
import torch

from coevo import batched
from coevo.genome import autoencoder_layouts, init_params
from coevo.population import Stack
from operators.kernels import random_prune_layer


@pytest.mark.parametrize("train_epoch", [batched.train_epoch, batched.train_epoch_torch], ids=["cpu", "torch"])
def test_pruned_entries_stay_zero_through_training(train_epoch):
    enc, dec = autoencoder_layouts(16, [8], 4)
    rng = np.random.default_rng(0)
    e = Stack.fresh(enc, init_params(enc, 3, rng))
    d = Stack.fresh(dec, init_params(dec, 3, rng))
    pairs = Stack.join(e, d)
    pairs.mask &= torch.as_tensor(rng.random(pairs.mask.shape) > 0.4)
    pairs.apply_masks()
    pruned = ~pairs.mask.clone()
    data = torch.rand(40, 16)
    lr = np.full(3, 0.05)
    for epoch in range(5):
        orders = torch.as_tensor(np.stack([rng.permutation(40) for _ in range(3)]))
        train_epoch(pairs, data, orders, lr, 4, "l1", 0.5, 0.999)
    assert torch.all(pairs.params[pruned] == 0)
    assert torch.all(pairs.exp_avg[pruned] == 0) and torch.all(pairs.exp_avg_sq[pruned] == 0)
    assert torch.any(pairs.params[~pruned] != 0)  # and the rest did train
    # fresh optimizer each batch (the reference's behaviour) keeps them zero too
    train_epoch(pairs, data, orders, lr, 4, "mse", 0.5, 0.999, fresh_optimizer_each_batch=True)
    assert torch.all(pairs.params[pruned] == 0)


def test_random_prune_layer_respects_amount_and_keeps_a_neuron():
    rng = np.random.default_rng(3)
    for amount in (0.0, 0.1, 0.5):
        wm, bm = np.ones((30, 10), bool), np.ones(30, bool)
        alive = wm.sum() + bm.sum()
        n = random_prune_layer(wm, bm, amount, rng)
        assert n == alive - (wm.sum() + bm.sum())
        assert n <= np.ceil(amount * alive)
        assert n >= np.floor(amount * alive)
    wm, bm = np.ones((3, 2), bool), np.ones(3, bool)
    for _ in range(20):
        random_prune_layer(wm, bm, 1.0, rng)
        assert (wm.any(axis=1) | bm).sum() >= 1


def test_random_prune_is_uniform():
    counts = np.zeros((4, 5))
    rng = np.random.default_rng(11)
    for _ in range(4000):
        wm, bm = np.ones((4, 5), bool), np.zeros(4, bool)
        random_prune_layer(wm, bm, 0.25, rng)  # 5 of 20
        counts += ~wm
    freq = counts / 4000
    assert np.allclose(freq, 0.25, atol=0.04)
