"""The pruning-operator contract, its registry, and the context operators may read.

An operator is a plain function (or a small class whose instances are called)::

    def prune(net: Network, amount: float, rng: numpy.random.Generator, context: PruneContext,
              *, my_setting: float = 0.5) -> Network

It changes ``layer.weight_mask`` / ``layer.bias_mask`` (numpy bool arrays, in place or by
assigning new arrays of the same shape and dtype) and returns the net, or ``(net,)`` as DEAP
mutations do. It may read the weights (read-only) and ``context``; it must not revive a pruned
entry, break the protection rules (:mod:`coevo.operators.protection`: every input and output unit
keeps an entry, one input -> output path of alive weights stays), or draw from a global random generator (``rng``
is the only source: coevo checks python's, numpy's and torch's global generators around every
call). coevo zeroes the pruned weights and their optimizer moments afterwards. Operators are in
place: they mutate the network they are given.

What it needs beyond that, it declares with :func:`needs` (read by coevo before a run starts):
sign-flip counts kept by the trainer (``layer.weight_flips``, FlipOut), floats of its own state
per network (``net.memory``: inherited with the genome, checkpointed, shipped to workers), and
named events it reports with ``context.event(name)`` (the generation each first happened goes to
the logbook and summary.json as ``NAME_generation``). Gradients of the loss on the recorded
cases are on the context, computed when first asked, as activations are.

Besides the weights, an operator may read ``context.activations(net)`` (each layer's outputs on
``prune.cases`` training rows), ``context.gradients(net)`` (each layer's :class:`LayerGradients`
of the pair's loss on the same rows), both computed on first use only, and
``context.loss_without(net, layer, neurons)`` (the pair's loss with each of those neurons silenced
in turn: an exact ablation), ``context.inputs(net)`` and ``context.loss_with_inputs(net, variants)``
(the pair's loss with the network's inputs replaced). The weight edits it may make are
:meth:`coevo.genome.Network.fold_neuron`, which removes a neuron and adds its outgoing weights to
another neuron's (data-free merging), and :meth:`coevo.genome.Network.fold_input`, which replaces
a decoder input by a linear combination of the others; coevo writes back exactly the entries
they touched.

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
from coevo.errors import OperatorError
from coevo.genome import Layer, Layout, Network
from coevo.registry import Registry


@dataclass(frozen=True)
class LayerGradients:
    """Gradients of the pair's loss L for one layer of one network, on ``prune.cases`` training rows.

    L is the pair's reconstruction loss (``model.loss``, the mean over rows and features) of the
    pair as it was before this mutation, masks applied. ``weight`` (out x in) and ``bias`` (out,)
    are dL/dW and dL/db with respect to the masked (effective) weights: a pruned entry gets the
    gradient it would have at zero. ``gate`` (out,) is dL/dc_j for a unit gate c_j multiplying
    neuron j's pre-activation z_j, which is sum over the cases of delta_nj * z_nj (delta = dL/dz),
    SNAP-it's node saliency before dividing by L. ``loss`` is L itself. Arrays are float64 and
    read-only.
    """

    weight: np.ndarray
    bias: np.ndarray
    gate: np.ndarray
    loss: float


def _no_gradients() -> dict[str, list[LayerGradients]]:
    raise RuntimeError("this PruneContext has no gradient recorder; build it with "
                       "PruneContext(generation, settings, record, record_gradients=...)")


def _no_ablation(role: str, layer: int, neurons: np.ndarray) -> tuple[float, np.ndarray]:
    raise RuntimeError("this PruneContext cannot silence neurons; build it with "
                       "PruneContext(generation, settings, record, losses_without=...)")


def _no_rows() -> np.ndarray:
    raise RuntimeError("this PruneContext has no recorded rows; build it with PruneContext(..., rows=...)")


def _no_input_losses(role: str, inputs: np.ndarray) -> np.ndarray:
    raise RuntimeError("this PruneContext cannot replace inputs; build it with "
                       "PruneContext(generation, settings, record, losses_with_inputs=...)")


def _no_networks(role: str) -> Network:
    raise RuntimeError("this PruneContext holds no networks; build it with PruneContext(..., networks=...)")


@dataclass
class PruneContext:
    """What an operator may look at besides the network: the generation, the ``[prune]`` settings
    (its own parameters arrive as keyword arguments instead), and (lazily, only if asked) the
    layer activations and the loss gradients of the pair on ``settings.cases`` training rows.

    ``record`` and ``record_gradients`` are the recorders coevo passes: each returns a dict from a
    network's role ("encoder", "decoder") to one entry per layer, and each runs at most once.
    """

    generation: int
    settings: PruneConfig
    record: Callable[[], dict[str, list[np.ndarray]]] = field(repr=False, default=lambda: {})
    _cache: dict[str, list[np.ndarray]] | None = field(default=None, repr=False)
    declared_events: tuple[str, ...] = ()
    events: set[str] = field(default_factory=set)
    record_gradients: Callable[[], dict[str, list[LayerGradients]]] = field(repr=False, default=_no_gradients)
    _gradient_cache: dict[str, list[LayerGradients]] | None = field(default=None, repr=False)
    losses_without: Callable[[str, int, np.ndarray], tuple[float, np.ndarray]] = field(repr=False,
                                                                                        default=_no_ablation)
    """(role, layer, neurons) -> (the pair's loss, its loss with each neuron silenced in turn)"""
    _loss: float | None = field(default=None, repr=False)
    rows: Callable[[], np.ndarray] = field(repr=False, default=_no_rows)
    """() -> the recorded ``settings.cases`` training rows (cases x D)"""
    losses_with_inputs: Callable[[str, np.ndarray], np.ndarray] = field(repr=False, default=_no_input_losses)
    """(role, variants x cases x fan_in) -> the pair's loss with that network's inputs replaced by each"""
    networks: Callable[[str], Network] = field(repr=False, default=_no_networks)
    """(role) -> a copy of the pair's network of that role as it was before this mutation"""
    shared: dict[str, Any] = field(default_factory=dict, repr=False)
    """What an operator's encoder call leaves for its decoder call within one mutation (e.g. how a
    whole-model ranking splits the amount); empty at the start of every mutation."""

    def event(self, name: str) -> None:
        """Report that ``name`` happened to this pair at this generation (e.g. early-bird's
        ticket was drawn). ``name`` must be among the operator's ``needs(events=...)``."""
        if name not in self.declared_events:
            raise OperatorError(f"event {name!r} was not declared; declare it with "
                                f"@coevo.operators.needs(events=({name!r},)) (declared: {list(self.declared_events)})")
        self.events.add(name)

    def activations(self, net: Network) -> list[np.ndarray]:
        """Per layer of ``net``, its outputs (cases x neurons) on ``settings.cases`` training rows.

        Computed on first use from the pair as it was before this mutation; free for operators
        that never ask.
        """
        recorded = self._recorded()
        role = getattr(net, "role", "network")
        if role not in recorded:
            raise KeyError(f"no activations recorded for a {role!r}; known: {sorted(recorded)}")
        return recorded[role]

    def _recorded(self) -> dict[str, list[np.ndarray]]:
        """Every network's recorded activations, recorded on first use."""
        if self._cache is None:
            self._cache = self.record()
        return self._cache

    def gradients(self, net: Network) -> list[LayerGradients]:
        """Per layer of ``net``, the :class:`LayerGradients` of the pair's loss on the same
        ``settings.cases`` training rows as :meth:`activations`.

        One backward pass through the encoder and decoder of the pair as it was before this
        mutation, computed on first use (from either network) and kept for the other; free for
        operators that never ask.
        """
        if self._gradient_cache is None:
            self._gradient_cache = self.record_gradients()
        role = getattr(net, "role", "network")
        if role not in self._gradient_cache:
            raise KeyError(f"no gradients recorded for a {role!r}; known: {sorted(self._gradient_cache)}")
        return self._gradient_cache[role]

    def loss_without(self, net: Network, layer: int, neurons: Any) -> np.ndarray:
        """The pair's loss on the ``settings.cases`` training rows with each of ``neurons`` (indices
        into layer ``layer`` of ``net``) silenced in turn, one at a time, as pruning it alone would
        leave the pair before any retraining: an exact ablation, not a gradient estimate.

        Computed from the pair as it was before this mutation, on the same rows as
        :meth:`activations` and :meth:`gradients`; each call costs one forward pass of the
        layers above ``layer`` per neuron asked (batched). Compare with :meth:`loss`, the loss
        with nothing silenced.
        """
        role = getattr(net, "role", "network")
        if not 0 <= layer < len(net.layers):
            raise IndexError(f"loss_without: layer {layer} is not a layer of this {role} (0..{len(net.layers) - 1})")
        picked = np.asarray(neurons, dtype=np.int64).reshape(-1)
        width = net.layers[layer].bias.shape[0]
        if picked.size and (picked.min() < 0 or picked.max() >= width):
            raise IndexError(f"loss_without: neurons must be in 0..{width - 1} for layer {layer}, got {picked.tolist()}")
        return self.losses_without(role, layer, picked)[1]

    def inputs(self, net: Network) -> np.ndarray:
        """What enters ``net``'s first layer on the recorded rows (cases x fan_in): the rows
        themselves for an encoder, the encoder's latent codes for a decoder. Read-only."""
        role = getattr(net, "role", "network")
        if role == "decoder":
            codes = self._recorded()["encoder"][-1]
        elif role == "encoder":
            codes = self.rows()
        else:
            raise KeyError(f"no inputs recorded for a {role!r}; known: ['decoder', 'encoder']")
        codes = np.array(codes, copy=True)
        codes.flags.writeable = False
        return codes

    def loss_with_inputs(self, net: Network, inputs: np.ndarray) -> np.ndarray:
        """The pair's loss on the recorded rows when ``net``'s inputs are replaced by each of
        ``inputs`` (variants x cases x fan_in, variants of :meth:`inputs`) in turn, the target
        staying the recorded rows. For a decoder: what the pair would lose if its latent codes
        were these, e.g. one latent neuron replaced by its best prediction from the others (what
        :meth:`coevo.genome.Network.fold_input` then builds into the decoder's weights)."""
        role = getattr(net, "role", "network")
        if role not in ("encoder", "decoder"):
            raise KeyError(f"no pair loss for a {role!r}; known: ['decoder', 'encoder']")
        return self.losses_with_inputs(role, np.asarray(inputs, dtype=np.float64))

    @property
    def holds_pair(self) -> bool:
        """Whether :meth:`partner` can answer (coevo's contexts can; one built by hand may not)."""
        return self.networks is not _no_networks

    def partner(self, net: Network) -> Network:
        """The other network of the pair (the decoder for an encoder, and back), as it was before
        this mutation: a copy, so that an operator can rank both networks' entries together
        (scope ``model``). Changing it changes nothing."""
        role = getattr(net, "role", "network")
        if role not in ("encoder", "decoder"):
            raise KeyError(f"no partner for a {role!r}; known: ['decoder', 'encoder']")
        return self.networks("decoder" if role == "encoder" else "encoder")

    def loss(self) -> float:
        """The pair's loss on the recorded rows with nothing silenced (what :meth:`loss_without` raises)."""
        if self._loss is None:
            self._loss = float(self.losses_without("encoder", 0, np.zeros(0, dtype=np.int64))[0])
        return self._loss


@dataclass(frozen=True)
class Needs:
    """What an operator asks of coevo besides the network, the amount, the rng and the context."""

    flips: bool = False
    """Have the trainer count every weight's sign flips (``layer.weight_flips``, ``layer.bias_flips``)."""
    memory: int | Callable[[Layout], int] = 0
    """Floats of state per network (``net.memory``, zero at the start), or a function of the layout."""
    events: tuple[str, ...] = ()
    """Names the operator may report with ``context.event``."""
    linear: bool = False
    """The operator works on Linear layers only (it folds neurons, or asks for losses without
    some): a run whose model has convolutions refuses it before it starts."""

    def memory_size(self, layout: Layout) -> int:
        size = self.memory(layout) if callable(self.memory) else self.memory
        if not isinstance(size, (int, np.integer)) or size < 0:
            raise OperatorError(f"an operator's needs(memory=...) must give a count >= 0, got {size!r}")
        return int(size)


def needs(*, flips: bool = False, memory: int | Callable[[Layout], int] = 0,
          events: tuple[str, ...] = (), linear: bool = False) -> Callable[[Any], Any]:
    """Decorator declaring what an operator (function or class) needs; put it under ``@register``::

        @register("my_op")
        @needs(flips=True, memory=lambda layout: len(layout.layers), events=("converged",))
        def my_op(net, amount, rng, context): ...
    """
    declared = Needs(bool(flips), memory, tuple(events), bool(linear))

    def mark(item: Any) -> Any:
        item.coevo_needs = declared
        return item

    return mark


def needs_of(operator: Any) -> Needs:
    """The :class:`Needs` of an operator (a function, a class, an instance or a partial of one)."""
    while hasattr(operator, "func") and not hasattr(operator, "coevo_needs"):  # functools.partial
        operator = operator.func
    return getattr(operator, "coevo_needs", Needs())


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
    It does not keep the network connected, and it spares a weight of every input even where the
    input has others: for a new operator, register a criterion
    (:func:`coevo.operators.criterion`) and let the selector apply every rule, or call
    :func:`coevo.operators.select_and_prune` with your scores.
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
