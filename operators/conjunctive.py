"""CONJUNCTIVE (SPEC 6): lexicase-style, activation-guided pruning of whole neurons.

For each layer, over the recorded training cases (``context.activations(net)``, drawn from the
training split) taken in a random order drawn from ``rng``:

1. the candidates start as the layer's alive neurons;
2. while more than one candidate remains, take the next case: min-max normalise its activations
   over the alive neurons and keep the candidates whose normalised value is below ``threshold``
   (tau, ``prune.params.threshold``, default 0.1). A case that would leave no candidate, or on which every alive neuron
   is alike, is skipped, as lexicase selection never empties its pool;
3. the candidates left are pruned whole (incoming weight row and bias); if no case narrowed the
   pool (tau = 0, or no informative case), nothing is pruned.

The decoder's output layer is left alone (its neurons are the autoencoder's outputs). The cut goes
through the one selector (:mod:`coevo.operators.selector`), so its rules hold: a first-layer neuron
goes only if every input it feeds keeps another weight, each layer keeps a neuron on an input ->
output path, and a cut neuron's outgoing weights inside the network go with it.

``prune.amount`` caps the neurons pruned per layer at a fraction of the alive neurons, rounded
stochastically (unbiased), and never all of them; when the filter leaves more candidates than
that, the ones pruned are drawn uniformly among them (lexicase's random tie break). The case count
is ``prune.cases`` (a setting of the activation recorder). In place: it changes the masks of the
network it is given.

A small class rather than a function, so that a threshold outside [0, 1] is refused when the run
is prepared (its constructor runs then), before anything is written.
"""

from __future__ import annotations

import numpy as np

from coevo.genome import Network
from coevo.operators.base import PruneContext, register
from coevo.operators.kernels import lexicase_filter
from coevo.operators.selector import cut_neurons, select_neurons


@register("conjunctive")
class Conjunctive:
    """Lexicase filter over training cases: prune neurons that stay below threshold (capped by amount)."""

    def __init__(self, threshold: float = 0.1) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold is a normalised activation: it must be in [0, 1], got {threshold}")
        self.threshold = float(threshold)

    def __call__(self, net: Network, amount: float, rng: np.random.Generator, context: PruneContext) -> Network:
        scores = []
        for i, (layer, acts) in enumerate(zip(net.layers, context.activations(net), strict=True)):
            if acts.ndim != 2 or acts.shape[1] != layer.weight_mask.shape[0]:
                raise ValueError(f"activations of layer {i} have shape {acts.shape}; expected (cases, "
                                 f"{layer.weight_mask.shape[0]})")
            survivors = np.zeros(layer.bias.shape, dtype=bool)
            if not layer.output_units:  # its neurons are the autoencoder's outputs: never removed
                acts = np.ascontiguousarray(acts, dtype=np.float64)
                order = rng.permutation(acts.shape[0])
                survivors = lexicase_filter(acts, layer.alive_neurons(), order, self.threshold)
            scores.append(np.where(survivors, 0.0, np.inf))  # the filter's survivors, tied: drawn uniformly
        cut_neurons(net, select_neurons(net, scores, amount, rng, scope="layer"))
        return net
