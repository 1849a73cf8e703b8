"""Numba kernels for mask updates. Serial, cached, and driven by an explicit
``numpy.random.Generator`` (the global numpy seed does not reach jitted code)."""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True)
def stochastic_count(amount, alive, rng):  # pragma: no cover - jitted
    """floor(amount * alive) plus one with probability equal to the fractional part:
    an unbiased integer count of entries to prune, never above ceil(amount * alive)."""
    target = amount * alive
    n = int(np.floor(target))
    if rng.random() < target - n:
        n += 1
    return min(n, alive)


@numba.njit(cache=True)
def random_prune_layer(weight_mask, bias_mask, amount, rng):  # pragma: no cover - jitted
    """Prune a fraction ``amount`` of the alive entries of one layer, uniformly without
    replacement, keeping at least one alive neuron. Returns the number pruned."""
    out, fan_in = weight_mask.shape
    n_w = out * fan_in
    flat_w = weight_mask.reshape(n_w)
    alive_idx = np.empty(n_w + out, dtype=np.int64)
    alive = 0
    for i in range(n_w):
        if flat_w[i]:
            alive_idx[alive] = i
            alive += 1
    for j in range(out):
        if bias_mask[j]:
            alive_idx[alive] = n_w + j
            alive += 1
    n = stochastic_count(amount, alive, rng)
    # partial Fisher-Yates: the first n slots become a uniform sample without replacement
    for i in range(n):
        j = i + rng.integers(0, alive - i)
        alive_idx[i], alive_idx[j] = alive_idx[j], alive_idx[i]
    # how many alive entries each neuron would keep
    keep = np.zeros(out, dtype=np.int64)
    for t in range(n, alive):
        idx = alive_idx[t]
        keep[idx // fan_in if idx < n_w else idx - n_w] += 1
    if n > 0 and keep.max() == 0:
        n -= 1  # the draw would cut the layer: spare the last sampled entry
    for t in range(n):
        idx = alive_idx[t]
        if idx < n_w:
            flat_w[idx] = False
        else:
            bias_mask[idx - n_w] = False
    return n
