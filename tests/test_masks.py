"""SPEC 3: a pruned entry is exactly zero and stays zero through any amount of training."""

import numpy as np
import pytest
import torch

from coevo import operators
from coevo.population import Stack
from coevo.genome import Layer, Network, unit_flags
from coevo.genome import autoencoder_layouts, init_params
from coevo.operators.kernels import uniform_sample
from coevo.operators.protection import connected, masks_of, violation
from coevo.training import batched, cpu_kernels

random_op = operators.registry.get("random")


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


def _net(shapes: list[tuple[int, int]], role: str = "encoder") -> Network:
    layers = [Layer(np.ones((o, i), np.float32), np.ones(o, np.float32), np.ones((o, i), bool), np.ones(o, bool),
                    **unit_flags(role, k, len(shapes))) for k, (o, i) in enumerate(shapes)]
    net = Network(layers)
    net.role = role
    return net


@pytest.mark.parametrize("role", ["encoder", "decoder"])
def test_random_prunes_amount_of_every_layers_alive_entries(role):
    # the edge layers too: protected entries count as alive (before, they were hidden from the
    # count, and the encoder's first layer lost about a third of `amount`)
    rng = np.random.default_rng(3)
    shapes = [(30, 1000), (10, 30)] if role == "encoder" else [(30, 10), (1000, 30)]
    for amount in (0.0, 0.1, 0.3):  # 0.5 would need weights the input units hold (their last ones)
        net = _net(shapes, role)
        for layer in net.layers:  # start from 1,500 alive entries in the wide layer, as mid-run
            layer.weight_mask &= rng.random(layer.weight_mask.shape) < (1500 / layer.weight_mask.size
                                                                          if layer.weight_mask.size > 1500 else 1)
        before = [layer.alive for layer in net.layers]
        random_op(net, amount, rng, None)
        for layer, alive in zip(net.layers, before):
            assert np.floor(amount * alive) <= alive - layer.alive <= np.ceil(amount * alive)


def test_random_prune_keeps_the_rules_at_amount_one():
    rng = np.random.default_rng(4)
    for role in ("encoder", "decoder"):
        net = _net([(3, 6), (2, 3), (6, 2)], role)
        for _ in range(5):
            old = [(l.weight_mask.copy(), l.bias_mask.copy()) for l in net.layers]
            random_op(net, 1.0, rng, None)
            assert violation(role, old, masks_of(net)) is None
            assert connected(masks_of(net))
        assert all((l.weight_mask.any(axis=1)).sum() == 1 for l in net.layers[1:-1])  # down to one path


def test_random_prune_is_uniform():
    counts = np.zeros((4, 5))
    rng = np.random.default_rng(11)
    for _ in range(4000):
        wm = np.ones((4, 5), bool)
        idx = uniform_sample(20, 5, rng)  # 5 of 20
        wm.flat[idx] = False
        counts += ~wm
    freq = counts / 4000
    assert np.allclose(freq, 0.25, atol=0.04)
