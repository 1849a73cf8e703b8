"""SPEC 3: a pruned entry is exactly zero and stays zero through any amount of training."""

import numpy as np
import pytest
import torch

from coevo import batched, cpu_kernels
from coevo.genome import autoencoder_layouts, init_params
from coevo.population import Stack
from coevo.operators.kernels import random_prune_layer


@pytest.mark.parametrize("train_pairs", [cpu_kernels.train_pairs, batched.train_pairs], ids=["cpu", "torch"])
def test_pruned_entries_stay_zero_through_training(train_pairs):
    enc_l, dec_l = autoencoder_layouts(16, [8], 4)
    rng = np.random.default_rng(0)
    e = Stack.fresh(enc_l, init_params(enc_l, 3, rng))
    d = Stack.fresh(dec_l, init_params(dec_l, 3, rng))
    for stack in (e, d):
        stack.mask &= torch.as_tensor(rng.random(stack.mask.shape) > 0.4)
        stack.apply_masks()
    start = e.params.clone()
    data = torch.rand(40, 16)
    lr = np.full(3, 0.05)
    parents = np.arange(3)
    for epoch in range(5):
        orders = np.stack([rng.permutation(40) for _ in range(3)])
        e, d, _ = train_pairs(e, d, parents, parents, data, orders, lr, 4, "l1", 0.5, 0.999)
    for stack in (e, d):
        pruned = ~stack.mask
        assert pruned.any()
        assert torch.all(stack.params[pruned] == 0)
        assert torch.all(stack.exp_avg[pruned] == 0) and torch.all(stack.exp_avg_sq[pruned] == 0)
    assert torch.any(e.params[e.mask] != start[e.mask])  # and the rest did train
    # fresh optimizer each batch (the reference's behaviour) keeps them zero too
    e, d, _ = train_pairs(e, d, parents, parents, data, orders, lr, 4, "mse", 0.5, 0.999, True)
    assert torch.all(e.params[~e.mask] == 0) and torch.all(d.params[~d.mask] == 0)


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
