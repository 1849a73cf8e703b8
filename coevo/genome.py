"""Genomes: encoders and decoders as plain arrays with masks, and their DEAP individual classes.

A network is a list of Linear layers, each a weight (out x in, as in ``torch.nn.Linear``), a
bias, and a boolean mask for each. A population stores many networks of one shape as flat
rows of a (cells x parameters) tensor; a :class:`Layout` says where each layer lives in a row,
so the same bytes serve batched training (as stacked views) and operators (as per-network
numpy views). Nothing here is a live ``nn.Module``: genomes pickle, copy and ship cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal, Sequence

import numpy as np
import torch
from deap import base, creator

Activation = Literal["relu", "sigmoid"]


@dataclass(frozen=True)
class LayerSpec:
    """One prunable layer: a weight seen as (fan_out units x fan_in columns) and a bias per unit.

    A unit is a Linear row or a convolution's output channel; a column is one entry of a unit's
    receptive field: for a convolution, input channel ``column // prod(kernel)`` at one kernel
    position. The flat row of a genome stores every weight unit-major, in this (out, in, *kernel)
    order (a ConvTranspose's (in, out, *kernel) weight is stored transposed), so a layer's weight
    mask is always a plain (fan_out x fan_in) matrix to operators.

    How the layer's input channels hang on the previous layer's units (or, for a network's first
    layer, on the network's inputs) is the ``link`` (see :func:`unit_masks`): ``spread`` > 1: each
    previous unit feeds ``spread`` consecutive inputs (a Flatten of channels into features);
    ``gather`` > 1: each input channel gathers ``gather`` consecutive previous units (an Unflatten
    of features into channels). The MLP family's layers are Linear with both at 1.
    """

    fan_in: int
    fan_out: int
    activation: Activation | str
    kernel: tuple[int, ...] = ()
    """Spatial kernel size of a convolution; () for a Linear layer."""
    transposed: bool = False
    """A ConvTranspose: its torch weight is (in, out, *kernel); the genome stores it (out, in, *kernel)."""
    spread: int = 1
    gather: int = 1
    name: str = ""
    halves: int = 1
    """A VAE's decoder: input j reads the encoder's units j and j + latent (a latent unit's mean
    and its log-variance), so ``halves`` = 2; 1 otherwise."""
    """The module's name inside its network (``model.named_modules()``); '' for the MLP family."""

    @property
    def size(self) -> int:
        return self.fan_out * self.fan_in + self.fan_out

    @property
    def taps(self) -> int:
        """Columns per input channel: the kernel's positions (1 for a Linear layer)."""
        return int(np.prod(self.kernel)) if self.kernel else 1

    @property
    def channels(self) -> int:
        """The layer's input channels (a Linear layer's inputs)."""
        return self.fan_in // self.taps

    @property
    def previous_units(self) -> int:
        """How many units of the previous layer (or inputs of the network) feed this layer."""
        return self.channels // self.spread * self.gather * self.halves

    @property
    def plain(self) -> bool:
        """A Linear layer linked one to one: its weight mask is already the unit graph."""
        return self.taps == 1 and self.spread == 1 and self.gather == 1 and self.halves == 1

    def unit_mask(self, weight: np.ndarray) -> np.ndarray:
        """(..., fan_out, fan_in) alive entries -> (..., fan_out, previous units): which units of
        the previous layer each unit reads through some alive entry."""
        if self.halves > 1:  # each input reads its mean and its log-variance unit alike
            return np.concatenate([replace(self, halves=1).unit_mask(weight)] * self.halves, axis=-1)
        if self.plain:
            return weight
        lead = weight.shape[:-1]
        if self.gather == 1:  # column c reads previous unit c // (taps * spread)
            return weight.reshape(*lead, self.previous_units, self.taps * self.spread).any(axis=-1)
        per_channel = weight.reshape(*lead, self.channels, self.taps).any(axis=-1)
        return np.repeat(per_channel, self.gather, axis=-1)

    def column_sources(self, previous: np.ndarray) -> np.ndarray:
        """(..., previous units) bool -> (..., fan_in) bool: whether each column reads some unit
        in ``previous`` (an Unflatten's channel reads any of its gathered units)."""
        if self.halves > 1:  # an input is read when its mean or its log-variance unit is
            previous = np.asarray(previous).reshape(*previous.shape[:-1], self.halves, -1).any(axis=-2)
            return replace(self, halves=1).column_sources(previous)
        if self.plain:
            return previous
        lead = previous.shape[:-1]
        if self.gather == 1:
            return np.repeat(previous, self.taps * self.spread, axis=-1)
        per_channel = previous.reshape(*lead, self.channels, self.gather).any(axis=-1)
        return np.repeat(per_channel, self.taps, axis=-1)

    def dead_columns(self, dead: np.ndarray) -> np.ndarray:
        """(previous units,) bool -> (fan_in,) bool: the columns that read only ``dead`` units
        (what a cut of those units leaves multiplying zeros)."""
        return ~self.column_sources(~np.asarray(dead, dtype=bool))


@dataclass(frozen=True)
class Layout:
    """Shapes of a stack of Linear layers and where each one sits in a flat parameter row."""

    layers: tuple[LayerSpec, ...]
    model: Any = None
    """Where the network's ``torch.nn.Module`` comes from (a :class:`coevo.model.ModelPart`: the
    family or factory, the sample shape, the role), so the functional path can rebuild it on any
    worker; None: a plain MLP described by ``layers`` alone (the Numba kernels' networks)."""
    offsets: tuple[int, ...] = field(init=False)
    size: int = field(init=False)

    def __post_init__(self) -> None:
        offsets, at = [], 0
        for spec in self.layers:
            offsets.append(at)
            at += spec.size
        object.__setattr__(self, "offsets", tuple(offsets))
        object.__setattr__(self, "size", at)

    def __add__(self, other: "Layout") -> "Layout":
        return Layout(self.layers + other.layers)

    @property
    def plain(self) -> bool:
        """Every layer a Linear one linked one to one (the MLP family): masks are the unit graph."""
        return all(spec.plain for spec in self.layers)

    def unit_masks(self, masks: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per layer (weight, bias) masks -> the same as a chain of units: each weight mask as
        (units x previous layer's units), see :meth:`LayerSpec.unit_mask`. The protection rules
        and reachability read this chain; for the MLP family it is the masks themselves."""
        if self.plain:
            return list(masks)
        return [(spec.unit_mask(w), b) for spec, (w, b) in zip(self.layers, masks)]

    def split(self, flat: torch.Tensor | np.ndarray) -> list[tuple]:
        """(weight, bias) views of each layer; ``flat`` is (..., size), views are (..., out, in) and (..., out)."""
        views = []
        for spec, at in zip(self.layers, self.offsets):
            n_w = spec.fan_out * spec.fan_in
            lead = flat.shape[:-1]
            weight = flat[..., at : at + n_w].reshape(*lead, spec.fan_out, spec.fan_in)
            bias = flat[..., at + n_w : at + spec.size]
            views.append((weight, bias))
        return views

    def segments(self) -> tuple[np.ndarray, np.ndarray]:
        """Column offset and size of every parameter tensor (weight, bias, weight, ...) in a row."""
        offsets, sizes = [], []
        for spec, at in zip(self.layers, self.offsets):
            offsets += [at, at + spec.fan_out * spec.fan_in]
            sizes += [spec.fan_out * spec.fan_in, spec.fan_out]
        return np.array(offsets, dtype=np.int64), np.array(sizes, dtype=np.int64)

    def split_segment_major(self, flat: torch.Tensor, count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(weight, bias) views of a flat buffer of ``count`` networks stored segment-major:
        each parameter tensor of all networks is contiguous ((count, out, in), then (count, out)),
        so batched matmuls can write into it without a copy."""
        views = []
        for spec, at in zip(self.layers, self.offsets):
            n_w = spec.fan_out * spec.fan_in
            weight = flat[count * at : count * (at + n_w)].view(count, spec.fan_out, spec.fan_in)
            bias = flat[count * (at + n_w) : count * (at + spec.size)].view(count, spec.fan_out)
            views.append((weight, bias))
        return views

    def segment_major_to_rows(self, flat: torch.Tensor, count: int) -> torch.Tensor:
        """The same values as a (count, size) row-major tensor."""
        rows = flat.new_empty(count, self.size)
        for (w, b), (rw, rb) in zip(self.split_segment_major(flat, count), self.split(rows)):
            rw.copy_(w)
            rb.copy_(b)
        return rows


def autoencoder_layouts(n_dims: int, hidden: Sequence[int], latent: int) -> tuple[Layout, Layout]:
    """Encoder D -> hidden... -> latent (ReLU after each) and its mirror decoder (Sigmoid output)."""
    widths = [n_dims, *hidden, latent]
    encoder = Layout(tuple(LayerSpec(a, b, "relu") for a, b in zip(widths[:-1], widths[1:])))
    back = widths[::-1]
    decoder = Layout(
        tuple(
            LayerSpec(a, b, "sigmoid" if i == len(back) - 2 else "relu")
            for i, (a, b) in enumerate(zip(back[:-1], back[1:]))
        )
    )
    return encoder, decoder


@dataclass
class Layer:
    """One Linear layer of one network. Operators change the masks and nothing else.

    ``input_units`` / ``output_units`` mark the autoencoder's own inputs (the encoder's first
    layer) and outputs (the decoder's last layer): no operator may remove one, so every input
    keeps an alive weight and every output an alive weight or bias (see :meth:`unit_violation`).
    """

    weight: np.ndarray
    bias: np.ndarray
    weight_mask: np.ndarray
    bias_mask: np.ndarray
    input_units: bool = False
    output_units: bool = False
    spec: LayerSpec | None = None
    """What the layer is (a Linear layer or a convolution, how its inputs hang on the layer
    before); None: a Linear layer linked one to one. Read-only."""
    weight_flips: np.ndarray | None = None
    """How often each weight's sign changed across optimizer steps (read-only), when the run
    tracks flips (an operator declared ``needs(flips=True)``); else None."""
    bias_flips: np.ndarray | None = None

    @property
    def alive(self) -> int:
        return int(self.weight_mask.sum() + self.bias_mask.sum())

    @property
    def total(self) -> int:
        return int(self.weight_mask.size + self.bias_mask.size)

    def alive_neurons(self) -> np.ndarray:
        """Boolean per output neuron: does any of its incoming weights or its bias survive?"""
        return self.weight_mask.any(axis=1) | self.bias_mask

    def unit_mask(self) -> np.ndarray:
        """The weight mask as (units x the previous layer's units): which units each unit reads
        (:meth:`LayerSpec.unit_mask`); the weight mask itself for a plain Linear layer."""
        return self.weight_mask if self.spec is None else self.spec.unit_mask(self.weight_mask)

    def columns_reading(self, units: np.ndarray) -> np.ndarray:
        """(previous units,) bool -> (fan_in,) bool: the weight columns that read one of ``units``."""
        return units if self.spec is None else self.spec.column_sources(np.asarray(units, dtype=bool))

    def unit_violation(self) -> str | None:
        """Which input or output unit of the autoencoder these masks cut off, if any."""
        if self.input_units:
            lost = np.flatnonzero(~self.unit_mask().any(axis=0))
            if lost.size:
                return f"input unit {int(lost[0])} lost its last alive weight"
        if self.output_units:
            lost = np.flatnonzero(~self.alive_neurons())
            if lost.size:
                return f"output unit {int(lost[0])} lost its last alive weight and its bias"
        return None


def unit_flags(role: str, index: int, n_layers: int, keep_inputs: bool = True) -> dict[str, bool]:
    """Whether layer ``index`` of a ``role`` network holds the autoencoder's input or output units
    that the protection rules keep (the inputs only with ``keep_inputs``: ``prune.keep_inputs``)."""
    return {"input_units": keep_inputs and role == "encoder" and index == 0,
            "output_units": role == "decoder" and index == n_layers - 1}


class Network:
    """An encoder or decoder: a list of :class:`Layer`. Base class of the DEAP individuals."""

    role = "network"

    def __init__(self, layers: list[Layer], cell: int = -1) -> None:
        self.layers = layers
        self.cell = cell
        self.memory = np.zeros(0, dtype=np.float32)
        """The operator's own state for this network (``needs(memory=...)``): inherited with the
        genome, checkpointed, shipped; writable, in place."""
        self.weight_edits: dict[int, np.ndarray] = {}
        """Layer index -> bool (out x in): the weight entries :meth:`fold_neuron` or
        :meth:`fold_input` changed."""
        self.bias_edits: dict[int, np.ndarray] = {}
        """Layer index -> bool (out,): the biases :meth:`fold_input` changed."""
        self.partner_reach: np.ndarray | None = None
        """The pair's side of the latent layer, bool per latent unit (read-only; set by coevo before
        a mutation): for an encoder, which latent units its decoder carries on to an output; for a
        decoder, which ones its encoder's inputs reach. The protection rules keep a path through
        one of them (:mod:`coevo.operators.protection`); None: the network is judged alone."""

    def fold_neuron(self, layer_index: int, source: int, into: int) -> None:
        """Merge neuron ``source`` of layer ``layer_index`` into neuron ``into`` of the same layer
        (Srinivas and Babu, BMVC 2015): one of the two weight edits the operator contract allows.

        ``source`` is removed (its incoming weights and bias are masked) and its outgoing weights,
        column ``source`` of layer ``layer_index + 1``, are added to ``into``'s outgoing column,
        entry by entry, where both entries are alive. Masks never revive: where ``into``'s
        outgoing entry is pruned, ``source``'s contribution through it is lost (merge's saliency
        counts it). ``source``'s outgoing column itself is left as it is: it only ever multiplies
        the constant 0 the removed neuron now outputs.

        The edit is recorded in :attr:`weight_edits`, and :meth:`coevo.population.Stack.store_masks`
        writes back exactly those entries (with the masks); every other weight stays read-only.
        The outgoing weights of the layer must live in this network, so the last layer (the
        encoder's latent layer, the decoder's output units) cannot be folded; nor may a fold cut
        an input unit of the autoencoder off (its last alive weight). Raises ``ValueError``.
        """
        n_layers = len(self.layers)
        if not 0 <= layer_index < n_layers - 1:
            raise ValueError(f"fold_neuron: layer {layer_index} of a {n_layers}-layer {self.role} has no next layer "
                             f"in this network to take its outgoing weights (layers 0..{n_layers - 2} can fold)")
        layer, nxt = self.layers[layer_index], self.layers[layer_index + 1]
        width = layer.weight_mask.shape[0]
        if not (0 <= source < width and 0 <= into < width) or source == into:
            raise ValueError(f"fold_neuron: source {source} and into {into} must be two neurons of layer "
                             f"{layer_index} (0..{width - 1})")
        alive = layer.alive_neurons()
        if not (alive[source] and alive[into]):
            raise ValueError(f"fold_neuron: neurons {source} and {into} of layer {layer_index} must both be alive")
        if layer.input_units:
            others = np.delete(layer.weight_mask, source, axis=0).any(axis=0)
            lost = np.flatnonzero(layer.weight_mask[source] & ~others)
            if lost.size:
                raise ValueError(f"fold_neuron: neuron {source} holds input unit {int(lost[0])}'s last alive weight")
        layer.weight_mask[source] = False
        layer.bias_mask[source] = False
        live = nxt.weight_mask[:, into].copy()
        moved = np.where(live & nxt.weight_mask[:, source], nxt.weight[:, source], 0).astype(nxt.weight.dtype)
        weight = np.array(nxt.weight, copy=True)
        weight[:, into] += moved
        weight.flags.writeable = nxt.weight.flags.writeable
        nxt.weight = weight
        touched = self.weight_edits.setdefault(layer_index + 1, np.zeros(weight.shape, dtype=bool))
        touched[:, into] |= live

    def fold_input(self, unit: int, coefficients: np.ndarray, offset: float) -> None:
        """Replace input ``unit`` of a decoder (a latent neuron, as this decoder sees it) by
        ``offset + coefficients @ inputs``, a linear combination of the other inputs, and cut it:
        the latent analogue of :meth:`fold_neuron`, a contract weight edit.

        The first layer's weights to input ``unit``, W[:, unit], are spread over the others,
        W[:, k] += W[:, unit] * coefficients[k], and the bias takes b += W[:, unit] * offset; then
        column ``unit`` is masked. Masks never revive: where W[i, k] or b[i] is pruned, that share
        is lost. With every entry alive the decoder's output is unchanged whenever the input
        ``unit`` really equals the combination. Only a decoder's inputs fold (an encoder's inputs
        are the autoencoder's input units, which stay), ``coefficients[unit]`` must be 0, and the
        fold may not cut an output unit's last entry (a one-layer decoder). Raises ``ValueError``.
        """
        if self.role != "decoder":
            raise ValueError(f"fold_input: only a decoder's inputs (the latent code) can fold, not a {self.role}'s")
        layer = self.layers[0]
        width = layer.weight_mask.shape[1]
        coefficients = np.asarray(coefficients, dtype=np.float64).reshape(-1)
        if not 0 <= unit < width:
            raise ValueError(f"fold_input: unit {unit} is not an input of this decoder (0..{width - 1})")
        if coefficients.shape != (width,) or not np.all(np.isfinite(coefficients)) or not np.isfinite(offset):
            raise ValueError(f"fold_input: coefficients must be {width} finite numbers, and offset finite")
        if coefficients[unit] != 0.0:
            raise ValueError(f"fold_input: input {unit} cannot be folded into itself (coefficients[{unit}] must be 0)")
        if not layer.weight_mask[:, unit].any():
            raise ValueError(f"fold_input: input {unit} has no alive weight left to fold")
        if layer.output_units:
            rest = np.delete(layer.weight_mask, unit, axis=1).any(axis=1) | layer.bias_mask
            if not rest.all():
                raise ValueError(f"fold_input: input {unit} holds output unit {int(np.flatnonzero(~rest)[0])}'s "
                                 f"last alive entry")
        source = np.where(layer.weight_mask[:, unit], layer.weight[:, unit], 0).astype(np.float64)
        moved = (source[:, None] * coefficients[None, :]).astype(layer.weight.dtype)
        live = layer.weight_mask & (moved != 0)
        live[:, unit] = False
        weight = np.array(layer.weight, copy=True)
        weight[live] += moved[live]
        weight.flags.writeable = layer.weight.flags.writeable
        bias_live = layer.bias_mask & (source != 0) & (offset != 0)
        bias = np.array(layer.bias, copy=True)
        bias[bias_live] += (source * offset).astype(bias.dtype)[bias_live]
        bias.flags.writeable = layer.bias.flags.writeable
        layer.weight, layer.bias = weight, bias
        layer.weight_mask[:, unit] = False
        self.weight_edits.setdefault(0, np.zeros(weight.shape, dtype=bool))[live] = True
        self.bias_edits.setdefault(0, np.zeros(bias.shape, dtype=bool))[bias_live] = True

    def kept_fraction(self) -> float:
        """Alive entries / all entries, counted from the masks."""
        return sum(l.alive for l in self.layers) / sum(l.total for l in self.layers)

    def __repr__(self) -> str:
        shapes = " -> ".join(str(l.weight.shape[1]) for l in self.layers) + f" -> {self.layers[-1].weight.shape[0]}"
        return f"{type(self).__name__}(cell={self.cell}, {shapes}, kept={self.kept_fraction():.3f})"


def _define_deap_classes() -> None:
    """DEAP classes: encoders and decoders minimise their loss-based fitness."""
    if not hasattr(creator, "LossFitness"):
        creator.create("LossFitness", base.Fitness, weights=(-1.0,))
    if not hasattr(creator, "Encoder"):
        creator.create("Encoder", Network, fitness=creator.LossFitness, role="encoder")
    if not hasattr(creator, "Decoder"):
        creator.create("Decoder", Network, fitness=creator.LossFitness, role="decoder")


_define_deap_classes()
Encoder: type[Network] = creator.Encoder
Decoder: type[Network] = creator.Decoder


def init_params(layout: Layout, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` rows initialised like ``torch.nn.Linear``: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    rows = np.empty((count, layout.size), dtype=np.float32)
    for spec, (weight, bias) in zip(layout.layers, layout.split(rows)):
        bound = 1.0 / np.sqrt(spec.fan_in)
        weight[...] = rng.uniform(-bound, bound, size=weight.shape)
        bias[...] = rng.uniform(-bound, bound, size=bias.shape)
    return rows


def state_dict(layout: Layout, params: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """One network as its module's parameter names ('0.weight', '2.bias', ... for the MLP family's
    ``torch.nn.Sequential``), in the module's own shapes, plus ``NAME + '_mask'`` for every
    parameter: ``module.load_state_dict`` takes it without the masks (see :func:`to_module`)."""
    out: dict[str, torch.Tensor] = {}
    for i, (spec, (w, b), (wm, bm)) in enumerate(zip(layout.layers, layout.split(params.cpu()),
                                                    layout.split(mask.cpu()))):
        name = spec.name or str(2 * i)
        if spec.kernel:  # the module's own shape: (out, in, *kernel), a ConvTranspose's (in, out, *kernel)
            w, wm = (t.reshape(spec.fan_out, spec.channels, *spec.kernel) for t in (w, wm))
            if spec.transposed:
                w, wm = w.transpose(0, 1), wm.transpose(0, 1)
        out[f"{name}.weight"] = w.contiguous().clone()
        out[f"{name}.bias"] = b.clone()
        out[f"{name}.weight_mask"] = wm.contiguous().clone()
        out[f"{name}.bias_mask"] = bm.clone()
    return out


def to_module(state: dict[str, torch.Tensor], output: Activation = "relu") -> torch.nn.Sequential:
    """Rebuild a plain ``nn.Sequential`` of Linear layers from a saved network.

    Hidden layers use ReLU; ``output`` is the last activation ('sigmoid' for a decoder). The
    masks are not needed at inference: pruned entries are stored as exact zeros.
    """
    n_layers = len([k for k in state if k.endswith(".weight")])
    modules: list[torch.nn.Module] = []
    for i in range(n_layers):
        w = state[f"{2 * i}.weight"]
        modules.append(torch.nn.Linear(w.shape[1], w.shape[0]))
        last = i == n_layers - 1
        modules.append(torch.nn.Sigmoid() if last and output == "sigmoid" else torch.nn.ReLU())
    seq = torch.nn.Sequential(*modules)
    seq.load_state_dict({k: v for k, v in state.items() if not k.endswith("_mask")})
    return seq
