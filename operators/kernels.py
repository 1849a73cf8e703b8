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


@numba.njit(cache=True)
def weighted_prune_layer(weight_mask, bias_mask, neuron_weight, amount, rng):  # pragma: no cover - jitted
    """Prune a fraction ``amount`` of the alive entries of one layer, without replacement, each
    entry drawn with probability proportional to its neuron's ``neuron_weight`` (> 0), keeping at
    least one alive neuron. Returns the number pruned.

    Efraimidis-Spirakis sampling: every alive entry gets the key Exp(1) / weight and the ``n``
    smallest keys are pruned, which is a weighted draw without replacement in one pass.
    """
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
    if n == 0:
        return 0
    keys = np.empty(alive, dtype=np.float64)
    for t in range(alive):
        idx = alive_idx[t]
        neuron = idx // fan_in if idx < n_w else idx - n_w
        keys[t] = -np.log(1.0 - rng.random()) / neuron_weight[neuron]
    order = np.argsort(keys)  # smallest keys first: the weighted sample is order[:n]
    keep = np.zeros(out, dtype=np.int64)
    for t in range(n, alive):
        idx = alive_idx[order[t]]
        keep[idx // fan_in if idx < n_w else idx - n_w] += 1
    if keep.max() == 0:
        n -= 1  # the draw would cut the layer: spare the last sampled entry
    for t in range(n):
        idx = alive_idx[order[t]]
        if idx < n_w:
            flat_w[idx] = False
        else:
            bias_mask[idx - n_w] = False
    return n


@numba.njit(cache=True)
def lexicase_filter(acts, alive, order, threshold):  # pragma: no cover - jitted
    """The neurons that survive CONJUNCTIVE's case-by-case filter (bool per neuron).

    ``acts`` is (cases x neurons), ``alive`` marks the candidate neurons and ``order`` is the
    case order. Start from the alive neurons; for each case while more than one candidate
    remains: min-max normalise the case's activations over the alive neurons, mark those whose
    normalised value is below ``threshold``, and keep the candidates that are marked. A case that
    would leave no candidate, or whose activations are all equal, is skipped (as lexicase never
    empties its pool). If no case narrowed the pool, nothing survives: nothing is pruned.
    """
    n = acts.shape[1]
    survivors = alive.copy()
    count = 0
    for j in range(n):
        if alive[j]:
            count += 1
    marked = np.zeros(n, dtype=np.bool_)
    narrowed = False
    for c in order:
        if count <= 1:
            break
        lo = np.inf
        hi = -np.inf
        for j in range(n):
            if alive[j]:
                a = acts[c, j]
                if a < lo:
                    lo = a
                if a > hi:
                    hi = a
        if not hi > lo:
            continue  # all alive neurons alike on this case: it says nothing
        span = hi - lo
        k = 0
        for j in range(n):
            marked[j] = survivors[j] and (acts[c, j] - lo) / span < threshold
            if marked[j]:
                k += 1
        if k == 0:
            continue
        survivors[:] = marked
        count = k
        narrowed = True
    if not narrowed:
        survivors[:] = False
    return survivors


@numba.njit(cache=True)
def conjunctive_prune_layer(weight_mask, bias_mask, acts, order, threshold, amount, rng):  # pragma: no cover - jitted
    """Prune whole neurons (incoming row and bias) chosen by :func:`lexicase_filter`, at most
    ``stochastic_count(amount, alive neurons)`` of them and never every alive neuron; when the
    filter leaves more, the ones pruned are drawn uniformly among them (lexicase's random tie
    break). Returns the number of neurons pruned."""
    out, fan_in = weight_mask.shape
    alive = np.zeros(out, dtype=np.bool_)
    n_alive = 0
    for j in range(out):
        on = bias_mask[j]
        if not on:
            for i in range(fan_in):
                if weight_mask[j, i]:
                    on = True
                    break
        alive[j] = on
        if on:
            n_alive += 1
    cap = min(stochastic_count(amount, n_alive, rng), n_alive - 1)
    if cap <= 0:
        return 0
    survivors = lexicase_filter(acts, alive, order, threshold)
    idx = np.flatnonzero(survivors)
    m = idx.size
    n = min(cap, m)
    if n < m:
        # partial Fisher-Yates: a uniform choice of n of the m survivors
        for i in range(n):
            j = i + rng.integers(0, m - i)
            idx[i], idx[j] = idx[j], idx[i]
    for t in range(n):
        j = idx[t]
        weight_mask[j, :] = False
        bias_mask[j] = False
    return n
