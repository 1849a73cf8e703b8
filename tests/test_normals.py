"""The CPU path's gradient noise: exact standard normals (numpy's ziggurat), independent draws
(no table that repeats), the same distribution as the torch path's ``torch.randn``."""

import numba
import numpy as np
import pytest
import torch
from scipy import stats

from coevo.population import Stack
from coevo.genome import autoencoder_layouts, init_params
from coevo.training import adam, cpu_kernels

N = 1_000_000


@numba.njit
def _replay(out, words):
    """The kernel's ziggurat fed ``words`` (another generator's 64-bit output) instead of SplitMix64."""
    state = np.uint64(0)
    for i in range(out.size):
        state, out[i] = cpu_kernels.standard_normal(state, words)
    return state


@pytest.fixture(scope="module")
def draws():
    out = np.empty(N)
    cpu_kernels.fill_normals(out, 20240607)
    return out


def test_the_ziggurat_is_numpys():
    """Fed PCG64's words, the kernel's ziggurat gives numpy's standard normals (to the last digits
    of the tables, which numpy rounds differently) and uses exactly as many words: the same
    layers, wedge and tail tests, in the same order."""
    words = np.random.PCG64(5).random_raw(2 * N)
    ours = np.empty(N)
    used = _replay(ours, words)
    generator = np.random.Generator(np.random.PCG64(5))
    theirs = generator.standard_normal(N)
    assert np.allclose(ours, theirs, rtol=1e-13, atol=0)
    assert np.sum(np.abs(theirs) > cpu_kernels._ZIG_R) > 200  # the tail was exercised (~258 expected)
    skipped = np.random.PCG64(5)
    skipped.advance(int(used))
    assert skipped.state == generator.bit_generator.state


def test_the_tables_are_the_ziggurats():
    """256 layers of equal area v under exp(-x^2 / 2): the base strip (to R plus the tail) and
    each rectangle x_i (f(x_{i-1}) - f(x_i)); the top one reaches f = 1."""
    k, w, f, r = cpu_kernels._ZIG_K, cpu_kernels._ZIG_W, cpu_kernels._ZIG_F, cpu_kernels._ZIG_R
    x = w * 2.0**52
    v = r * f[-1] + np.sqrt(2 * np.pi) * stats.norm.sf(r)
    assert np.isclose(x[0] * f[-1], v, rtol=1e-14)
    assert np.allclose(x[1:] * (np.r_[1.0, f[1:-1]] - f[1:]), v, rtol=1e-10)
    assert np.allclose(f[1:], np.exp(-0.5 * x[1:] ** 2), rtol=1e-14)
    bounds = np.r_[r / x[0], 0.0, x[1:-1] / x[2:]] * 2.0**52  # accept a draw below x_{i-1}: always inside
    assert k[1] == 0 and np.all(np.abs(k - bounds) <= 2)


def test_the_kernels_normals_have_the_moments_of_a_standard_normal(draws):
    z = draws
    se = lambda var: 5 * np.sqrt(var / N)  # noqa: E731 - five standard errors
    assert abs(z.mean()) < se(1.0)
    assert abs(z.var() - 1.0) < se(2.0)
    assert abs(stats.skew(z)) < se(6.0)
    assert abs(stats.kurtosis(z, fisher=False) - 3.0) < se(24.0)
    assert stats.kstest(z, "norm").pvalue > 1e-3
    # the tail beyond R, drawn by its own branch: 2 P(Z > R) N ~ 258 values
    beyond = np.sum(np.abs(z) > cpu_kernels._ZIG_R)
    assert abs(beyond - 2 * stats.norm.sf(cpu_kernels._ZIG_R) * N) < 5 * np.sqrt(2 * stats.norm.sf(cpu_kernels._ZIG_R) * N)


