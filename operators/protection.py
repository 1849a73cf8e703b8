"""The protection rules, written once: what no pruning may take from a network.

1. every input unit of the autoencoder (a column of the encoder's first layer) keeps an alive weight,
   where the run asks for it (``prune.keep_inputs``; off by default: the layer is then not marked
   as holding input units, so an input that carries nothing may lose all its weights);
2. every output unit (a row of the decoder's last layer) keeps an alive weight or its bias;
3. the pair stays connected: some path of alive weights runs from the autoencoder's inputs through
   a latent unit to its outputs, through the encoder AND the decoder, so every layer keeps a neuron
   with an alive incoming weight that leads somewhere (a layer of bias-only neurons would make
   everything after it a constant).

An operator sees one network at a time, but rule 3 is a property of the pair: an encoder that
keeps only latent unit 0 and a decoder that reads only latent unit 1 are each connected, and
together output a constant. So a network carries its partner's side of the latent layer
(:attr:`coevo.genome.Network.partner_reach`, set by coevo before each mutation, see
:func:`partner_reach`): an encoder's paths must end at a latent unit its decoder carries on to an
output, a decoder's must start at a latent unit its encoder's inputs reach. A network whose
``partner_reach`` is None (built by hand) is judged alone: every latent unit counts. Every path
crosses exactly one neuron of each layer, so a neuron can go without disconnecting the pair
exactly when another neuron of its layer lies on such a path (:func:`on_path`).

The selector (:mod:`coevo.operators.selector`) applies these rules to every criterion; operators
with their own procedure (lexicase filtering, merging, latent folds) ask :func:`removable` before
they cut a neuron; :meth:`coevo.population.Stack.store_masks` checks the result of every operator,
a user's included (:func:`violation`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from coevo.genome import Network

Masks = Sequence[tuple[np.ndarray, np.ndarray]]
"""Per layer, (weight mask (out x in), bias mask (out,)), bool."""


def masks_of(net: Network) -> list[tuple[np.ndarray, np.ndarray]]:
    """The network's masks as a chain of units, (weight, bias) pairs: for Linear layers the arrays
    themselves (not copies); for a convolution, or a layer after a Flatten or Unflatten, which
    units of the layer before each unit reads (:meth:`coevo.genome.Layer.unit_mask`, a copy).
    Paths and reach are properties of this chain, whatever the layers are."""
    return [(layer.unit_mask(), layer.bias_mask) for layer in net.layers]


Ends = np.ndarray | None
"""Which of a network's inputs a path may start from (``sources``) or which of its last layer's
neurons it may end at (``sinks``), bool; None: all of them."""


def forward_reach(masks: Masks, sources: Ends = None) -> list[np.ndarray]:
    """Per layer, the neurons reached from the network's inputs (those in ``sources``) through alive weights."""
    reached, previous = [], sources
    for weight, _ in masks:
        now = weight.any(axis=1) if previous is None else weight[:, previous].any(axis=1)
        reached.append(now)
        previous = now
    return reached


def backward_reach(masks: Masks, sinks: Ends = None) -> list[np.ndarray]:
    """Per layer, the neurons from which an alive-weight path leads to the network's outputs
    (the neurons of the last layer in ``sinks``; every one when None)."""
    last = masks[-1][0].shape[0]
    reach = [np.ones(last, dtype=bool) if sinks is None else np.asarray(sinks, dtype=bool)]
    for weight, _ in masks[:0:-1]:
        reach.append(weight[reach[-1]].any(axis=0))
    return reach[::-1]


def on_path(masks: Masks, sources: Ends = None, sinks: Ends = None) -> list[np.ndarray]:
    """Per layer, the neurons on some input -> output path of alive weights (from ``sources``, to ``sinks``)."""
    return [f & b for f, b in zip(forward_reach(masks, sources), backward_reach(masks, sinks))]


def connected(masks: Masks, sources: Ends = None, sinks: Ends = None) -> bool:
    """Whether some path of alive weights runs from the inputs (``sources``) to the outputs (``sinks``)."""
    return bool(on_path(masks, sources, sinks)[-1].any())


