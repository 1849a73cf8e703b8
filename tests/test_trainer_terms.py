"""What the seed methods add to training: FlipOut's sign-flip counts and gradient noise, Early-Bird's
scale penalty. Both trainers (the Numba kernel and the torch path) against each other and against
direct computations."""

import numpy as np
import pytest
import torch

from coevo.population import Stack
from coevo.genome import autoencoder_layouts, init_params
from coevo.training import batched, cpu_kernels
from coevo.training.trainer_terms import TrainerTerms


def _stacks(flips: bool, n=5, seed=0, pruned=0.3):
    rng = np.random.default_rng(seed)
    enc_l, dec_l = autoencoder_layouts(17, [9], 3)
    stacks = []
    for layout in (enc_l, dec_l):
        s = Stack.fresh(layout, init_params(layout, n, rng), flips=flips, memory=4)
        s.mask &= torch.as_tensor(rng.random(s.mask.shape) > pruned)
        s.apply_masks()
        s.memory += torch.arange(n, dtype=torch.float32)[:, None]  # operator state, one value per row
        stacks.append(s)
    data = torch.as_tensor((rng.random((23, 17)) > 0.4).astype(np.float32))
    parents = np.array([1, 1, 4, 0])
    orders = np.stack([rng.permutation(23) for _ in parents])
    return stacks[0], stacks[1], data, parents, orders, np.full(len(parents), 3e-2)


def _train(path, enc, dec, data, parents, orders, lr, terms=None):
    return path.train_pairs(enc, dec, parents, parents, data, orders, lr, 5, "l1", 0.5, 0.999, False, 0.05,
                            terms=terms)


def test_flip_counts_match_a_direct_count_and_are_inherited():
    enc, dec, data, parents, orders, lr = _stacks(flips=True)
    enc.flips += 2.0  # counts carried over from earlier epochs
    enc.apply_masks()
    e1, d1, _ = _train(cpu_kernels, enc, dec, data, parents, orders, lr)
    # the torch path, one step at a time, counting sign changes by hand
    e2, d2 = enc[torch.as_tensor(parents)], dec[torch.as_tensor(parents)]
    counted = [e2.flips.clone(), d2.flips.clone()]
    for start in range(0, 23, 5):
        one = np.ascontiguousarray(orders[:, start:start + 5])
        before = [e2.params.clone(), d2.params.clone()]
        e2.flips.zero_(), d2.flips.zero_()
        batched.train_epoch(e2, d2, data, torch.as_tensor(one), lr, 5, "l1", 0.5, 0.999, False, 0.05)
        for c, b, s in zip(counted, before, (e2, d2)):
            c += (b * s.params < 0).float()
    for kernel, direct in ((e1, counted[0]), (d1, counted[1])):
        assert torch.equal(kernel.flips, direct)
        assert torch.all(kernel.flips[~kernel.mask] == 0)  # a pruned weight never flips
    assert e1.flips.sum() > (enc.flips[torch.as_tensor(parents)]).sum()  # signs did flip, on top of the inherited
    assert torch.equal(e1.memory, enc.memory[torch.as_tensor(parents)])  # operator memory travels with the genome


def test_without_flip_tracking_nothing_is_counted():
    enc, dec, data, parents, orders, lr = _stacks(flips=False)
    e1, d1, _ = _train(cpu_kernels, enc, dec, data, parents, orders, lr)
    assert e1.flips.shape == (4, 0) and not e1.tracks_flips


def test_gradient_noise_has_the_authors_scale():
    """g + lambda * ||g|| / sqrt(n) * N(0, 1) on each tensor's alive entries; pruned ones untouched."""
    rng = np.random.default_rng(3)
    grad = rng.normal(size=40_000).astype(np.float32)
    keep = rng.random(40_000) > 0.2
    grad[~keep] = 0.0
    offsets, sizes = np.array([0, 30_000]), np.array([30_000, 10_000])
    noisy = grad.copy()
    cpu_kernels.add_gradient_noise(noisy, keep, offsets, sizes, 0.5, np.array([7], np.uint64))
    for at, n in zip(offsets, sizes):
        g, k = grad[at:at + n], keep[at:at + n]
        z = (noisy[at:at + n] - g)[k] / (0.5 * np.linalg.norm(g[k]) / np.sqrt(n))
        assert abs(z.mean()) < 0.03 and abs(z.std() - 1.0) < 0.03
        assert np.all(noisy[at:at + n][~k] == 0)


