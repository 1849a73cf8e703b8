"""MAGNITUDE: the baseline every pruning paper is judged against. An entry's score is |w|; a
neuron's (``unit = "neuron"``) is the norm of its alive incoming weights and bias (``reduce``:
``"l2"``, the default, or ``"l1"``). The lowest go, per layer (``scope = "layer"``) or ranked over
the whole network (``"global"``, as ``torch.nn.utils.prune.global_unstructured``). A plain global
ranking strips the 1000-wide layers first and leaves output units without a weight; the
protection rules (:mod:`coevo.operators.protection`) keep every unit and one path alive, which is
what keeps it a fair baseline. Canonical mode + ``magnitude`` + the ``polynomial`` schedule is the
plain baseline (``--preset baseline``)."""

from __future__ import annotations

import numpy as np

from coevo.genome import Network
from coevo.operators.base import PruneContext, registry
from coevo.operators.criterion import criterion
from coevo.operators.selector import EntryScores


@criterion("magnitude", scope="layer", unit="weight")
def magnitude_scores(net: Network, context: PruneContext, rng: np.random.Generator, *,
                     include_bias: bool = True) -> list[EntryScores]:
    """Magnitude pruning: the fraction `amount` of alive entries (or neurons) with the lowest |w| (or norm)."""
    return [EntryScores(np.abs(layer.weight.astype(np.float64)),
                        np.abs(layer.bias.astype(np.float64)) if include_bias else None) for layer in net.layers]


magnitude_prune = registry.lookup("magnitude")()
"""The operator at its default settings, as a plain callable (net, amount, rng, context)."""
