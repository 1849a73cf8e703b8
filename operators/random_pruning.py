"""RANDOM: in each layer, prune a fraction ``amount`` of the alive weights and biases,
uniformly without replacement (SPEC 6). One entry of every input and output unit of the
autoencoder is spared (``sparing_units``)."""

from __future__ import annotations

import numpy as np

from coevo.genome import Network
from coevo.operators.base import PruneContext, register, sparing_units
from coevo.operators.kernels import random_prune_layer


@register("random")
def random_prune(net: Network, amount: float, rng: np.random.Generator, context: PruneContext) -> Network:
    """Uniform random pruning of a fraction `amount` of each layer's alive entries."""
    for layer in net.layers:
        with sparing_units(layer, rng):
            random_prune_layer(layer.weight_mask, layer.bias_mask, amount, rng)
    return net