def test_gradient_noise_is_seeded_per_pair():
    enc, dec, data, parents, orders, lr = _stacks(flips=False)
    orders[1] = orders[0]
    plain = _train(cpu_kernels, enc, dec, data, parents, orders, lr)[0]
    terms = TrainerTerms(gradient_noise=1.0, noise_seeds=np.array([11, 12, 13, 14]))
    a = _train(cpu_kernels, enc, dec, data, parents, orders, lr, terms)[0]
    b = _train(cpu_kernels, enc, dec, data, parents, orders, lr, terms)[0]
    assert torch.equal(a.params, b.params)  # the same seeds: the same run
    assert not torch.equal(a.params, plain.params)
    # pairs 0 and 1 train the same parent in the same order: only their noise seeds differ
    assert not torch.equal(a.params[0], a.params[1]) and torch.equal(plain.params[0], plain.params[1])
    assert torch.all(a.params[~a.mask] == 0)
    with pytest.raises(ValueError, match="one seed per trained pair"):
        _train(cpu_kernels, enc, dec, data, parents, orders, lr, TrainerTerms(gradient_noise=1.0))


@pytest.mark.parametrize("half", [0, 1])
def test_scale_penalty_is_the_group_lasso_gradient(half):
    """add_scale_penalty adds d/dw of s * sum_j ||(w_j, b_j)|| (alive entries), by autograd, for
    layers stored (out, in) and, as the trainer's working copy keeps wide ones, (in, out)."""
    stack = _stacks(flips=False)[half]
    layout = stack.layout
    p, keep = stack.params[2].numpy().copy(), stack.mask[2].numpy().copy()
    assert np.all(p[~keep] == 0)  # pruned entries are zeros: the kernel relies on it
    penalty = np.array([0.3, 0.02])
    w = torch.tensor(p, requires_grad=True)
    total = 0
    for s, (lw, lb) in zip(penalty, layout.split(w)):
        total = total + s * torch.sqrt((lw ** 2).sum(dim=1) + lb ** 2).sum()
    total.backward()
    for wide in (False, True):
        meta = cpu_kernels._meta(layout, wide)
        assert meta[3].any() == (wide and half == 1)  # the decoder's layers are wide
        rows = np.empty_like(p)
        cpu_kernels._relayout(p, rows, *meta[:4], True)
        grad = np.zeros_like(p)
        cpu_kernels.add_scale_penalty(rows, grad, *meta[:4], penalty)
        back = np.empty_like(p)
        cpu_kernels._relayout(grad, back, *meta[:4], False)
        assert np.allclose(back * keep, w.grad.numpy() * keep, atol=1e-6)
        assert np.all(back[~keep] == 0)


@pytest.mark.parametrize("flips", [False, True])
def test_both_trainers_agree_with_the_penalty_on(flips):
    enc, dec, data, parents, orders, lr = _stacks(flips=flips)
    terms = TrainerTerms(scale_l1=1e-3, scale_l1_latent=1e-2)
    assert list(terms.penalties(enc.layout, dec.layout)) == [1e-3, 1e-2, 1e-3, 0.0]  # no penalty on output units
    e1, d1, l1 = _train(cpu_kernels, enc, dec, data, parents, orders, lr, terms)
    e2, d2, l2 = _train(batched, enc, dec, data, parents, orders, lr, terms)
    plain = _train(cpu_kernels, enc, dec, data, parents, orders, lr)[0]
    for a, b in ((e1, e2), (d1, d2)):
        assert torch.allclose(a.params, b.params, atol=1e-5, rtol=1e-4)
        if flips:  # counts can differ only where a weight ends a step within rounding of zero
            assert (a.flips != b.flips).float().mean() < 0.01
    assert np.allclose(l1, l2, rtol=1e-5)
    # the penalty shrinks the neurons' norms
    norm = lambda s: sum(w.norm() for w, _ in s.layout.split(s.params))  # noqa: E731
    assert norm(e1) < norm(plain)
