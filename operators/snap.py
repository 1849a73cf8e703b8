"""SNAP: SNAP-it's structured saliency, whole neurons by |dL/dc_j| / L, ranked globally.

Verdenius, Stol and Forré, "Pruning via Iterative Ranking of Sensitivity Statistics" (2020;
code: StijnVerdenius/SNIP-it, models/criterions/SNAPit.py). Reads ``context.gradients(net)``:
``gate`` is dL/dc_j for a unit gate c_j on neuron j's pre-activation z_j, that is
sum over the ``prune.cases`` training rows of delta_nj * z_nj, with L the pair's loss.

Every alive neuron of the network's layers is scored |dL/dc_j| / L, except the decoder's last
layer, whose neurons are the autoencoder's output units (the encoder's input units are no layer's
neurons; the latent neurons are neurons of the encoder's last layer and may be pruned). The
``amount`` fraction of those alive neurons (stochastically rounded) with the lowest scores is
pruned, ranked together across layers as SNAP-it does (ties broken with ``rng``); each layer keeps
at least its best-scoring alive neuron. Pruning a neuron masks all its incoming weights and its
bias. In the encoder's first layer one weight of every input unit is spared (``sparing_units``),
so a neuron that holds an input's last weight keeps that weight. In place: it changes the masks
of the network it is given.
"""

from __future__ import annotations

from contextlib import ExitStack

import numpy as np

from coevo.genome import Network
from coevo.operators.base import LayerGradients, PruneContext, register, sparing_units
from coevo.operators.kernels import select_lowest, stochastic_count


def snap_scores(net: Network, grads: list[LayerGradients]) -> list[np.ndarray]:
    """Per layer, |dL/dc_j| / L of each neuron (divided by L only when L > 0)."""
    scores = []
    for layer, g in zip(net.layers, grads, strict=True):
        if g.gate.shape != layer.bias.shape:
            raise ValueError(f"gate gradients of shape {g.gate.shape} do not match {layer.bias.shape[0]} neurons")
        scores.append(np.abs(g.gate) / (g.loss if g.loss > 0 else 1.0))
    return scores


@register("snap")
def snap_prune(net: Network, amount: float, rng: np.random.Generator, context: PruneContext) -> Network:
    """SNAP-it: prune the fraction `amount` of alive neurons with the lowest |dL/dc| / L, globally."""
    scores = snap_scores(net, context.gradients(net))
    layers = [i for i, layer in enumerate(net.layers) if not layer.output_units]
    if not layers:
        return net  # a decoder of one layer: nothing but output units
    alive = [np.flatnonzero(net.layers[i].alive_neurons()) for i in layers]
    flat = np.concatenate([scores[i][a] for i, a in zip(layers, alive)])
    groups = np.concatenate([np.full(a.size, k) for k, a in enumerate(alive)])
    neurons = np.concatenate(alive)
    n = stochastic_count(float(amount), flat.size, rng)
    chosen = select_lowest(np.ascontiguousarray(flat, dtype=np.float64), groups.astype(np.int64), n, rng)
    with ExitStack() as spare:
        for k, i in enumerate(layers):
            layer = spare.enter_context(sparing_units(net.layers[i], rng))
            cut = neurons[chosen[groups[chosen] == k]]
            layer.weight_mask[cut] = False
            layer.bias_mask[cut] = False
    return net