def ends_of(net: Network) -> dict[str, Ends]:
    """``sources`` and ``sinks`` of ``net``'s paths as its pair sees them (see the module's
    docstring), as keyword arguments of :func:`on_path`. A pair that is already cut at the latent
    layer (a checkpoint from before the rule) keeps the network's own paths instead."""
    ends = pair_ends(net.role, getattr(net, "partner_reach", None))
    if ends["sources"] is None and ends["sinks"] is None:
        return ends
    return ends if connected(masks_of(net), **ends) else pair_ends(net.role, None)


def pair_ends(role: str, reach: Ends) -> dict[str, Ends]:
    """``sources`` and ``sinks`` of a ``role`` network whose partner offers ``reach`` (:func:`partner_reach`)."""
    if reach is None:
        return {"sources": None, "sinks": None}
    return {"sources": reach, "sinks": None} if role == "decoder" else {"sources": None, "sinks": reach}


def partner_reach(role: str, partner: Masks) -> np.ndarray:
    """What a ``role`` network's partner offers at the latent layer, from the partner's masks: for
    an encoder (partner a decoder), the latent units from which the decoder has an alive path to
    an output; for a decoder (partner an encoder), the latent units its encoder's inputs reach."""
    if role == "encoder":
        return partner[0][0][backward_reach(partner)[0]].any(axis=0)
    return forward_reach(partner)[-1]


