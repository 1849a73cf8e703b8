"""FLIPOUT (Apostol, Stol, Forré 2020, "FlipOut: Uncovering Redundant Weights via Sign Flipping";
code: AndreiXYZ/flipout, models/master_model.py).

A weight whose sign keeps flipping is oscillating around zero: the optimizer cannot decide what it
is for. Each alive weight is scored

    |w|^p / (flips + 1)

where ``flips`` counts how often its sign changed across optimizer steps since training began (the
trainer keeps the count, ``layer.weight_flips``, because the operator declares ``needs(flips=True)``;
it is inherited with the genome and never reset, and a pruned weight's count is zeroed). The
lowest-scoring fraction ``amount`` of the network's alive weights is pruned, ranked globally over
its layers as in the original (biases too with ``include_bias``).

The original has no per-layer floor; here every layer keeps its highest-scoring weight, so a
global ranking cannot empty the 10-wide latent layer, and one entry of every input and output unit
is spared (``sparing_units``). The authors' gradient noise belongs to the method but lives in the
trainer: ``train.gradient_noise`` (their lambda, 1 in the paper). Their schedule halves the
remaining weights every k epochs: ``prune.amount = 0.5`` with the ``every`` schedule.
"""

from __future__ import annotations

from contextlib import ExitStack

import numpy as np

from coevo.genome import Network
from coevo.operators.base import PruneContext, needs, register, sparing_units
from coevo.operators.kernels import stochastic_count


def flipout_scores(weight: np.ndarray, flips: np.ndarray, p: float = 2.0) -> np.ndarray:
    """|w|^p / (flips + 1), elementwise."""
    return np.abs(weight.astype(np.float64)) ** p / (flips.astype(np.float64) + 1.0)


@register("flipout")
@needs(flips=True)
def flipout_prune(net: Network, amount: float, rng: np.random.Generator, context: PruneContext, *,
                  p: float = 2.0, include_bias: bool = False) -> Network:
    """Prune the fraction `amount` of alive weights with the lowest |w|^p / (sign flips + 1), globally."""
    if not p > 0:
        raise ValueError(f"flipout's p must be > 0, got {p}")
    masks, scores = [], []
    alive = sum(int(l.weight_mask.sum()) + (int(l.bias_mask.sum()) if include_bias else 0) for l in net.layers)
    with ExitStack() as spared:
        for layer in net.layers:
            if layer.weight_flips is None:
                raise ValueError("flipout needs sign-flip counts; the run does not track them")
            spared.enter_context(sparing_units(layer, rng))
            entries = [(layer.weight_mask, flipout_scores(layer.weight, layer.weight_flips, p))]
            if include_bias:
                entries.append((layer.bias_mask, flipout_scores(layer.bias, layer.bias_flips, p)))
            protected = _best_alive(layer.weight_mask, entries[0][1])
            for mask, score in entries:
                candidate = mask.copy()
                if mask is layer.weight_mask and protected is not None:
                    candidate[protected] = False  # the layer's best weight stays: no layer is emptied
                masks.append((mask, candidate))
                scores.append(score)
        flat_scores = np.concatenate([s[c] for (_, c), s in zip(masks, scores)])
        n = min(stochastic_count(amount, alive, rng), flat_scores.size)  # spared entries cannot go
        if n > 0:
            # lowest scores first; equal scores in random order
            chosen = np.lexsort((rng.random(flat_scores.size), flat_scores))[:n]
            drop = np.zeros(flat_scores.size, dtype=bool)
            drop[chosen] = True
            at = 0
            for mask, candidate in masks:
                idx = np.flatnonzero(candidate)
                mask.flat[idx[drop[at : at + idx.size]]] = False
                at += idx.size
    return net


def _best_alive(mask: np.ndarray, score: np.ndarray) -> tuple[int, ...] | None:
    """Index of the highest-scoring alive entry, or None when none is alive."""
    if not mask.any():
        return None
    return np.unravel_index(np.argmax(np.where(mask, score, -np.inf)), mask.shape)
