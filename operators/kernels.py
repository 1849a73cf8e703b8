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
    # pruning every alive entry would cut the layer: the last one drawn is spared
    n = min(stochastic_count(amount, alive, rng), alive - 1)
    # partial Fisher-Yates: the first n slots become a uniform sample without replacement
    for i in range(n):
        j = i + uniform_index(alive - i, rng)
        idx = alive_idx[j]
        alive_idx[j] = alive_idx[i]
        if idx < n_w:
            flat_w[idx] = False
        else:
            bias_mask[idx - n_w] = False
    return max(n, 0)


@numba.njit(cache=True)
def weighted_prune_layer(weight_mask, bias_mask, neuron_weight, amount, rng):  # pragma: no cover - jitted
    """Prune a fraction ``amount`` of the alive entries of one layer, without replacement, each
    entry drawn with probability proportional to its neuron's ``neuron_weight`` (> 0), keeping at
    least one alive neuron. Returns the number pruned.

    Sequential weighted draws, in two steps: a neuron with probability weight x its alive
    entries (a Fenwick tree over neurons, O(log out) per draw), then one of its alive entries
    uniformly. The result has the law of a per-entry weighted draw without replacement, at the
    cost of a uniform one: O(entries) to scan, O(n log out) to draw.
    """
    out, fan_in = weight_mask.shape
    n_w = out * fan_in
    flat_w = weight_mask.reshape(n_w)
    per = fan_in + 1
    slots = np.empty(out * per, dtype=np.int64)  # neuron j's alive entries: slots[j*per : j*per + count[j]]
    count = np.zeros(out, dtype=np.int64)
    alive = 0
    for j in range(out):
        c = 0
        for i in range(j * fan_in, (j + 1) * fan_in):
            if flat_w[i]:
                slots[j * per + c] = i
                c += 1
        if bias_mask[j]:
            slots[j * per + c] = n_w + j
            c += 1
        count[j] = c
        alive += c
    # pruning every alive entry would cut the layer: the last one drawn is spared
    n = min(stochastic_count(amount, alive, rng), alive - 1)
    if n <= 0:
        return 0
    mass = np.empty(out, dtype=np.float64)
    tree = np.zeros(out + 1, dtype=np.float64)  # Fenwick tree of mass, 1-based
    for j in range(out):
        mass[j] = neuron_weight[j] * count[j]
        tree[j + 1] = mass[j]
    for k in range(1, out + 1):
        parent = k + (k & -k)
        if parent <= out:
            tree[parent] += tree[k]
    top = 1
    while top * 2 <= out:
        top *= 2
    total = mass.sum()
    done = 0
    while done < n:
        if not total > 0.0:
            break  # no weight left (zero or NaN weights): stop rather than loop
        u = rng.random() * total
        pos = 0
        step = top
        while step > 0:  # largest pos with prefix(pos) <= u: neuron pos (0-based) holds u
            nxt = pos + step
            if nxt <= out and tree[nxt] <= u:
                pos = nxt
                u -= tree[nxt]
            step //= 2
        if pos >= out or count[pos] == 0:
            total = mass.sum()  # rounding landed past the last mass: resynchronise, draw again
            continue
        j = pos
        slot = j * per + uniform_index(count[j], rng)
        idx = slots[slot]
        count[j] -= 1
        slots[slot] = slots[j * per + count[j]]
        if idx < n_w:
            flat_w[idx] = False
        else:
            bias_mask[idx - n_w] = False
        new_mass = neuron_weight[j] * count[j]
        delta = new_mass - mass[j]
        mass[j] = new_mass
        total += delta
        k = j + 1
        while k <= out:
            tree[k] += delta
            k += k & -k
        done += 1
    return done


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
            j = i + uniform_index(m - i, rng)
            idx[i], idx[j] = idx[j], idx[i]
    for t in range(n):
        j = idx[t]
        weight_mask[j, :] = False
        bias_mask[j] = False
    return n



@numba.njit(cache=True)
def select_lowest(scores, groups, n, rng):  # pragma: no cover - jitted
    """Indices of the ``n`` lowest ``scores`` (float64), ties broken uniformly at random with
    ``rng``, never taking the best (highest-ranked) entry of a group (``groups``: int64 ids from 0):
    each group keeps at least one entry. Fewer than ``n`` come back only when the groups' best
    entries are all that is left. SNIP and SNAP rank with it.

    Usually O(entries), no sort: a partition finds the n-th lowest score v; every entry below v is
    taken and the rest drawn uniformly among the entries tied at v (partial Fisher-Yates). Only if
    that would take a whole group does the slow path run: a partition to the n + groups lowest
    candidates (each group blocks at most one), which get random keys and are sorted by key, then
    stably by score. Both give the same law: the n lowest under a uniformly random tie order.
    """
    m = scores.size
    n = min(max(n, 0), m)
    if n == 0:
        return np.empty(0, dtype=np.int64)
    n_groups = 0
    for k in range(m):
        n_groups = max(n_groups, groups[k] + 1)
    totals = np.zeros(n_groups, dtype=np.int64)
    for k in range(m):
        totals[groups[k]] += 1
    fast = _lowest_with_random_ties(scores, n, rng)
    taken = np.zeros(n_groups, dtype=np.int64)
    for k in range(fast.size):
        taken[groups[fast[k]]] += 1
    whole = False
    for g in range(n_groups):
        if totals[g] > 0 and taken[g] == totals[g]:
            whole = True
    if not whole:
        return fast
    used = 0
    for g in range(n_groups):
        if totals[g] > 0:
            used += 1
    kk = n + used
    bound = np.inf
    if kk < m:
        bound = np.partition(scores, kk)[kk]
    c = 0
    for k in range(m):
        if scores[k] <= bound:
            c += 1
    cand = np.empty(c, dtype=np.int64)
    c = 0
    for k in range(m):
        if scores[k] <= bound:
            cand[c] = k
            c += 1
    keys = np.empty(c, dtype=np.float64)
    for k in range(c):
        keys[k] = rng.random()
    shuffled = cand[np.argsort(keys)]
    order = shuffled[np.argsort(scores[shuffled], kind="mergesort")]
    seen = np.zeros(n_groups, dtype=np.int64)
    for k in range(c):
        seen[groups[order[k]]] += 1
    chosen = np.empty(n, dtype=np.int64)
    left = seen.copy()
    t = 0
    for k in range(c):
        if t == n:
            break
        g = groups[order[k]]
        left[g] -= 1
        if left[g] == 0 and seen[g] == totals[g]:
            continue  # the group's best entry, and every entry of the group is a candidate: kept
        chosen[t] = order[k]
        t += 1
    return chosen[:t]


@numba.njit(cache=True)
def _lowest_with_random_ties(scores, n, rng):  # pragma: no cover - jitted
    """The ``n`` (1 <= n <= entries) lowest ``scores``, those tied at the boundary drawn uniformly."""
    m = scores.size
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