def live_positions(role: str, masks: Masks, partner: Ends = None,
                   specs: Sequence | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per layer, (weight, bias) bool: the entries that would lie on a live path of the pair if
    they were alive (a weight from a driven neuron or an input into a neuron that leads to an
    output; a bias of a driven neuron that does, or of an output unit), given the other masks as
    they are. What regrowth may revive: anything else could not change what the pair computes.
    ``masks`` are entry masks; ``specs`` (the layout's :class:`~coevo.genome.LayerSpec`s) say how
    entries form units, for layers that are not plain Linear ones."""
    units = [(s.unit_mask(w), b) for s, (w, b) in zip(specs, masks)] if specs is not None else list(masks)
    ends = pair_ends(role, partner)
    driven, useful = forward_reach(units, ends["sources"]), backward_reach(units, ends["sinks"])
    first = units[0][0].shape[1]
    out = []
    for k in range(len(units)):
        source = (np.ones(first, dtype=bool) if ends["sources"] is None else np.asarray(ends["sources"], bool)) \
            if k == 0 else driven[k - 1]
        if specs is not None:
            source = specs[k].column_sources(source)
        output_units = role == "decoder" and k == len(units) - 1
        out.append((useful[k][:, None] & source[None, :], useful[k] & (driven[k] | output_units)))
    return out


def pair_connected(encoder: Masks, decoder: Masks) -> bool:
    """Whether a path of alive weights runs from the encoder's inputs through a latent unit to the decoder's outputs."""
    return connected(decoder, sources=forward_reach(encoder)[-1])


def removable(net: Network, layer: int, neuron: int) -> bool:
    """Whether cutting ``neuron`` of ``layer`` (its incoming weights and bias) keeps the rules:
    the network stays connected, no input unit loses its last weight, and it is no output unit."""
    lay = net.layers[layer]
    if lay.output_units:
        return False
    if lay.input_units:
        units = lay.unit_mask()
        holds = units[neuron]
        if np.any(units[:, holds].sum(axis=0) <= 1):
            return False
    path = on_path(masks_of(net), **ends_of(net))[layer]
    return not path[neuron] or int(path.sum()) > 1


def removable_input(net: Network, unit: int) -> bool:
    """Whether masking input ``unit``'s column (a decoder's latent input) keeps the pair connected."""
    first = net.layers[0].unit_mask()
    leads = first[backward_reach(masks_of(net))[0]].any(axis=0)  # inputs on an input -> output path
    sources = ends_of(net)["sources"]
    if sources is not None:
        leads = leads & sources
    return not leads[unit] or int(leads.sum()) > 1


def violation(role: str, old: Masks, new: Masks, keep_inputs: bool = True, partner: Ends = None) -> str | None:
    """What rule ``new`` breaks that ``old`` kept, in words, or None. Rules an old network already
    broke (say, a checkpoint written before they existed) are not charged to the operator. With
    ``keep_inputs`` False (``prune.keep_inputs``) an input unit may lose its last weight.
    ``partner``: the network's :func:`partner_reach`, so that rule 3 holds over the pair."""
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
    ends = pair_ends(role, partner)
    if connected(old) and not connected(new):
        reach = forward_reach(new)
        layer = next(i for i, r in enumerate(reach) if not r.any())
        return (f"no path of alive weights is left from its inputs to its outputs (no neuron of layer {layer} "
                f"has an alive weight from one reached before it)")
    if partner is not None and connected(old, **ends) and not connected(new, **ends):
        side = "its decoder reads" if role == "encoder" else "its encoder's inputs reach"
        return (f"the pair is cut in two at the latent layer: no path of alive weights runs through a latent "
                f"unit that {side}")
    return None


def input_cover(net: Network) -> np.ndarray | None:
    """For a network holding the autoencoder's input units: how many alive weights each input has."""
    first = net.layers[0]
    return first.unit_mask().sum(axis=0) if first.input_units else None


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
    protected = [(np.zeros_like(layer.weight_mask), np.zeros_like(layer.bias_mask)) for layer in net.layers]

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
        if first.spec is None:
            cols = np.flatnonzero(first.weight_mask.any(axis=0))
            rows = best(None if keep is None else keep[0][0][:, cols], first.weight_mask[:, cols], 0)
            protected[0][0][rows, cols] = True
        else:  # a convolution's input unit is a channel: one alive entry of each, anywhere in its kernel
            for unit in np.flatnonzero(masks[0][0].any(axis=0)):
                one = np.zeros(masks[0][0].shape[1], dtype=bool)
                one[unit] = True
                alive = first.weight_mask & first.columns_reading(one)[None, :]
                flat = int(best(None if keep is None else keep[0][0].ravel(), alive.ravel(), 0))
                protected[0][0].flat[flat] = True
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
    bounds = ends_of(net)
    path = on_path(masks, **bounds)
    if not path[-1].any():
        return protected
    inputs = (np.ones(masks[0][0].shape[1], dtype=bool) if bounds["sources"] is None
              else np.asarray(bounds["sources"], dtype=bool))
    # the path: from the last layer back, each step the best alive weight into the current neuron
    # from a neuron of the layer below that is itself on a path (any input for the first layer,
    # among those the partner reaches)
    ends = np.flatnonzero(path[-1])
    if keep is None:
        j = int(ends[rng.integers(ends.size)])
    else:
        w_last = keep[-1][0]
        below = path[-2] if len(masks) > 1 else inputs
        reading = net.layers[-1].columns_reading(below)
        reach = np.where(net.layers[-1].weight_mask & reading[None, :], w_last, -np.inf).max(axis=1)
        j = int(ends[np.argmax(reach[ends])])
    for layer in range(len(masks) - 1, -1, -1):
        below = path[layer - 1] if layer > 0 else inputs
        lay = net.layers[layer]
        if lay.spec is None:
            alive = masks[layer][0][j] & below
            i = int(best(None if keep is None else keep[layer][0][j], alive, 0))
            protected[layer][0][j, i] = True
        else:  # the best alive entry of unit j that reads a unit on the path; follow it down
            alive = lay.weight_mask[j] & lay.columns_reading(below)
            col = int(best(None if keep is None else keep[layer][0][j], alive, 0))
            protected[layer][0][j, col] = True
            one = np.zeros(lay.weight_mask.shape[1], dtype=bool)
            one[col] = True
            reads = below & _units_read_by(lay, one)
            i = int(np.flatnonzero(reads)[0])
        j = i
    return protected


def _units_read_by(layer, columns: np.ndarray) -> np.ndarray:
    """(fan_in,) bool columns -> (previous units,) bool: the units of the layer before that they read."""
    spec = layer.spec
    per = spec.unit_mask(columns[None, :])[0]
    return per
