"""SNIP: SNIP-it's unstructured saliency, |dL/dw * w| / L, ranked globally over the network.

Verdenius, Stol and Forré, "Pruning via Iterative Ranking of Sensitivity Statistics" (2020;
code: StijnVerdenius/SNIP-it, models/criterions/SNIPit.py). Reads ``context.gradients(net)``: the
gradients of the pair's loss L (``model.loss``) on ``prune.cases`` training rows, one backward
pass shared by the encoder and the decoder.

Every alive weight and bias of the network is scored |g * w| / L (g its gradient, w its value);
the ``amount`` fraction of the network's alive entries with the lowest scores (stochastically
rounded; protected entries count as alive) is pruned, ranked together across all layers as SNIP-it's global ranking
does; ties are broken at random with ``rng``. Unlike the paper, where each step recomputes the
gradients and ANDs a fresh top-k mask with the old one, pruned entries here simply stay pruned
and only alive entries are ranked, which is the same once the mask is persistent.

The paper has no protection; here the rules of :mod:`coevo.operators.protection` hold (every
input and output unit keeps an entry, one input -> output path stays). In place: it changes the masks of the network it is given.
"""

from __future__ import annotations

import numpy as np

from coevo.genome import Network
from coevo.operators.base import LayerGradients, PruneContext, registry
from coevo.operators.criterion import criterion
from coevo.operators.selector import EntryScores


def snip_scores(net: Network, grads: list[LayerGradients]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per layer, (weight scores (out x in), bias scores (out,)): |g * w| / L of the masked
    weights (divided by L only when L > 0; the ranking does not depend on it)."""
    scores = []
    for layer, g in zip(net.layers, grads, strict=True):
        if g.weight.shape != layer.weight.shape or g.bias.shape != layer.bias.shape:
            raise ValueError(f"gradients of shape {g.weight.shape} do not match weights {layer.weight.shape}")
        scale = 1.0 / g.loss if g.loss > 0 else 1.0
        w = np.where(layer.weight_mask, layer.weight, 0.0)
        b = np.where(layer.bias_mask, layer.bias, 0.0)
        scores.append((np.abs(g.weight * w) * scale, np.abs(g.bias * b) * scale))
    return scores


@criterion("snip", scope="global", unit="weight")
def snip_criterion(net: Network, context: PruneContext, rng: np.random.Generator) -> list[EntryScores]:
    """SNIP-it: prune the fraction `amount` of alive entries with the lowest |dL/dw * w| / L, globally."""
    return [EntryScores(w, b) for w, b in snip_scores(net, context.gradients(net))]


snip_prune = registry.lookup("snip")()
"""The operator at its default settings, as a plain callable (net, amount, rng, context)."""
