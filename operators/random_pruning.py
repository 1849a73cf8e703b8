"""RANDOM (SPEC 6): prune a fraction ``amount`` of the alive entries, uniformly without
replacement, in each layer (``scope = "layer"``, the paper's) or over the network
(``"global"``). With ``unit = "neuron"`` it cuts whole neurons drawn uniformly: structured
random, the control for SNAP, CONJUNCTIVE and Early-Bird. The protection rules
(:mod:`coevo.operators.protection`) hold; protected entries count as alive, so a layer loses
``amount`` of what it has."""

from __future__ import annotations

import numpy as np

from coevo.genome import Network
from coevo.operators.base import PruneContext, registry
from coevo.operators.criterion import criterion


@criterion("random", scope="layer", unit="weight")
def random_scores(net: Network, context: PruneContext, rng: np.random.Generator) -> None:
    """Uniform random pruning of a fraction `amount` of the alive entries (or neurons: unit = neuron)."""
    return None


random_prune = registry.lookup("random")()
"""The operator at its default settings, as a plain callable (net, amount, rng, context)."""
