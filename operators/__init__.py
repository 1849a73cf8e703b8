"""Pruning operators (mutations), registered by name.

Write your own as a plain function and register it with ``@coevo.operators.register("name")``,
name it by import path in config (``prune.operator = "mypkg.ops:my_prune"``), or expose it
through the ``coevo.operators`` entry-point group. See :mod:`operators.base` for the contract.
"""

from coevo.operators.base import (LayerGradients, Needs, PruneContext, PruneOperator, needs, needs_of, register,
                                  registry, sparing_units)
from coevo.operators import (conjunctive, early_bird, flipout, latent_ablation, latent_fold, merge,  # noqa: F401  (register the built-ins)
                             no_pruning, random_pruning, snap, snip, variance)

__all__ = ["LayerGradients", "Needs", "PruneContext", "PruneOperator", "needs", "needs_of", "register", "registry",
           "sparing_units"]
