"""The pruning-operator contract, its registry, and the context operators may read.

An operator is a plain function (or a small class whose instances are called)::

    def prune(net: Network, amount: float, rng: numpy.random.Generator, context: PruneContext,
              *, my_setting: float = 0.5) -> Network

It changes ``layer.weight_mask`` / ``layer.bias_mask`` (numpy bool arrays, in place or by
assigning new arrays of the same shape and dtype) and returns the net, or ``(net,)`` as DEAP
mutations do. It may read the weights (read-only) and ``context``; it must not revive a pruned
entry, remove the last alive neuron of a layer, or draw from a global random generator (``rng``
is the only source: coevo checks python's, numpy's and torch's global generators around every
call). coevo zeroes the pruned weights and their optimizer moments afterwards. Operators are in
place: they mutate the network they are given.

Its own settings are keyword parameters with defaults, after the four the contract passes (a
class takes them in its constructor instead): ``[prune.params]`` in TOML or ``--set
prune.params.my_setting=0.7``, checked against the signature before a run starts.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Protocol

import numpy as np

from coevo.config import PruneConfig
from coevo.genome import Layer, Network
from coevo.registry import Registry


@dataclass
class PruneContext:
    """What an operator may look at besides the network: the generation, the ``[prune]`` settings
    (its own parameters arrive as keyword arguments instead), and (lazily, only if asked) the
    layer activations of the pair on ``settings.cases`` training rows."""

    generation: int
    settings: PruneConfig
    record: Callable[[], dict[str, list[np.ndarray]]] = field(repr=False, default=lambda: {})
    _cache: dict[str, list[np.ndarray]] | None = field(default=None, repr=False)

    def activations(self, net: Network) -> list[np.ndarray]:
        """Per layer of ``net``, its outputs (cases x neurons) on ``settings.cases`` training rows.

        Computed on first use from the pair as it was before this mutation; free for operators
        that never ask.
        """
        if self._cache is None:
            self._cache = self.record()
        role = getattr(net, "role", "network")
        if role not in self._cache:
            raise KeyError(f"no activations recorded for a {role!r}; known: {sorted(self._cache)}")
        return self._cache[role]


class PruneOperator(Protocol):
    def __call__(self, net: Network, amount: float, rng: np.random.Generator,
                 context: PruneContext, **params: Any) -> Network | tuple[Network]: ...


registry: Registry[PruneOperator] = Registry("operator", "prune.operator", "coevo.operators",
                                             params_key="prune.params", contract=("net", "amount", "rng", "context"))
register = registry.register


@contextmanager
def sparing_units(layer: Layer, rng: np.random.Generator) -> Iterator[Layer]:
    """Keep the autoencoder's input and output units while an operator prunes ``layer``.

    Inside the block one alive entry of every unit the layer holds (an input unit's weight in the
    encoder's first layer; an output unit's weight or bias in the decoder's last layer), drawn
    uniformly with ``rng``, is hidden from the masks; on leaving it is alive again. Anything that
    prunes only what it sees alive then cannot cut a unit off. Other layers pass through unchanged.
    """
    spared: list[tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]] = []
    if layer.input_units:
        cols = np.flatnonzero(layer.weight_mask.any(axis=0))
        rows = _draw_alive(layer.weight_mask[:, cols].T, rng)
        spared.append((layer.weight_mask, (rows, cols)))
    if layer.output_units:
        entries = np.concatenate([layer.weight_mask, layer.bias_mask[:, None]], axis=1)
        rows = np.flatnonzero(entries.any(axis=1))
        cols = _draw_alive(entries[rows], rng)
        on_bias = cols == layer.weight_mask.shape[1]
        spared.append((layer.weight_mask, (rows[~on_bias], cols[~on_bias])))
        spared.append((layer.bias_mask, (rows[on_bias],)))
    for mask, index in spared:
        mask[index] = False
    try:
        yield layer
    finally:
        for mask, index in spared:
            mask[index] = True


def _draw_alive(alive: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """For each row of a bool matrix with some True, the column of one True drawn uniformly."""
    keys = np.where(alive, rng.random(alive.shape), -1.0)
    return keys.argmax(axis=1)
