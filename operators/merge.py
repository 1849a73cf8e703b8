"""MERGE: data-free merging of the most similar neurons (Srinivas and Babu, BMVC 2015).

Srinivas and Babu, "Data-free parameter pruning for Deep Neural Networks" (BMVC 2015). Reads
nothing but the weights: no data, no gradients (``context`` is unused). It is the one built-in
that edits weights, through the contract's narrow capability :meth:`Network.fold_neuron`.

Per layer, as the paper: the saliency of merging neuron j into neuron i of the same layer is

    s_ij = (1 / n) * sum_k a_kj^2 * (||W_i - W_j||^2  if into's entry a_ki is alive,
                                     ||W_j||^2        if it is pruned)

with W_i neuron i's incoming weights and bias (masked), a_kj neuron j's outgoing weights (column j
of the next layer, masked) and n the next layer's width. With every outgoing entry alive it is the
paper's <a_j^2> ||W_i - W_j||^2; the second case counts the contribution that is lost where a mask
cannot revive (fold_neuron adds only onto alive entries). For a ReLU layer it bounds what the merge
changes: the next layer's pre-activations y move by ||dy||^2 <= n * s_ij * ||(x, 1)||^2 for any
input x of the layer (tests/test_seed_operators.py checks it).

Step: take the smallest s_ij (ties at random with ``rng``), fold j into i (mask j's incoming
weights and bias, add a_j to a_i where alive), update the saliencies, and repeat until the
``amount`` fraction of the layer's alive neurons (stochastically rounded, never all) is merged.
Eligible layers are those whose outgoing weights live in the same network: every layer but the
last, so the encoder's latent layer (its outgoing weights are the decoder's) and the decoder's
output units are never merged; no input unit is cut off (a neuron holding an input's last weight
is not a source, nor the last neuron of its layer on an input -> output path). In place: it changes the masks, and the folded weights, of the network it is given.
"""

from __future__ import annotations

import numpy as np

from coevo.genome import Network
from coevo.operators.base import PruneContext, needs, register
from coevo.operators.kernels import stochastic_count
from coevo.operators.protection import ends_of, masks_of, on_path


def merge_saliency(net: Network, layer_index: int) -> np.ndarray:
    """s[i, j]: the saliency of folding neuron j of layer ``layer_index`` into neuron i (see the
    module's docstring), float64; ``inf`` where i == j or either neuron is pruned, and where j
    holds an input unit's last alive weight."""
    layer, nxt = net.layers[layer_index], net.layers[layer_index + 1]
    w = np.concatenate([np.where(layer.weight_mask, layer.weight, 0.0),
                        np.where(layer.bias_mask, layer.bias, 0.0)[:, None]], axis=1).astype(np.float64)
    sq = (w * w).sum(axis=1)
    dist = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (w @ w.T), 0.0)  # ||W_i - W_j||^2
    a2 = np.square(np.where(nxt.weight_mask, nxt.weight, 0.0).astype(np.float64))  # (n, width)
    live = nxt.weight_mask.astype(np.float64)
    kept = live.T @ a2  # kept[i, j] = sum over k with a_ki alive of a_kj^2
    lost = a2.sum(axis=0)[None, :] - kept
    s = (dist * kept + sq[None, :] * lost) / nxt.weight_mask.shape[0]
    alive = layer.alive_neurons()
    source = alive.copy()
    if layer.input_units:  # a neuron holding an input's last alive weight may not be removed
        holders = layer.weight_mask & (layer.weight_mask.sum(axis=0) == 1)[None, :]
        source &= ~holders.any(axis=1)
    path = on_path(masks_of(net), **ends_of(net))[layer_index]
    if path.sum() == 1:
        source &= ~path  # the layer's last neuron on an input -> output path
    s[~alive, :] = np.inf
    s[:, ~source] = np.inf
    np.fill_diagonal(s, np.inf)
    return s


@register("merge")
@needs(linear=True)
def merge_prune(net: Network, amount: float, rng: np.random.Generator, context: PruneContext) -> Network:
    """Srinivas & Babu: per layer, merge the `amount` fraction of alive neurons into their most similar partners."""
    for li in range(len(net.layers) - 1):
        alive = int(net.layers[li].alive_neurons().sum())
        n = min(stochastic_count(float(amount), alive, rng), alive - 1)
        for _ in range(max(n, 0)):
            s = merge_saliency(net, li)
            best = s.min()
            if not np.isfinite(best):
                break  # no pair can merge (a single alive neuron, or only input holders left)
            ties = np.flatnonzero(s.ravel() == best)
            into, source = divmod(int(ties[0] if ties.size == 1 else rng.choice(ties)), s.shape[1])
            net.fold_neuron(li, source, into)
    return net
