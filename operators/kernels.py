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
def uniform_index(m, rng):  # pragma: no cover - jitted
    """A uniform integer in [0, m): ``rng.random()`` scaled, about ten times cheaper than
    ``rng.integers`` inside Numba (bias below 2**-53 * m)."""
    return int(rng.random() * m)


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
def uniform_sample(m, n, rng):  # pragma: no cover - jitted
    """``n`` distinct indices of ``range(m)`` drawn uniformly (partial Fisher-Yates)."""
    n = min(max(n, 0), m)
    idx = np.arange(m)
    for i in range(n):
        j = i + uniform_index(m - i, rng)
        idx[i], idx[j] = idx[j], idx[i]
    return idx[:n].copy()


@numba.njit(cache=True)
def lowest_capped(scores, groups, caps, n, rng):  # pragma: no cover - jitted
    """Indices of the ``n`` lowest ``scores`` (float64; ties broken uniformly with ``rng``), taking
    at most ``caps[g]`` entries of group ``g`` (``groups``: int64 ids from 0). Fewer than ``n``
    come back only when the caps leave fewer. The global scope's choice: the groups are layers.

    Usually O(entries), no sort: the ``n`` lowest under random ties (a partition), and if no cap
    is exceeded that is the answer. Otherwise every entry gets a random key, they are sorted by
    key then stably by score, and taken in that order while their group has room: the same law,
    the n lowest under a uniformly random tie order, subject to the caps.
    """
    m = scores.size
    n = min(max(n, 0), m)
    if n == 0:
        return np.empty(0, dtype=np.int64)
    fast = lowest_with_random_ties(scores, n, rng)
    taken = np.zeros(caps.size, dtype=np.int64)
    for k in range(fast.size):
        taken[groups[fast[k]]] += 1
    over = False
    for g in range(caps.size):
        if taken[g] > caps[g]:
            over = True
    if not over:
        return fast
    keys = np.empty(m, dtype=np.float64)
    for k in range(m):
        keys[k] = rng.random()
    shuffled = np.argsort(keys)
    order = shuffled[np.argsort(scores[shuffled], kind="mergesort")]
    chosen = np.empty(n, dtype=np.int64)
    taken[:] = 0
    t = 0
    for k in range(m):
        if t == n:
            break
        e = order[k]
        if scores[e] != scores[e]:
            continue  # NaN: never chosen
        g = groups[e]
        if taken[g] < caps[g]:
            taken[g] += 1
            chosen[t] = e
            t += 1
    return chosen[:t]


@numba.njit(cache=True)
def lowest_with_random_ties(scores, n, rng):  # pragma: no cover - jitted
    """The ``n`` (0 <= n <= entries) lowest ``scores``, those tied at the boundary drawn uniformly."""
    m = scores.size
    if n <= 0:
        return np.empty(0, dtype=np.int64)
    v = np.partition(scores, n - 1)[n - 1]
    chosen = np.empty(n, dtype=np.int64)
    tied = np.empty(m, dtype=np.int64)
    b = 0
    t = 0
    for k in range(m):
        if scores[k] < v:
            chosen[b] = k
            b += 1
        elif scores[k] == v:
            tied[t] = k
            t += 1
    r = min(n - b, t)  # fewer only if v is NaN (NaN scores are never chosen)
    for i in range(r):  # partial Fisher-Yates: a uniform choice of n - b of the t tied
        j = i + uniform_index(t - i, rng)
        tied[i], tied[j] = tied[j], tied[i]
        chosen[b + i] = tied[i]
    return chosen[:b + r]
