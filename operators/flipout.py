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

The original has no per-layer floor; here the protection rules hold (:mod:`coevo.operators.protection`):
a global ranking cannot empty the 10-wide latent layer or cut an input or output unit off. Scope
and unit are settings like any criterion's (``prune.params.scope = "layer"``). The authors' gradient noise belongs to the method but lives in the
trainer: ``train.gradient_noise`` (their lambda, 1 in the paper). Their schedule halves the
remaining weights every k epochs: ``prune.amount = 0.5`` with the ``every`` schedule.
"""

from __future__ import annotations

import numpy as np

from coevo.genome import Network
from coevo.operators.base import PruneContext, needs, registry
from coevo.operators.criterion import criterion
from coevo.operators.selector import EntryScores


def flipout_scores(weight: np.ndarray, flips: np.ndarray, p: float = 2.0) -> np.ndarray:
    """|w|^p / (flips + 1), elementwise."""
    return np.abs(weight.astype(np.float64)) ** p / (flips.astype(np.float64) + 1.0)


@criterion("flipout", scope="global", unit="weight")
@needs(flips=True)
def flipout_criterion(net: Network, context: PruneContext, rng: np.random.Generator, *,
                      p: float = 2.0, include_bias: bool = False) -> list[EntryScores]:
    """Prune the fraction `amount` of alive weights with the lowest |w|^p / (sign flips + 1), globally."""
    if not p > 0:
        raise ValueError(f"flipout's p must be > 0, got {p}")
    scores = []
    for layer in net.layers:
        if layer.weight_flips is None:
            raise ValueError("flipout needs sign-flip counts; the run does not track them")
        scores.append(EntryScores(flipout_scores(layer.weight, layer.weight_flips, p),
                                  flipout_scores(layer.bias, layer.bias_flips, p) if include_bias else None))
    return scores


flipout_prune = registry.lookup("flipout")()
"""The operator at its default settings, as a plain callable (net, amount, rng, context)."""
