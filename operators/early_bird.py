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
``amount`` of the alive neurons, taking at most ``max_layer_fraction`` of any one layer and never
a layer's last neuron. The last ``window`` candidates live in ``net.memory`` (inherited with the
genome). When the newest is within ``distance`` (1 - the fraction of equal bits) of each of the
others, the early-bird ticket has emerged: its neurons are cut (their incoming weights and bias)
and the event ``early_bird`` is reported, so the run records the generation it first happened
(``early_bird_generation``). The history then starts again, for the next, smaller ticket.
Before the ticket emerges, a call prunes nothing.
"""

from __future__ import annotations

import numpy as np

from coevo.genome import Layout, Network
from coevo.operators.base import PruneContext, needs, register
from coevo.operators.kernels import stochastic_count

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
    neurons and never its last one."""
    scales = neuron_scales(net)
    keep = [layer.alive_neurons().copy() for layer in net.layers]
    layers = list(prunable_layers(len(net.layers), net.role))
    candidates = [(scales[i][j], rng.random(), i, j) for i in layers for j in np.flatnonzero(keep[i])]
    n = stochastic_count(amount, len(candidates), rng)
    budget = {i: min(int(max_layer_fraction * keep[i].sum()), int(keep[i].sum()) - 1) for i in layers}
    first = net.layers[0]
    cover = (first.weight_mask & keep[0][:, None]).sum(axis=0) if first.input_units else None
    for _scale, _tie, i, j in sorted(candidates):
        if n == 0:
            break
        if budget[i] <= 0:
            continue
        if i == 0 and cover is not None:  # an input unit must keep a weight into a kept neuron
            if np.any(cover[first.weight_mask[j]] <= 1):
                continue
            cover -= first.weight_mask[j]
        keep[i][j] = False
        budget[i] -= 1
        n -= 1
    return keep


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
    distances = 1.0 - (history[:-1] == newest).mean(axis=1)
    if distances.max() > distance:
        return net
    for layer, kept in zip(net.layers, keep):
        layer.weight_mask[~kept] = False
        layer.bias_mask[~kept] = False
    context.event("early_bird")
    net.memory[0] = 0  # a new ticket needs WINDOW new masks
    return net
