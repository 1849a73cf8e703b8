"""LATENT_ABLATION: cut the latent neurons the reconstruction does not need, one at a time.

Early-Bird and the budgeted operators decide how many latent neurons survive by a pruning budget,
so the count they leave follows the budget, not the data (docs/results.md, "Data of known intrinsic
dimension"). This operator lets the reconstruction decide: at each call on an encoder it
silences each alive latent neuron in turn (``context.loss_without``: the pair's exact loss on the
``prune.cases`` training rows with that neuron pruned, before any retraining) and cuts the one
whose removal costs least, if its cost is at most ``tolerance`` times the pair's loss. Training
between calls lets the other neurons take over what a cut neuron carried, so the cuts stop where
every remaining latent neuron carries something the decoder needs: an estimate of how many
dimensions the data needs, made by the autoencoder.

Only latent neurons (the encoder's last layer) are cut, each with all its incoming weights and
bias; a call on a decoder changes nothing, and the last latent neuron always stays. ``amount``
is not used: the tolerance decides, and the schedule's probability decides how often a pair is
asked. Pair it with ``train.scale_l1_latent`` (Early-Bird's latent penalty) to press the
information into fewer neurons.
"""

from __future__ import annotations

import numpy as np

from coevo.genome import Network
from coevo.operators.base import PruneContext, needs, register
from coevo.operators.protection import removable


def check_tolerance(operator: str, tolerance: float) -> None:
    """A tolerance is a fraction of the loss: refuse a negative one (or NaN)."""
    if not tolerance >= 0.0:
        raise ValueError(f"{operator}'s tolerance is a fraction of the loss: it must be >= 0, got {tolerance}")


def cheapest_within(cost: np.ndarray, loss: float, tolerance: float, rng: np.random.Generator) -> int | None:
    """Index of the lowest ``cost`` (ties drawn with ``rng``) if it is at most ``tolerance * loss``;
    None otherwise: what both latent operators cut."""
    cheapest = np.flatnonzero(cost == cost.min())
    pick = int(cheapest[rng.integers(cheapest.size)] if cheapest.size > 1 else cheapest[0])
    return pick if cost[pick] <= tolerance * loss else None


@register("latent_ablation")
@needs(linear=True)
def latent_ablation_prune(net: Network, amount: float, rng: np.random.Generator, context: PruneContext, *,
                          tolerance: float = 0.02) -> Network:
    """Cut the latent neuron whose silencing raises the pair's loss least, if by at most `tolerance` x loss."""
    check_tolerance("latent_ablation", tolerance)
    if net.role != "encoder":
        return net
    last = len(net.layers) - 1
    latent = net.layers[last]
    alive = np.flatnonzero(latent.alive_neurons())
    if alive.size <= 1:
        return net
    candidates = alive[[removable(net, last, int(j)) for j in alive]]
    if latent.input_units and candidates.size:  # a one-layer encoder: a cut must not take an input unit's last weight
        held = latent.weight_mask[candidates]
        sole = held & (latent.weight_mask.sum(axis=0) == 1)
        candidates = candidates[~sole.any(axis=1)]
    if candidates.size == 0:
        return net
    pick = cheapest_within(context.loss_without(net, last, candidates) - context.loss(), context.loss(), tolerance, rng)
    if pick is not None:
        latent.weight_mask[candidates[pick]] = False
        latent.bias_mask[candidates[pick]] = False
    return net
