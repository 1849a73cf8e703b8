"""RANDOM (SPEC 6): prune a fraction ``amount`` of the alive entries, uniformly without
replacement, in each layer (``scope = "layer"``, the paper's) or over the network
(``"global"``). With ``unit = "neuron"`` it cuts whole neurons drawn uniformly: structured
random, the control for SNAP, CONJUNCTIVE and Early-Bird. The protection rules
(:mod:`coevo.operators.protection`) hold; protected entries count as alive, so a layer loses
``amount`` of what it has.

Under ``prune.regrow`` (the reference mode, SPEC 10) the operator does what the reference does
instead: torch's ``random_unstructured`` followed by ``prune.remove`` on every weight and every
bias tensor, that is ``round(amount * size)`` entries of each tensor drawn uniformly among all its
entries, zero or not, and no protection rule (:func:`reference_prune`)."""

from __future__ import annotations

import numpy as np

from coevo.genome import Network
from coevo.operators.base import PruneContext, register, registry
from coevo.operators.criterion import criterion_operator
from coevo.operators.kernels import uniform_sample


def random_scores(net: Network, context: PruneContext, rng: np.random.Generator) -> None:
    """Uniform random pruning of a fraction `amount` of the alive entries (or neurons: unit = neuron)."""
    return None


def reference_prune(net: Network, amount: float, rng: np.random.Generator) -> Network:
    """The reference's random pruning (torch ``random_unstructured`` + ``prune.remove``): in every
    tensor (each layer's weights, then its biases) clear ``round(amount * size)`` entries drawn
    uniformly among all of them, whether alive, already zero or masked; nothing is protected.
    Under ``prune.regrow`` the masks are all alive, so what is drawn is every entry."""
    for layer in net.layers:
        for mask in (layer.weight_mask, layer.bias_mask):
            n = int(round(float(amount) * mask.size))  # torch: round(amount * tensor_size)
            mask.flat[uniform_sample(mask.size, n, rng)] = False
    return net


_Selected = criterion_operator("random", random_scores, scope="layer", unit="weight")


@register("random")
class random_operator(_Selected):  # type: ignore[misc, valid-type]
    __doc__ = _Selected.__doc__
    __module__ = __name__

    def __call__(self, net: Network, amount: float, rng: np.random.Generator, context: PruneContext) -> Network:
        if getattr(getattr(context, "settings", None), "regrow", False) and self.unit == "weight" \
                and self.scope == "layer":
            return reference_prune(net, amount, rng)
        return super().__call__(net, amount, rng, context)


random_prune = registry.lookup("random")()
"""The operator at its default settings, as a plain callable (net, amount, rng, context)."""
