"""The pruning context's implementation: what an operator may ask of the pair it prunes
(activations, gradients, losses without some neurons or inputs, the pair's networks), computed
on demand from the pair as it was before the mutation. :func:`pair_context` builds the
:class:`~coevo.operators.PruneContext` that :mod:`coevo.evolution.variation` hands an operator."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from scipy.special import expit

from coevo.config import PruneConfig
from coevo.population import Stack
from coevo.genome import Decoder, Encoder, Layout, Network
from coevo.operators.base import LayerGradients, PruneContext
from coevo.training import batched


@dataclass(frozen=True)
class PairForward:
    """A pair's float64 forward pass on some rows, masks applied: the layer specs (encoder's then
    decoder's), each layer's (W, b), the activations (the rows first) and the pre-activations."""

    specs: list
    weights: list[tuple[np.ndarray, np.ndarray]]
    acts: list[np.ndarray]
    pre: list[np.ndarray]
    n_encoder_layers: int


def pair_forward(enc_layout: Layout, dec_layout: Layout, enc_params: torch.Tensor, dec_params: torch.Tensor,
                 enc_mask: torch.Tensor, dec_mask: torch.Tensor, x: torch.Tensor) -> PairForward:
    """The pair's :class:`PairForward` on the rows ``x``."""
    x64 = x.detach().cpu().numpy().astype(np.float64)
    specs = list(enc_layout.layers) + list(dec_layout.layers)
    weights: list[tuple[np.ndarray, np.ndarray]] = []
    for layout, params, mask in ((enc_layout, enc_params, enc_mask), (dec_layout, dec_params, dec_mask)):
        flat = params.detach().cpu().numpy().astype(np.float64) * mask.detach().cpu().numpy()
        weights += layout.split(flat)
    acts, pre = [x64], []
    for spec, (w, b) in zip(specs, weights):
        z = acts[-1] @ w.T + b
        pre.append(z)
        acts.append(_activate(z, spec.activation))
    return PairForward(specs, weights, acts, pre, len(enc_layout.layers))


def _activate(z: np.ndarray, activation: str) -> np.ndarray:
    return np.maximum(z, 0.0) if activation == "relu" else expit(z)


def _loss_value(out: np.ndarray, x64: np.ndarray, loss: str) -> np.ndarray:
    """The reconstruction loss, the mean over the last two axes (rows and features)."""
    diff = out - x64
    if loss == "l1":
        return np.abs(diff).mean(axis=(-2, -1))
    if loss == "mse":
        return np.square(diff).mean(axis=(-2, -1))
    o = np.clip(out, 1e-7, 1 - 1e-7)
    return -(x64 * np.log(o) + (1 - x64) * np.log(1 - o)).mean(axis=(-2, -1))


def pair_gradients(enc_layout: Layout, dec_layout: Layout, enc_params: torch.Tensor, dec_params: torch.Tensor,
                   enc_mask: torch.Tensor, dec_mask: torch.Tensor, x: torch.Tensor,
                   loss: str) -> dict[str, list[LayerGradients]]:
    """Gradients of one pair's reconstruction loss (``loss``, mean over rows and features) on the
    rows ``x`` (cases x D), masks applied: per layer of each network, dL/dW and dL/db of the masked
    weights, dL/dc of a unit gate on each neuron's pre-activation (sum over the rows of delta * z),
    and L. ``params`` and ``mask`` are one network's flat rows.

    A forward and a hand-written backward pass in float64 numpy (BLAS products), as autograd
    computes them (subgradients: sign(0) = 0 for L1, ReLU'(0) = 0, BCE's clamp to [1e-7, 1 - 1e-7]
    passes no gradient outside it); ``tests/test_seed_operators.py`` checks it against torch
    autograd. At the paper's size (100 cases, D = 1000) it takes about 2.5 ms on one thread,
    1.2x faster than autograd (1.7x at D = 4000; ``benchmarks/mask_kernels.py``)."""
    return pair_gradients_from(pair_forward(enc_layout, dec_layout, enc_params, dec_params, enc_mask, dec_mask, x),
                               loss)


