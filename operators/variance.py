"""VARIANCE (SPEC 6): activation-guided pruning by the spread of each neuron's output.

A neuron whose output barely changes over the training inputs carries little information. Each
neuron is scored by the standard deviation of its output over the recorded training cases
(``context.activations(net)``), min-max normalised over the layer's alive neurons to s in [0, 1].
Every alive entry (incoming weight or bias) of a neuron gets the sampling weight

    (1 - s) + EPSILON   for direction = "low" (the default; prune.params.direction), or
    s + EPSILON         for "high" (the reference's scaling, which favours high-variance neurons),

and a fraction ``amount`` of the layer's alive entries (an unbiased stochastic rounding) is drawn
without replacement in proportion to those weights. The draw is a criterion like any other: each
entry's score is E / weight with E ~ Exp(1), and the lowest scores go, which is a weighted draw
without replacement (Efraimidis and Spirakis 2006). EPSILON keeps every alive entry prunable. When
all alive neurons have the same spread the draw is uniform, as RANDOM's. The protection rules hold
(:mod:`coevo.operators.protection`). In place: it changes the masks of the network it is given.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from coevo.genome import Network
from coevo.operators.base import PruneContext, registry
from coevo.operators.criterion import criterion
from coevo.operators.selector import EntryScores

EPSILON = 0.01
"""Weight floor: the least-favoured neuron is still drawn, EPSILON / (1 + EPSILON) as often as the most."""


def neuron_weights(std: np.ndarray, alive: np.ndarray, direction: str = "low") -> np.ndarray:
    """Per-neuron sampling weights from output standard deviations: low (or high) spread -> high weight.

    The normalisation runs over the alive neurons only, so a pruned neuron's flat output does not
    stretch the scale of the rest.
    """
    if direction not in ("low", "high"):
        raise ValueError(f"variance direction must be 'low' or 'high', got {direction!r}")
    std = np.asarray(std, dtype=np.float64)
    score = np.full(std.shape, 0.5)
    if alive.any():
        lo, hi = std[alive].min(), std[alive].max()
        if hi > lo:
            score = np.clip((std - lo) / (hi - lo), 0.0, 1.0)
    return (1.0 - score if direction == "low" else score) + EPSILON


@criterion("variance", scope="layer", unit="weight", units=("weight",))
def variance_scores(net: Network, context: PruneContext, rng: np.random.Generator, *,
                    direction: Literal["low", "high"] = "low") -> list[EntryScores]:
    """Prune a fraction `amount` of alive entries, favouring low-variance neurons (or high: direction)."""
    scores = []
    for i, (layer, acts) in enumerate(zip(net.layers, context.activations(net), strict=True)):
        if acts.ndim != 2 or acts.shape[1] != layer.weight_mask.shape[0]:
            raise ValueError(f"activations of layer {i} have shape {acts.shape}; expected (cases, "
                             f"{layer.weight_mask.shape[0]})")
        weights = neuron_weights(acts.std(axis=0, dtype=np.float64), layer.alive_neurons(), direction)
        scores.append(EntryScores(rng.standard_exponential(layer.weight.shape) / weights[:, None],
                                  rng.standard_exponential(layer.bias.shape) / weights))
    return scores


variance_prune = registry.lookup("variance")()
"""The operator at its default settings, as a plain callable (net, amount, rng, context)."""
