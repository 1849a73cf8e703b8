"""The hand-written batched passes against autograd and a per-pair loop."""

import numpy as np
import pytest
import torch

from coevo import batched
from coevo.adam import adam_step, adam_step_reference, _bias_terms
from coevo.genome import autoencoder_layouts, init_params
from coevo.population import Stack


def _pairs(n=3, d=12, seed=0):
    enc, dec = autoencoder_layouts(d, [6], 3)
    rng = np.random.default_rng(seed)
    e = Stack.fresh(enc, init_params(enc, n, rng))
    dd = Stack.fresh(dec, init_params(dec, n, rng))
    return enc, dec, e, dd


@pytest.mark.parametrize("loss", ["l1", "mse", "bce"])
def test_backward_matches_autograd(loss):
    enc, dec, e, d = _pairs()
    pairs = Stack.join(e, d)
    x = torch.rand(3, 5, 12)
    grads = torch.zeros_like(pairs.params)
    acts = batched.forward(pairs.layout, pairs.params, x)
    batched.backward(pairs.layout, pairs.layout.split(pairs.params), pairs.layout.split(grads), acts, x, loss)

    p = pairs.params.clone().requires_grad_(True)
    out = batched.forward(pairs.layout, p, x)[-1]
    if loss == "l1":
        per = torch.nn.functional.l1_loss(out, x, reduction="none")
    elif loss == "mse":
        per = torch.nn.functional.mse_loss(out, x, reduction="none")
    else:
        per = torch.nn.functional.binary_cross_entropy(out, x, reduction="none")
    per.mean(dim=(1, 2)).sum().backward()
    assert torch.allclose(grads, p.grad, atol=1e-6, rtol=1e-4)


def test_pair_losses_equal_a_per_pair_loop():
    enc, dec, e, d = _pairs(n=5)
    neighbours = torch.tensor([[0, 4, 1], [1, 0, 2], [2, 1, 3], [3, 2, 4], [4, 3, 0]])
    batches = torch.rand(5, 4, 12)
    L = batched.pair_losses(e, d, neighbours, batches, "l1")
    for k in range(5):
        for i in range(3):
            for j in range(3):
                ei, dj = neighbours[k, i], neighbours[k, j]
                out = batched.pair_forward(enc, dec, e.params[ei], d.params[dj], batches[k])
                assert L[k, i, j].item() == pytest.approx((out - batches[k]).abs().mean().item(), rel=1e-5)


def test_centre_losses_chunking_changes_nothing():
    enc, dec, e, d = _pairs(n=4)
    data = torch.rand(20, 12)
    whole = batched.centre_losses(e, d, data, "l1")
    chunked = batched.centre_losses(e, d, data, "l1", max_elements=20 * 12)
    assert torch.allclose(whole, chunked)


def test_numba_adam_equals_torch_chain():
    torch.manual_seed(0)
    n, size = 4, 57
    p = torch.randn(n, size)
    g = torch.randn(n, size)
    mask = torch.rand(n, size) > 0.3
    p.mul_(mask)
    m, v = torch.zeros(n, size), torch.zeros(n, size)
    lr = torch.tensor([1e-3, 1e-2, 1e-4, 0.5], dtype=torch.float64)
    p2, m2, v2 = p.clone(), m.clone(), v.clone()
    steps, steps2 = torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)
    for _ in range(5):
        adam_step(p, g, m, v, mask, steps, lr, 0.5, 0.999)
        steps2 += 1
        size_, inv = _bias_terms(steps2, lr, 0.5, 0.999)
        adam_step_reference(p2, g, m2, v2, mask, size_, inv, 0.5, 0.999)
    assert torch.allclose(p, p2, atol=1e-5) and torch.allclose(m, m2) and torch.allclose(v, v2), (p - p2).abs().max()
    assert torch.all(p[~mask] == 0) and torch.all(m[~mask] == 0) and torch.all(v[~mask] == 0)


def test_adam_matches_torch_optim_for_one_network():
    torch.manual_seed(1)
    w = torch.randn(1, 10)
    grads = [torch.randn(1, 10) for _ in range(4)]
    ref = w.clone().requires_grad_(True)
    opt = torch.optim.Adam([ref], lr=1e-2, betas=(0.5, 0.999))
    m, v, steps = torch.zeros(1, 10), torch.zeros(1, 10), torch.zeros(1, dtype=torch.float64)
    mask = torch.ones(1, 10, dtype=torch.bool)
    for g in grads:
        ref.grad = g.clone()
        opt.step()
        adam_step(w, g, m, v, mask, steps, torch.tensor([1e-2], dtype=torch.float64), 0.5, 0.999)
    assert torch.allclose(w, ref.detach(), atol=1e-6)