def pair_gradients_from(forward: PairForward, loss: str) -> dict[str, list[LayerGradients]]:
    """:func:`pair_gradients` from the pair's :func:`pair_forward` (which a context shares)."""
    specs, weights, acts, pre = forward.specs, forward.weights, forward.acts, forward.pre
    x64 = acts[0]
    out, scale = acts[-1], 1.0 / x64.size
    diff = out - x64
    value = float(_loss_value(out, x64, loss))
    if loss == "l1":
        grad = np.sign(diff) * scale
    elif loss == "mse":
        grad = 2.0 * diff * scale
    else:
        o = np.clip(out, 1e-7, 1 - 1e-7)
        inside = (out >= 1e-7) & (out <= 1 - 1e-7)
        grad = np.where(inside, (o - x64) / (o * (1 - o)), 0.0) * scale
    per_layer = []
    for k in range(len(specs) - 1, -1, -1):
        a = acts[k + 1]
        if specs[k].activation == "relu":
            delta = np.where(a > 0, grad, 0.0)
        elif loss == "bce" and k == len(specs) - 1:  # sigmoid' cancels BCE's denominator
            delta = np.where((out >= 1e-7) & (out <= 1 - 1e-7), diff, 0.0) * scale
        else:
            delta = grad * a * (1.0 - a)
        per_layer.append(LayerGradients(_frozen(delta.T @ acts[k]), _frozen(delta.sum(axis=0)),
                                        _frozen((delta * pre[k]).sum(axis=0)), value))
        grad = delta @ weights[k][0]
    per_layer.reverse()
    n_enc = forward.n_encoder_layers
    return {"encoder": per_layer[:n_enc], "decoder": per_layer[n_enc:]}


def pair_losses_without(forward: PairForward, loss: str, role: str, layer: int,
                        neurons: np.ndarray) -> tuple[float, np.ndarray]:
    """The pair's loss on the rows ``x`` with each of ``neurons`` of layer ``layer`` of its
    ``role`` network silenced in turn, one at a time, as pruning it would (all its incoming
    weights and its bias masked: its pre-activation is 0, so it outputs its activation of 0).

    One float64 forward pass to that layer, then one pass of the layers above it for all the
    neurons at once (a batch of copies); the loss is the mean over rows and features, as
    ``model.loss``. ``forward`` is the pair's :func:`pair_forward`. Returns the loss with nothing
    silenced and the array of losses."""
    specs, weights, acts, _pre = forward.specs, forward.weights, forward.acts, forward.pre
    base = float(_loss_value(acts[-1], acts[0], loss))
    g = layer + (forward.n_encoder_layers if role == "decoder" else 0)
    neurons = np.asarray(neurons, dtype=np.int64)
    if neurons.size == 0:
        return base, np.zeros(0)
    a = np.repeat(acts[g + 1][None], neurons.size, axis=0)  # (neurons, cases, width)
    a[np.arange(neurons.size), :, neurons] = _activate(np.zeros(1), specs[g].activation)[0]
    return base, _loss_value(_forward_from(specs, weights, g + 1, a), acts[0], loss)


def pair_losses_with_inputs(forward: PairForward, loss: str, role: str, inputs: np.ndarray) -> np.ndarray:
    """The pair's loss against its rows when the ``role`` network's inputs are replaced by each
    of ``inputs`` (variants x cases x fan_in) in turn: for the decoder, other latent codes; for
    the encoder, other rows (the target stays the rows). One batched float64 forward pass of that
    network onwards; ``forward`` is the pair's :func:`pair_forward`."""
    specs, weights, acts = forward.specs, forward.weights, forward.acts
    start = forward.n_encoder_layers if role == "decoder" else 0
    a = np.asarray(inputs, dtype=np.float64)
    if a.ndim != 3 or a.shape[1:] != acts[start].shape:
        raise ValueError(f"inputs for the {role} must be variants x {acts[start].shape[0]} cases x "
                         f"{acts[start].shape[1]} inputs, got shape {a.shape}")
    return _loss_value(_forward_from(specs, weights, start, a), acts[0], loss)


def _forward_from(specs: list, weights: list[tuple[np.ndarray, np.ndarray]], start: int, a: np.ndarray) -> np.ndarray:
    """Layers ``start`` onwards of the pair applied to ``a`` (any leading batch axes)."""
    lead = a.shape[:-1]
    a = a.reshape(-1, a.shape[-1])  # one 2-D product per layer: BLAS, not a loop over the batch
    for spec, (w, b) in zip(specs[start:], weights[start:]):
        a = _activate(a @ w.T + b, spec.activation)
    return a.reshape(*lead, a.shape[-1])


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.flags.writeable = False
    return a


