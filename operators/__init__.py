"""Pruning operators (mutations), registered by name.

Write your own as a plain function and register it with ``@coevo.operators.register("name")``,
name it by import path in config (``prune.operator = "mypkg.ops:my_prune"``), or expose it
through the ``coevo.operators`` entry-point group. See :mod:`operators.base` for the contract.

Or register just a criterion, a score per weight or per neuron, with
``@coevo.operators.criterion("name")``: it gets ``scope`` (layer, global: one network, or model:
the encoder and decoder ranked together), ``unit`` (weight or
neuron), per-layer caps and the protection rules for free, from the one selector
(:mod:`operators.selector`, :mod:`operators.protection`).
"""

from coevo.operators.base import (LayerGradients, Needs, PruneContext, PruneOperator, needs, needs_of, register,
                                  registry, sparing_units)
from coevo.operators.criterion import criterion
from coevo.operators.selector import EntryScores, cut_neurons, select_neurons
from coevo.operators.selector import prune as select_and_prune
from coevo.operators import (conjunctive, early_bird, flipout, latent_ablation, latent_fold, magnitude,  # noqa: F401  (register the built-ins)
                             merge, no_pruning, random_pruning, snap, snip, variance)

__all__ = ["EntryScores", "LayerGradients", "Needs", "PruneContext", "PruneOperator", "criterion", "cut_neurons",
           "needs", "needs_of", "register", "registry", "select_and_prune", "select_neurons", "sparing_units"]
