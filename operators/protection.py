"""The protection rules, written once: what no pruning may take from a network.

1. every input unit of the autoencoder (a column of the encoder's first layer) keeps an alive weight,
   where the run asks for it (``prune.keep_inputs``; off by default: the layer is then not marked
   as holding input units, so an input that carries nothing may lose all its weights);
2. every output unit (a row of the decoder's last layer) keeps an alive weight or its bias;
3. the network stays connected: some path of alive weights runs from its inputs to its outputs,
   so every layer keeps a neuron with an alive incoming weight that leads somewhere (a layer of
   bias-only neurons would make everything after it a constant).

A network is an encoder or a decoder on its own: an operator sees one at a time, so "inputs" of a
decoder are all its latent inputs and "outputs" of an encoder all its latent neurons. Every input
-> output path crosses exactly one neuron of each layer, so a neuron can go without disconnecting
the network exactly when another neuron of its layer lies on such a path (:func:`on_path`).

The selector (:mod:`coevo.operators.selector`) applies these rules to every criterion; operators
with their own procedure (lexicase filtering, merging, latent folds) ask :func:`removable` before
they cut a neuron; :meth:`coevo.evolution.population.Stack.store_masks` checks the result of every operator,
a user's included (:func:`violation`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from coevo.genome import Network

Masks = Sequence[tuple[np.ndarray, np.ndarray]]
"""Per layer, (weight mask (out x in), bias mask (out,)), bool."""


def masks_of(net: Network) -> list[tuple[np.ndarray, np.ndarray]]:
    """The network's masks as (weight, bias) pairs (the arrays themselves, not copies)."""
    return [(layer.weight_mask, layer.bias_mask) for layer in net.layers]


def forward_reach(masks: Masks) -> list[np.ndarray]:
    """Per layer, the neurons reached from the network's inputs through alive weights."""
    reached, previous = [], None
    for weight, _ in masks:
        now = weight.any(axis=1) if previous is None else weight[:, previous].any(axis=1)
        reached.append(now)
        previous = now
    return reached


def backward_reach(masks: Masks) -> list[np.ndarray]:
    """Per layer, the neurons from which an alive-weight path leads to the network's outputs
    (every neuron of the last layer is an output)."""
    reach = [np.ones(masks[-1][0].shape[0], dtype=bool)]
    for weight, _ in masks[:0:-1]:
        reach.append(weight[reach[-1]].any(axis=0))
    return reach[::-1]


def on_path(masks: Masks) -> list[np.ndarray]:
    """Per layer, the neurons on some input -> output path of alive weights."""
    return [f & b for f, b in zip(forward_reach(masks), backward_reach(masks))]


def connected(masks: Masks) -> bool:
    """Whether some path of alive weights runs from the inputs to the outputs."""
    return bool(forward_reach(masks)[-1].any())


def removable(net: Network, layer: int, neuron: int) -> bool:
    """Whether cutting ``neuron`` of ``layer`` (its incoming weights and bias) keeps the rules:
    the network stays connected, no input unit loses its last weight, and it is no output unit."""
    lay = net.layers[layer]
    if lay.output_units:
        return False
    if lay.input_units:
        holds = lay.weight_mask[neuron]
        if np.any(lay.weight_mask[:, holds].sum(axis=0) <= 1):
            return False
    path = on_path(masks_of(net))[layer]
    return not path[neuron] or int(path.sum()) > 1


def removable_input(net: Network, unit: int) -> bool:
    """Whether masking input ``unit``'s column (a decoder's latent input) keeps the network connected."""
    first = net.layers[0].weight_mask
    leads = first[backward_reach(masks_of(net))[0]].any(axis=0)  # inputs on an input -> output path
    return not leads[unit] or int(leads.sum()) > 1