def pair_context(enc: Stack, dec: Stack, i: int, generation: int, settings: PruneConfig, loss: str,
                 cases: Callable[[], torch.Tensor], declared_events: tuple[str, ...] = ()) -> PruneContext:
    """The :class:`PruneContext` of pair ``i``: activations and gradients on the rows ``cases()``
    returns (called at most once, when an operator first asks for either), of the pair as it is
    now, before the mutation: its rows are copied here (a few hundred kB), so a recorder that
    first runs in the decoder's call still sees the encoder as it was."""
    enc_params, enc_mask = enc.params[i].clone(), enc.mask[i].clone()
    dec_params, dec_mask = dec.params[i].clone(), dec.mask[i].clone()
    rows: list[torch.Tensor] = []

    def x() -> torch.Tensor:
        if not rows:
            rows.append(cases())
        return rows[0]

    def record() -> dict[str, list[np.ndarray]]:
        with torch.no_grad():
            enc_acts = batched.forward(enc.layout, enc_params, x())
            dec_acts = batched.forward(dec.layout, dec_params, enc_acts[-1])
        return {"encoder": [a.cpu().numpy() for a in enc_acts[1:]],
                "decoder": [a.cpu().numpy() for a in dec_acts[1:]]}

    forwards: list[PairForward] = []

    def forward() -> PairForward:  # one float64 forward pass serves the gradients and every loss asked for
        if not forwards:
            forwards.append(pair_forward(enc.layout, dec.layout, enc_params, dec_params, enc_mask, dec_mask, x()))
        return forwards[0]

    def record_gradients() -> dict[str, list[LayerGradients]]:
        return pair_gradients_from(forward(), loss)

    def losses_without(role: str, layer: int, neurons: np.ndarray) -> tuple[float, np.ndarray]:
        return pair_losses_without(forward(), loss, role, layer, neurons)

    def losses_with_inputs(role: str, inputs: np.ndarray) -> np.ndarray:
        return pair_losses_with_inputs(forward(), loss, role, inputs)

    if _module_pair(enc.layout):  # any other model: activations and gradients from the functional forward
        record, record_gradients, losses_without, losses_with_inputs = _module_recorders(
            enc, dec, loss, x, enc_params, dec_params, enc_mask, dec_mask)

    def networks(role: str) -> Network:
        if role == "encoder":
            return enc.network(i, Encoder, enc_params, enc_mask, settings.keep_inputs)
        return dec.network(i, Decoder, dec_params, dec_mask, settings.keep_inputs)

    return PruneContext(generation, settings, record, declared_events=declared_events,
                        record_gradients=record_gradients, losses_without=losses_without,
                        rows=lambda: x().cpu().numpy(), losses_with_inputs=losses_with_inputs,
                        networks=networks)


def _module_pair(layout: Layout) -> bool:
    """Whether a layout's networks are a model other than the plain MLP (whose float64 numpy pass
    above is exact and fast); an MLP VAE is not plain (its encoder gives means and log-variances)."""
    return layout.model is not None and (layout.model.ref.source != "mlp" or layout.model.ref.variational)


def _module_recorders(enc: Stack, dec: Stack, loss: str, x: Callable[[], torch.Tensor], enc_params: torch.Tensor,
                      dec_params: torch.Tensor, enc_mask: torch.Tensor, dec_mask: torch.Tensor) -> tuple:
    """What a pair of any modules records for its context: activations per unit (a channel's
    averaged over its positions) and gradients by autograd, both from :mod:`coevo.training.functional`;
    losses without neurons or inputs need Linear layers and say so."""
    from coevo.errors import OperatorError
    from coevo.training import functional

    def record() -> dict[str, list[np.ndarray]]:
        return functional.pair_activations(enc.layout, dec.layout, enc_params, dec_params, x())

    def record_gradients() -> dict[str, list[LayerGradients]]:
        return functional.pair_gradients(enc.layout, dec.layout, enc_params, dec_params, enc_mask, dec_mask, x(), loss)

    def unavailable(*_args, **_kwargs):
        raise OperatorError(f"context.losses_without and context.losses_with_inputs need Linear layers (the mlp "
                            f"family); this run's model is {enc.layout.model.ref.what}")

    return record, record_gradients, unavailable, unavailable
