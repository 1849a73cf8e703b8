"""SNIP: SNIP-it's unstructured saliency, |dL/dw * w| / L, ranked globally over the network.

Verdenius, Stol and Forré, "Pruning via Iterative Ranking of Sensitivity Statistics" (2020;
code: StijnVerdenius/SNIP-it, models/criterions/SNIPit.py). Reads ``context.gradients(net)``: the
gradients of the pair's loss L (``model.loss``) on ``prune.cases`` training rows, one backward
pass shared by the encoder and the decoder.

Every alive weight and bias of the network is scored |g * w| / L (g its gradient, w its value);
the ``amount`` fraction of the network's alive entries with the lowest scores (stochastically
rounded; spared entries count as alive) is pruned, ranked together across all layers as SNIP-it's global ranking
does; ties are broken at random with ``rng``. Unlike the paper, where each step recomputes the
gradients and ANDs a fresh top-k mask with the old one, pruned entries here simply stay pruned
and only alive entries are ranked, which is the same once the mask is persistent.

Two rules the paper does not have: the best-scoring alive entry of every layer is kept (so no
layer loses its last neuron), and one entry of every input and output unit of the autoencoder is
spared (``sparing_units``). In place: it changes the masks of the network it is given.
"""

from __future__ import annotations

from contextlib import ExitStack

import numpy as np

from coevo.genome import Network
from coevo.operators.base import LayerGradients, PruneContext, register, sparing_units
from coevo.operators.kernels import select_lowest, stochastic_count


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


@register("snip")
def snip_prune(net: Network, amount: float, rng: np.random.Generator, context: PruneContext) -> Network:
    """SNIP-it: prune the fraction `amount` of alive entries with the lowest |dL/dw * w| / L, globally."""
    scores = snip_scores(net, context.gradients(net))
    # the fraction of all alive entries, spared ones included: the sparsity steps of SNIP-it's
    # schedule (coevo's geometric) then land where they should
    n = stochastic_count(float(amount), sum(layer.alive for layer in net.layers), rng)
    with ExitStack() as spare:
        for layer in net.layers:
            spare.enter_context(sparing_units(layer, rng))
        flat, groups, where = [], [], []
        for i, (layer, (sw, sb)) in enumerate(zip(net.layers, scores)):
            alive = np.concatenate([np.flatnonzero(layer.weight_mask), layer.weight_mask.size + np.flatnonzero(layer.bias_mask)])
            flat.append(np.concatenate([sw.ravel(), sb])[alive])
            groups.append(np.full(alive.size, i))
            where.append(alive)
        flat_all, groups_all, where_all = np.concatenate(flat), np.concatenate(groups), np.concatenate(where)
        chosen = select_lowest(np.ascontiguousarray(flat_all, dtype=np.float64), groups_all.astype(np.int64), n, rng)
        for i, layer in enumerate(net.layers):
            idx = where_all[chosen[groups_all[chosen] == i]]
            size = layer.weight_mask.size
            layer.weight_mask.flat[idx[idx < size]] = False
            layer.bias_mask[idx[idx >= size] - size] = False
    return net
