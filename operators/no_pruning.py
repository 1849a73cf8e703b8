"""NONE: the identity operator, for runs without pruning."""

from __future__ import annotations

import numpy as np

from coevo.genome import Network
from coevo.operators.base import PruneContext, register


@register("none")
def no_prune(net: Network, amount: float, rng: np.random.Generator, context: PruneContext) -> Network:
    """No pruning: masks are left as they are."""
    return net
