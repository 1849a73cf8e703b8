"""SNAP: SNAP-it's structured saliency, whole neurons by |dL/dc_j| / L, ranked globally.

Verdenius, Stol and Forré, "Pruning via Iterative Ranking of Sensitivity Statistics" (2020;
code: StijnVerdenius/SNIP-it, models/criterions/SNAPit.py). Reads ``context.gradients(net)``:
``gate`` is dL/dc_j for a unit gate c_j on neuron j's pre-activation z_j, that is
sum over the ``prune.cases`` training rows of delta_nj * z_nj, with L the pair's loss.

Every alive neuron of the network's layers is scored |dL/dc_j| / L, except the decoder's last
layer, whose neurons are the autoencoder's output units (the encoder's input units are no layer's
neurons; the latent neurons are neurons of the encoder's last layer and may be pruned). The
``amount`` fraction of those alive neurons (stochastically rounded) with the lowest scores is
pruned, ranked together across layers as SNAP-it does (ties broken with ``rng``), by the one
selector (:mod:`coevo.operators.selector`): cutting a neuron masks its incoming weights, its bias
and its outgoing weights inside the network; a first-layer neuron goes only if every input it
feeds keeps another weight, and each layer keeps a neuron on an input -> output path. In place:
it changes the masks of the network it is given.
"""

from __future__ import annotations

import numpy as np

from coevo.genome import Network
from coevo.operators.base import LayerGradients, PruneContext, registry
from coevo.operators.criterion import criterion


def snap_scores(net: Network, grads: list[LayerGradients]) -> list[np.ndarray]:
    """Per layer, |dL/dc_j| / L of each neuron (divided by L only when L > 0)."""
    scores = []
    for layer, g in zip(net.layers, grads, strict=True):
        if g.gate.shape != layer.bias.shape:
            raise ValueError(f"gate gradients of shape {g.gate.shape} do not match {layer.bias.shape[0]} neurons")
        scores.append(np.abs(g.gate) / (g.loss if g.loss > 0 else 1.0))
    return scores


@criterion("snap", scope="global", unit="neuron")
def snap_criterion(net: Network, context: PruneContext, rng: np.random.Generator) -> list[np.ndarray]:
    """SNAP-it: prune the fraction `amount` of alive neurons with the lowest |dL/dc| / L, globally."""
    return snap_scores(net, context.gradients(net))


snap_prune = registry.lookup("snap")()
"""The operator at its default settings, as a plain callable (net, amount, rng, context)."""