def test_the_kernels_normals_do_not_repeat(draws):
    """Independent float64 normals: no value twice in 2e5 (a 65,536-entry table repeated most of
    them), no correlation between neighbours or one training step (61,670 draws) apart."""
    z = draws
    assert np.unique(z[:200_000]).size == 200_000
    assert np.unique(z).size == N
    for lag in (1, 2, 3, 61_670):
        assert abs(np.corrcoef(z[:-lag], z[lag:])[0, 1]) < 5 / np.sqrt(N - lag)
    other = np.empty(1000)
    cpu_kernels.fill_normals(other, 20240608)  # the next seed: another stream
    assert not np.any(np.isin(other, z))
    # what the kernel adds: 1 + float32 noise on 2e5 entries takes ~199,300 distinct values (float32
    # rounding merges a few hundred); a table of 65,536 normals could give at most 65,536
    g = np.ones(200_000, np.float32)
    cpu_kernels.add_gradient_noise(g, np.ones(g.size, np.bool_), np.array([0]), np.array([g.size]), 1.0,
                                   np.array([5], np.uint64))
    assert np.unique(g).size > 195_000


def test_fill_normals_gives_the_kernels_noise():
    """add_gradient_noise adds, to the alive entries in order, float32(sd * z) with z the values
    fill_normals gives for the same seed."""
    rng = np.random.default_rng(1)
    grad = rng.normal(size=5000).astype(np.float32)
    keep = rng.random(5000) > 0.3
    offsets, sizes = np.array([0, 4000]), np.array([4000, 1000])
    noisy = grad.copy()
    state = np.array([99], np.uint64)
    cpu_kernels.add_gradient_noise(noisy, keep, offsets, sizes, 0.1, state)
    z = np.empty(keep.sum())
    end = cpu_kernels.fill_normals(z, 99)
    assert state[0] == end  # the state was advanced past exactly these draws
    at = 0
    for o, n in zip(offsets, sizes):
        g, k = grad[o:o + n], keep[o:o + n]
        sd = 0.1 * np.linalg.norm(g[k].astype(np.float64)) / np.sqrt(n)
        expected = g[k] + (sd * z[at:at + k.sum()]).astype(np.float32)
        assert np.allclose(noisy[o:o + n][k], expected, rtol=0, atol=1e-6 * sd)
        at += k.sum()


def _noise(path, seed):
    """The standardised noise (per tensor, (noisy - g) / sd on alive entries) a path adds to
    a stack's gradients, one seed per row."""
    enc, _ = autoencoder_layouts(400, [60], 10)
    rng = np.random.default_rng(seed)
    stack = Stack.fresh(enc, init_params(enc, 8, rng))
    stack.mask &= torch.as_tensor(rng.random(stack.mask.shape) > 0.2)
    grads = torch.as_tensor(rng.normal(size=stack.params.shape).astype(np.float32))
    noisy = grads.clone()
    seeds = rng.integers(2**62, size=len(stack))
    if path == "torch":
        adam.add_gradient_noise(stack, noisy, 1.0, [torch.Generator().manual_seed(int(s)) for s in seeds])
    else:
        offsets, sizes = enc.segments()
        for i, s in enumerate(seeds):
            cpu_kernels.add_gradient_noise(noisy[i].numpy(), stack.mask[i].numpy(), offsets, sizes, 1.0,
                                           np.array([s], np.uint64))
    out = []
    offsets, sizes = enc.segments()
    for i in range(len(stack)):
        g, y, k = grads[i].numpy(), noisy[i].numpy(), stack.mask[i].numpy()
        for o, n in zip(offsets, sizes):
            sd = np.linalg.norm(g[o:o + n][k[o:o + n]].astype(np.float64)) / np.sqrt(n)
            out.append((y[o:o + n] - g[o:o + n])[k[o:o + n]].astype(np.float64) / sd)
            assert np.all(y[o:o + n][~k[o:o + n]] == g[o:o + n][~k[o:o + n]])  # pruned entries: no noise
    return np.concatenate(out)


def test_both_paths_add_noise_of_one_distribution():
    cpu, tch = _noise("cpu", 3), _noise("torch", 3)
    assert cpu.size == tch.size > 150_000
    for z in (cpu, tch):
        assert abs(z.mean()) < 5 / np.sqrt(z.size) and abs(z.var() - 1) < 5 * np.sqrt(2 / z.size)
        assert abs(stats.kurtosis(z, fisher=False) - 3.0) < 5 * np.sqrt(24 / z.size)
    assert stats.ks_2samp(cpu, tch).pvalue > 1e-3
    assert abs(cpu.var() - tch.var()) < 5 * np.sqrt(4 / cpu.size)
