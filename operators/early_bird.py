"""EARLY_BIRD (You et al. 2020, "Drawing Early-Bird Tickets"; Klazinga 2022, "Subnetworks of
autoencoders"; code: GATECH-EIC/Early-Bird-Tickets, RKlazinga/thesis-subnetworks-autoencoders).

Structured pruning of whole neurons, above all latent neurons, once the pruning mask has stopped
changing. Each neuron has a scale, trained under an L1 penalty so that unneeded neurons shrink:
the originals use BatchNorm's gamma; coevo's networks have none, so a neuron's scale is the root
mean square of its alive incoming weights and bias, and the trainer's group-lasso term
(``train.scale_l1``, ``train.scale_l1_latent``: the thesis presses the latent layer hardest) is the
penalty. The mean rather than the norm makes neurons of layers with different fan-in comparable.

Each call draws a candidate mask over the network's prunable neurons (every layer's neurons
except the decoder's output units): a global threshold on the scales keeps all but the fraction
``amount`` of the alive neurons, taking at most ``max_layer_fraction`` of any one layer, under the
selector's protection rules. The last ``window`` candidates live in ``net.memory`` (inherited with
the genome). When the newest is within ``distance`` (the fraction of differing bits, over the
neurons alive now in the layers it may cut) of each of the others, the early-bird ticket has emerged: its neurons are cut (their incoming weights and bias)
and the event ``early_bird`` is reported, so the run records the generation it first happened
(``early_bird_generation``). The history then starts again, for the next, smaller ticket.
Before the ticket emerges, a call prunes nothing.
"""

from __future__ import annotations

import numpy as np

from coevo.genome import Layout, Network
from coevo.operators.base import PruneContext, needs, register
from coevo.operators.selector import cut_neurons, select_neurons

WINDOW = 5


def prunable_layers(n_layers: int, role: str) -> range:
    """Layers whose neurons early-bird may cut: all but the decoder's output layer."""
    return range(n_layers - 1) if role == "decoder" else range(n_layers)


def _memory_size(layout: Layout) -> int:
    # [masks recorded so far] + WINDOW masks over the neurons of every layer (a decoder's output
    # layer included, so the size does not depend on the network's role)
    return 1 + WINDOW * sum(spec.fan_out for spec in layout.layers)


def neuron_scales(net: Network) -> list[np.ndarray]:
    """Per layer, each neuron's root-mean-square alive incoming weight and bias (0 when none is alive)."""
    scales = []
    for layer in net.layers:
        w = np.where(layer.weight_mask, layer.weight, 0.0).astype(np.float64)
        b = np.where(layer.bias_mask, layer.bias, 0.0).astype(np.float64)
        count = layer.weight_mask.sum(axis=1) + layer.bias_mask
        square = (w * w).sum(axis=1) + b * b
        scales.append(np.sqrt(np.divide(square, count, out=np.zeros_like(square), where=count > 0)))
    return scales


def ticket(net: Network, amount: float, rng: np.random.Generator, max_layer_fraction: float = 0.8) -> list[np.ndarray]:
    """Per layer, which neurons the candidate mask keeps (bool): the global lowest-scale fraction
    ``amount`` of the alive prunable neurons goes, at most ``max_layer_fraction`` of a layer's alive
    neurons, under the selector's rules (:func:`coevo.operators.selector.select_neurons`)."""
    cut = select_neurons(net, neuron_scales(net), amount, rng, scope="global", max_layer_fraction=max_layer_fraction)
    return [layer.alive_neurons() & ~gone for layer, gone in zip(net.layers, cut)]


def compared_bits(net: Network) -> np.ndarray:
    """Which bits of a candidate mask the stability test compares: the neurons alive now in the
    layers early-bird may cut. A decoder's output units (never cut) and neurons already gone would
    only dilute the distance: with them, 1,000 always-equal output bits make every decoder's masks
    agree within 0.012."""
    prunable = set(prunable_layers(len(net.layers), net.role))
    return np.concatenate([layer.alive_neurons() & (i in prunable) for i, layer in enumerate(net.layers)])


@register("early_bird")
@needs(memory=_memory_size, events=("early_bird",))
def early_bird_prune(net: Network, amount: float, rng: np.random.Generator, context: PruneContext, *,
                     distance: float = 0.1, max_layer_fraction: float = 0.8) -> Network:
    """Draw a candidate neuron mask; cut it once the last WINDOW masks agree within `distance`."""
    if not 0.0 <= distance <= 1.0:
        raise ValueError(f"early_bird's distance must be in [0, 1], got {distance}")
    if not 0.0 < max_layer_fraction <= 1.0:
        raise ValueError(f"early_bird's max_layer_fraction must be in (0, 1], got {max_layer_fraction}")
    keep = ticket(net, amount, rng, max_layer_fraction)
    newest = np.concatenate(keep).astype(np.float32)
    width = newest.size
    history = net.memory[1:].reshape(WINDOW, width)
    recorded = int(net.memory[0])
    history[:-1] = history[1:].copy()  # oldest out, newest in
    history[-1] = newest
    recorded = min(recorded + 1, WINDOW)
    net.memory[0] = recorded
    if recorded < WINDOW:
        return net
    bits = compared_bits(net)
    if not bits.any():
        return net
    distances = 1.0 - (history[:-1][:, bits] == newest[bits]).mean(axis=1)
    if distances.max() > distance:
        return net
    cut_neurons(net, [layer.alive_neurons() & ~kept for layer, kept in zip(net.layers, keep)])
    context.event("early_bird")
    net.memory[0] = 0  # a new ticket needs WINDOW new masks
    return net
