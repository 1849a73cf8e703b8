"""Stacked populations: N networks of one layout as (N, parameters) tensors.

A :class:`Stack` keeps, for every network, its parameters, its boolean mask and its Adam
moments and step count: optimizer state travels with the genome (SPEC section 4, step 5),
so a copied neighbour keeps training where it left off. One row per network means a gather
``stack[idx]`` copies whole genomes and batched kernels see one contiguous buffer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from coevo.errors import OperatorError
from coevo.genome import Layer, Layout, Network, unit_flags
from coevo.operators.protection import violation


FIELDS = ("params", "mask", "exp_avg", "exp_avg_sq", "steps", "flips", "memory")
"""Every per-network field of a stack, in constructor order: a genome is all of them."""

OPTIONAL_FIELDS = ("flips", "memory")
"""Fields a run may not use: then they have no columns, (N, 0), and cost nothing."""


@dataclass
class Stack:
    layout: Layout
    params: torch.Tensor  # (N, P) float32
    mask: torch.Tensor  # (N, P) bool
    exp_avg: torch.Tensor  # (N, P) float32, Adam first moment
    exp_avg_sq: torch.Tensor  # (N, P) float32, Adam second moment
    steps: torch.Tensor  # (N,) float64, Adam step count
    flips: torch.Tensor = None  # type: ignore[assignment]  # (N, P) float32 sign flips per entry, or (N, 0)
    memory: torch.Tensor = None  # type: ignore[assignment]  # (N, M) float32 an operator's own state, or (N, 0)

    def __post_init__(self) -> None:
        n = self.params.shape[0] if self.params.dim() else 0
        for name in OPTIONAL_FIELDS:  # not used by this run: no columns
            if getattr(self, name) is None:
                setattr(self, name, torch.zeros((n, 0), dtype=torch.float32, device=self.params.device))

    @classmethod
    def fresh(cls, layout: Layout, params: np.ndarray, device: str = "cpu", flips: bool = False,
              memory: int = 0) -> "Stack":
        """Unpruned networks with zero optimizer state; with ``flips``, sign-flip counters (zero),
        and ``memory`` zeroed floats of operator state per network (see coevo.operators.needs)."""
        p = torch.as_tensor(params, device=device).contiguous()
        n = p.shape[0]
        return cls(
            layout,
            p,
            torch.ones_like(p, dtype=torch.bool),
            torch.zeros_like(p),
            torch.zeros_like(p),
            torch.zeros(n, dtype=torch.float64, device=device),
            torch.zeros((n, p.shape[1] if flips else 0), dtype=torch.float32, device=device),
            torch.zeros((n, memory), dtype=torch.float32, device=device),
        )

    @property
    def tracks_flips(self) -> bool:
        return self.flips.shape[-1] > 0

    def __len__(self) -> int:
        return int(self.params.shape[0])

    def map(self, fn, layout: Layout | None = None) -> "Stack":
        """A new stack whose every field is ``fn(field)``."""
        return Stack(layout or self.layout, *(fn(getattr(self, f)) for f in FIELDS))

    def __getitem__(self, index: torch.Tensor | np.ndarray | slice) -> "Stack":
        """Copies of the selected networks (whole genomes, optimizer state included)."""
        if isinstance(index, np.ndarray):
            index = torch.as_tensor(index, device=self.params.device)
        return self.map((lambda t: t[index].clone()) if isinstance(index, slice) else (lambda t: t[index]))

    def put(self, k: int, source: "Stack", row: int = 0) -> None:
        """Overwrite network ``k`` with ``source``'s network ``row`` (the whole genome)."""
        for f in FIELDS:
            getattr(self, f)[k] = getattr(source, f)[row]

    @staticmethod
    def concat(stacks: list["Stack"]) -> "Stack":
        """Stacks of one layout, one after the other (row-wise)."""
        if len(stacks) == 1:
            return stacks[0]
        return Stack(stacks[0].layout, *(torch.cat([getattr(s, f) for s in stacks]) for f in FIELDS))

    def apply_masks(self) -> None:
        """Pruned entries are exactly zero, in the weights and in the optimizer moments."""
        self.params.mul_(self.mask)
        self.exp_avg.mul_(self.mask)
        self.exp_avg_sq.mul_(self.mask)
        if self.tracks_flips:  # a pruned weight's sign history ends with it (FlipOut)
            self.flips.mul_(self.mask)

    def kept_fraction(self) -> torch.Tensor:
        """(N,) alive entries / all entries."""
        return self.mask.float().mean(dim=1)

    # -- per-network views for operators ------------------------------------------------
    def network(self, k: int, cls: type[Network] = Network, params: torch.Tensor | None = None,
                mask: torch.Tensor | None = None, keep_inputs: bool = True) -> Network:
        """Network ``k`` as numpy arrays (with ``params`` and ``mask``, from those rows instead: a
        snapshot taken earlier). With ``keep_inputs`` False (``prune.keep_inputs``) the encoder's
        first layer is not marked as holding the input units, so no rule keeps an input's last weight.

        Masks are writable copies; weights (and sign-flip counts, when the run tracks them) are
        read-only copies: an operator changes masks only. ``net.memory`` is a writable copy of the
        network's operator state (empty unless the operator asked for some).
        """
        params = _read_only(self.params[k] if params is None else params)
        mask = (self.mask[k] if mask is None else mask).cpu().numpy().copy()
        flips = self.layout.split(_read_only(self.flips[k])) if self.tracks_flips else None
        n_layers = len(self.layout.layers)
        layers = []
        for i, ((w, b), (wm, bm)) in enumerate(zip(self.layout.split(params), self.layout.split(mask))):
            spec = self.layout.layers[i]
            layer = Layer(w, b, wm, bm, **unit_flags(cls.role, i, n_layers, keep_inputs),
                          spec=None if spec.plain else spec)
            if flips is not None:
                layer.weight_flips, layer.bias_flips = flips[i]
            layers.append(layer)
        net = cls(layers, cell=k)
        net.memory = self.memory[k].cpu().numpy().copy()
        return net

    def store_masks(self, k: int, net: Network, operator: str, keep_inputs: bool = True,
                    partner: np.ndarray | None = None) -> None:
        """Write an operator's masks back after checking the contract; errors name the operator.
        ``keep_inputs`` False lifts the rule that every input unit keeps a weight (``prune.keep_inputs``);
        ``partner`` (:func:`coevo.operators.protection.partner_reach`) checks the pair's path too.

        If the operator folded neurons (:meth:`Network.fold_neuron`), the weight entries the folds
        touched are written back too, after checking that no other weight or bias changed."""
        layout = self.layout
        if not isinstance(net, Network) or len(net.layers) != len(layout.layers):
            raise OperatorError(f"pruning operator {operator!r} must return the network it was given "
                                f"(got {type(net).__name__})")
        old = self.mask[k].cpu().numpy()
        new = np.empty_like(old)
        for i, (spec, layer, (wm, bm)) in enumerate(zip(layout.layers, net.layers, layout.split(new))):
            for name, got, want in (("weight_mask", layer.weight_mask, wm), ("bias_mask", layer.bias_mask, bm)):
                if not isinstance(got, np.ndarray) or got.dtype != np.bool_ or got.shape != want.shape:
                    desc = f"{getattr(got, 'dtype', type(got).__name__)} {getattr(got, 'shape', '')}"
                    raise OperatorError(
                        f"pruning operator {operator!r} left layer {i} {name} as {desc}; "
                        f"it must stay a numpy bool array of shape {want.shape}"
                    )
                want[...] = got
        if np.any(new & ~old):
            raise OperatorError(f"pruning operator {operator!r} revived pruned entries; masks may only go from True to False")
        before = layout.unit_masks(layout.split(old))
        broken = violation(net.role, before, layout.unit_masks(layout.split(new)), keep_inputs, partner)
        if broken:
            raise OperatorError(f"pruning operator {operator!r} broke a protection rule of the {net.role}: {broken}; "
                                f"let coevo's selector choose (coevo.operators.criterion or select_and_prune), "
                                f"or check coevo.operators.protection.removable before cutting a neuron")
        edits = getattr(net, "weight_edits", None)
        bias_edits = getattr(net, "bias_edits", None) or {}
        params = self._folded_params(k, net, edits or {}, bias_edits, operator) if edits or bias_edits else None
        self.mask[k] = torch.as_tensor(new, device=self.mask.device)
        if params is not None:
            self.params[k] = torch.as_tensor(params, device=self.params.device)
        memory = getattr(net, "memory", None)
        if self.memory.shape[1]:
            if not isinstance(memory, np.ndarray) or memory.shape != (self.memory.shape[1],):
                raise OperatorError(f"pruning operator {operator!r} replaced net.memory with "
                                    f"{getattr(memory, 'shape', type(memory).__name__)}; write into it in place "
                                    f"(a float array of {self.memory.shape[1]} values)")
            self.memory[k] = torch.as_tensor(memory, dtype=torch.float32, device=self.memory.device)

    def _folded_params(self, k: int, net: Network, edits: dict[int, np.ndarray], bias_edits: dict[int, np.ndarray],
                       operator: str) -> np.ndarray:
        """Network ``k``'s parameter row with the entries ``edits`` and ``bias_edits`` mark taken
        from ``net``; any other difference between ``net``'s weights and the stored ones is an error."""
        params = self.params[k].detach().cpu().numpy().copy()
        for i, (layer, (w, b)) in enumerate(zip(net.layers, self.layout.split(params))):
            touched = edits.get(i, np.zeros(w.shape, dtype=bool))
            touched_b = bias_edits.get(i, np.zeros(b.shape, dtype=bool))
            got_w, got_b = np.asarray(layer.weight), np.asarray(layer.bias)
            if got_w.shape != w.shape or got_b.shape != b.shape or touched.shape != w.shape \
                    or touched_b.shape != b.shape:
                raise OperatorError(f"pruning operator {operator!r} changed the shape of layer {i}'s weights")
            changed = (got_w != w) & ~(np.isnan(got_w) & np.isnan(w))
            changed_b = (got_b != b) & ~(np.isnan(got_b) & np.isnan(b))
            if np.any(changed & ~touched) or np.any(changed_b & ~touched_b):
                raise OperatorError(f"pruning operator {operator!r} changed weights of layer {i} that no "
                                    f"Network.fold_neuron or fold_input touched; weights are read-only otherwise")
            w[touched] = got_w[touched]
            b[touched_b] = got_b[touched_b]
        return params


def _read_only(row: torch.Tensor) -> np.ndarray:
    array = row.detach().cpu().numpy().copy()
    array.flags.writeable = False
    return array
