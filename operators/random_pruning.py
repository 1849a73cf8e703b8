"""RANDOM: in each layer, prune a fraction ``amount`` of the alive weights and biases,
uniformly without replacement (SPEC 6)."""

from __future__ import annotations

import numpy as np

from coevo.genome import Network
from coevo.operators.base import PruneContext, register
from coevo.operators.kernels import random_prune_layer


@register("random")
def random_prune(net: Network, amount: float, rng: np.random.Generator, context: PruneContext) -> Network:
    """Uniform random pruning of a fraction `amount` of each layer's alive entries."""
    for layer in net.layers:
        random_prune_layer(layer.weight_mask, layer.bias_mask, amount, rng)
    return net
