"""The hand-written batched passes against autograd and a per-pair loop."""

import numpy as np
import pytest
import torch

from coevo.population import Stack
from coevo.genome import autoencoder_layouts, init_params
from coevo.training import batched
from coevo.training.adam import StackedAdam


def _pairs(n=3, d=12, seed=0):
    enc, dec = autoencoder_layouts(d, [6], 3)
    rng = np.random.default_rng(seed)
    e = Stack.fresh(enc, init_params(enc, n, rng))
    dd = Stack.fresh(dec, init_params(dec, n, rng))
    return enc, dec, e, dd


@pytest.mark.parametrize("loss", ["l1", "mse", "bce"])
def test_backward_matches_autograd(loss):
    enc, dec, e, d = _pairs()
    pairs = Stack.fresh(e.layout + d.layout, torch.cat([e.params, d.params], dim=1).numpy())
    x = torch.rand(3, 5, 12)
    flat = torch.zeros(pairs.params.numel())
    acts = batched.forward(pairs.layout, pairs.params, x)
    batched.backward(pairs.layout, pairs.layout.split(pairs.params), pairs.layout.split_segment_major(flat, 3),
                     acts, x, loss)
    grads = pairs.layout.segment_major_to_rows(flat, 3)

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


def _stack(n=4, seed=0):
    enc, _ = autoencoder_layouts(7, [5], 3)
    rng = np.random.default_rng(seed)
    stack = Stack.fresh(enc, init_params(enc, n, rng))
    stack.mask &= torch.as_tensor(rng.random(stack.mask.shape) > 0.3)
    stack.apply_masks()
    return stack


def test_adam_matches_torch_optim_for_one_network():
    torch.manual_seed(1)
    stack = _stack(n=1)
    stack.mask[:] = True
    ref = stack.params.clone().requires_grad_(True)
    opt_ref = torch.optim.Adam([ref], lr=1e-2, betas=(0.5, 0.999))
    opt = StackedAdam(stack, np.array([1e-2]), 0.5, 0.999)
    for _ in range(4):
        flat = torch.randn(stack.params.numel())
        ref.grad = stack.layout.segment_major_to_rows(flat, 1)
        opt_ref.step()
        opt.step(flat)
    assert torch.allclose(stack.params, ref.detach(), atol=1e-6)