def violation(role: str, old: Masks, new: Masks, keep_inputs: bool = True) -> str | None:
    """What rule ``new`` breaks that ``old`` kept, in words, or None. Rules an old network already
    broke (say, a checkpoint written before they existed) are not charged to the operator. With
    ``keep_inputs`` False (``prune.keep_inputs``) an input unit may lose its last weight."""
    first, last = new[0][0], new[-1]
    if role == "encoder" and keep_inputs:
        lost = np.flatnonzero(~first.any(axis=0) & old[0][0].any(axis=0))
        if lost.size:
            return f"input unit {int(lost[0])} lost its last alive weight"
    if role == "decoder":
        alive = last[0].any(axis=1) | last[1]
        was = old[-1][0].any(axis=1) | old[-1][1]
        lost = np.flatnonzero(~alive & was)
        if lost.size:
            return f"output unit {int(lost[0])} lost its last alive weight and its bias"
    if connected(old) and not connected(new):
        reach = forward_reach(new)
        layer = next(i for i, r in enumerate(reach) if not r.any())
        return (f"no path of alive weights is left from its inputs to its outputs (no neuron of layer {layer} "
                f"has an alive weight from one reached before it)")
    return None


def input_cover(net: Network) -> np.ndarray | None:
    """For a network holding the autoencoder's input units: how many alive weights each input has."""
    first = net.layers[0]
    return first.weight_mask.sum(axis=0) if first.input_units else None


def protected_entries(net: Network, keep: list[tuple[np.ndarray, np.ndarray | None]] | None,
                      rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per layer, the (weight, bias) entries a weight-level prune must leave alive so that the
    rules hold whatever else goes: one alive weight of every input unit, one alive entry of every
    output unit, and one input -> output path of alive weights.

    ``keep`` gives per layer (weight scores, bias scores or None), higher = more worth keeping:
    the best-scoring entry is the one protected, and the path follows the best weights back from
    the best-ending neuron. With ``keep`` None the protected entries are drawn uniformly with ``rng``.
    Only alive entries are protected; a network that is already disconnected gets no path.
    """
    masks = masks_of(net)
    protected = [(np.zeros_like(w), np.zeros_like(b)) for w, b in masks]

    def best(scores: np.ndarray | None, alive: np.ndarray, axis: int) -> np.ndarray:
        """Along ``axis``, the index of the highest-scoring alive entry, ties drawn uniformly."""
        draw = rng.random(alive.shape)
        if scores is None:
            return np.where(alive, draw, -1.0).argmax(axis=axis)
        masked = np.where(alive, scores, -np.inf)
        top = alive & (masked == masked.max(axis=axis, keepdims=True))
        return np.where(top, draw, -1.0).argmax(axis=axis)

    first, last = net.layers[0], net.layers[-1]
    if first.input_units:
        cols = np.flatnonzero(first.weight_mask.any(axis=0))
        rows = best(None if keep is None else keep[0][0][:, cols], first.weight_mask[:, cols], 0)
        protected[0][0][rows, cols] = True
    if last.output_units:
        entries = np.concatenate([last.weight_mask, last.bias_mask[:, None]], axis=1)
        rows = np.flatnonzero(entries.any(axis=1))
        if keep is None:
            scores = None
        else:
            w, b = keep[-1]
            scores = np.concatenate([w, (np.full(w.shape[0], np.inf) if b is None else b)[:, None]], axis=1)[rows]
        cols = best(scores, entries[rows], 1)
        on_bias = cols == last.weight_mask.shape[1]
        protected[-1][0][rows[~on_bias], cols[~on_bias]] = True
        protected[-1][1][rows[on_bias]] = True
    path = on_path(masks)
    if not path[-1].any():
        return protected
    # the path: from the last layer back, each step the best alive weight into the current neuron
    # from a neuron of the layer below that is itself on a path (any input for the first layer)
    ends = np.flatnonzero(path[-1])
    if keep is None:
        j = int(ends[rng.integers(ends.size)])
    else:
        w_last = keep[-1][0]
        below = path[-2] if len(masks) > 1 else np.ones(w_last.shape[1], dtype=bool)
        reach = np.where(masks[-1][0] & below[None, :], w_last, -np.inf).max(axis=1)
        j = int(ends[np.argmax(reach[ends])])
    for layer in range(len(masks) - 1, -1, -1):
        below = path[layer - 1] if layer > 0 else np.ones(masks[0][0].shape[1], dtype=bool)
        alive = masks[layer][0][j] & below
        i = int(best(None if keep is None else keep[layer][0][j], alive, 0))
        protected[layer][0][j, i] = True
        j = i
    return protected
