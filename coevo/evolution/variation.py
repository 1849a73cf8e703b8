"""The per-cell work of a generation, as pure functions of arrays: what an engine runs.

``evaluate_cells`` and ``vary_cells`` take the previous generation's centres (read-only) and a
list of cells, and return results for those cells only. Every random draw of cell k in
generation t comes from its own generator, derived from (seed, t, k, purpose), so results do
not depend on how an engine shards the grid, and a resumed run needs no generator state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from scipy.special import expit

from coevo.training import batched, cpu_kernels
from coevo.evolution import topology
from coevo.config import Config, PruneConfig
from coevo.errors import OperatorError, UserError
from coevo.evolution.front import kept_ladder, multi_objective
from coevo.genome import Decoder, Encoder, Layout, Network
from coevo.measures import KeptFractions, stack_kept_fractions
from coevo.evolution.population import Stack
from coevo.operators.base import LayerGradients, PruneContext, needs_of
from coevo.training.trainer_terms import TrainerTerms
from coevo.registry import GlobalRandomWatch
from coevo.schedules import Pruning

# purposes of the derived random streams
EVAL_BATCH, TRAIN_ORDER, PRUNE, CASES, LR_MUTATION, UPDATE_ORDER, RESET, NOISE = 1, 2, 3, 4, 5, 6, 7, 8


def derive_rng(seed: int, generation: int, cell: int, purpose: int) -> np.random.Generator:
    """An independent generator for one (generation, cell, purpose) of the run."""
    return np.random.default_rng([seed, generation, cell, purpose])


@dataclass
class CellData:
    """What every cell reads: the training rows (a tensor on the run's device) and the config."""

    train: torch.Tensor
    config: Config


def evaluate_cells(enc: Stack, dec: Stack, neighbours: np.ndarray, cells: np.ndarray, generation: int,
                   shared: CellData) -> torch.Tensor:
    """Loss matrices (len(cells), s, s) of every encoder x decoder pair of each cell's
    sub-population, on one mini-batch of training rows drawn by that cell."""
    cfg = shared.config
    n_rows = shared.train.shape[0]
    batch = min(cfg.train.batch_size, n_rows)
    rows = np.stack([
        derive_rng(cfg.run.seed, generation, int(k), EVAL_BATCH).choice(n_rows, size=batch, replace=False)
        for k in cells
    ])
    batches = shared.train[torch.as_tensor(rows, device=shared.train.device)]
    if enc.params.device.type == "cpu":
        return cpu_kernels.pair_losses(enc, dec, neighbours[cells], batches, cfg.model.loss)
    nbr = torch.as_tensor(neighbours[cells], device=enc.params.device)
    return batched.pair_losses(enc, dec, nbr, batches, cfg.model.loss)


def centre_losses(enc: Stack, dec: Stack, data: torch.Tensor, loss: str) -> np.ndarray:
    """Each cell's own pair's mean loss on every row of ``data``, (N,) float64."""
    if enc.params.device.type == "cpu":
        return cpu_kernels.centre_losses(enc, dec, data, loss).numpy()
    return batched.centre_losses(enc, dec, data, loss).cpu().numpy()


def centre_measures(enc: Stack, dec: Stack, data: torch.Tensor, loss: str) -> tuple[np.ndarray, KeptFractions]:
    """What the logbook reads of each cell's centre pair: its loss on every row of ``data`` (the
    validation split) and its kept fractions. Per cell, so a shard gives its cells' values."""
    return centre_losses(enc, dec, data, loss), stack_kept_fractions(enc, dec)


@dataclass
class Variation:
    """New centres for some cells, after training and (maybe) pruning."""

    cells: np.ndarray
    encoders: Stack
    decoders: Stack
    pruned: np.ndarray  # bool: was this cell's pair mutated
    train_loss: np.ndarray  # each cell's training loss over its epoch (before pruning)
    events: np.ndarray  # bool (cells, declared events): which events the operator reported for each cell


def vary_cells(enc: Stack, dec: Stack, enc_parents: np.ndarray, dec_parents: np.ndarray, cells: np.ndarray,
               lr: np.ndarray, prune_probability: float | Pruning, generation: int, shared: CellData,
               mutate: Callable[..., Any], operator_name: str) -> Variation:
    """Train a copy of each cell's selected pair for one pass over the data, then prune it with
    the given probability (a :class:`~coevo.schedules.Pruning` also sets the amount, in place of
    ``prune.amount``). Cell ``cells[i]`` selected the encoder of cell ``enc_parents[i]`` and
    the decoder of cell ``dec_parents[i]`` (the same cell unless ``selection.pairing`` is
    ``"independent"``)."""
    cfg = shared.config
    n_rows = shared.train.shape[0]
    orders = np.stack([derive_rng(cfg.run.seed, generation, int(k), TRAIN_ORDER).permutation(n_rows) for k in cells])
    train = cpu_kernels.train_pairs if enc.params.device.type == "cpu" else batched.train_pairs
    noise_seeds = None
    if cfg.train.gradient_noise > 0:
        noise_seeds = np.array([derive_rng(cfg.run.seed, generation, int(k), NOISE).integers(2**62) for k in cells])
    new_enc, new_dec, train_loss = train(enc, dec, enc_parents, dec_parents, shared.train, orders, lr,
                                         cfg.train.batch_size, cfg.model.loss, cfg.train.beta1, cfg.train.beta2,
                                         cfg.train.fresh_optimizer_each_batch, cfg.train.bce_weight,
                                         terms=TrainerTerms.of(cfg.train, noise_seeds))
    pruned = np.zeros(len(cells), dtype=bool)
    declared = needs_of(mutate).events
    events = np.zeros((len(cells), len(declared)), dtype=bool)
    settings = cfg.prune
    step = Pruning.of(prune_probability)
    prune_probability = step.probability
    # a multi-objective run's cells prune towards a ladder of sizes (coevo.evolution.front), not one target
    targets = kept_ladder(cfg, topology.neighbourhoods(cfg.grid).shape[0]) if multi_objective(cfg) else None
    if prune_probability > 0 and operator_name != "none":
        wants_kept = settings.target_kept > 0 or step.kept is not None or step.progress is not None
        fractions = stack_kept_fractions(new_enc, new_dec) if wants_kept else None
        kept = fractions.kept if fractions is not None else None
        for i, k in enumerate(cells):
            rng = derive_rng(cfg.run.seed, generation, int(k), PRUNE)
            if rng.random() >= prune_probability:
                continue
            amount = settings.amount if step.amount is None else step.amount
            target = settings.target_kept if targets is None else float(targets[k])
            goal = step.kept_goal(target)
            if goal is not None:  # the schedule's kept fraction of the masks: this pair's amount to reach it
                if fractions.mask_kept[i] <= goal:
                    continue
                amount = 1.0 - goal / fractions.mask_kept[i]
            if target > 0:  # at the target: no more; near it: only what reaches it
                if kept[i] <= target:
                    continue
                amount = min(amount, 1.0 - target / kept[i])
            pruned[i] = True
            with cpu_kernels.one_blas_thread():  # an operator's matrix products: threads cost more than they give
                happened = _mutate_pair(new_enc, new_dec, i, rng, generation, shared, mutate, operator_name,
                                        derive_rng(cfg.run.seed, generation, int(k), CASES), amount, declared)
            events[i] = [name in happened for name in declared]
            if settings.reset_fraction > 0:
                _reset_weights(new_enc, new_dec, i, settings.reset_fraction,
                               derive_rng(cfg.run.seed, generation, int(k), RESET))
        if pruned.any():
            for stack in (new_enc, new_dec):
                stack.apply_masks()
                if settings.regrow:  # the reference: the zeros stay, the mask does not
                    stack.mask.fill_(True)
    return Variation(cells, new_enc, new_dec, pruned, train_loss, events)


def _reset_weights(enc: Stack, dec: Stack, i: int, fraction: float, rng: np.random.Generator) -> None:
    """Exploration without regrowth: zero each alive weight of pair i (and its Adam moments) with
    probability ``fraction``; the masks are untouched, so the zeros train again."""
    for stack in (enc, dec):
        draw = torch.as_tensor(rng.random(stack.layout.size) < fraction, device=stack.mask.device) & stack.mask[i]
        for field in (stack.params, stack.exp_avg, stack.exp_avg_sq):
            field[i].masked_fill_(draw, 0.0)


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

    def networks(role: str) -> Network:
        if role == "encoder":
            return enc.network(i, Encoder, enc_params, enc_mask)
        return dec.network(i, Decoder, dec_params, dec_mask)

    return PruneContext(generation, settings, record, declared_events=declared_events,
                        record_gradients=record_gradients, losses_without=losses_without,
                        rows=lambda: x().cpu().numpy(), losses_with_inputs=losses_with_inputs,
                        networks=networks)


def _mutate_pair(enc: Stack, dec: Stack, i: int, rng: np.random.Generator, generation: int, shared: CellData,
                 mutate: Callable[..., Any], operator_name: str, cases_rng: np.random.Generator,
                 amount: float, declared_events: tuple[str, ...] = ()) -> set[str]:
    """Prune row i's encoder and decoder with the operator; activations and gradients are
    recorded on demand. Returns the events the operator reported."""
    settings = shared.config.prune

    def cases() -> torch.Tensor:
        n_rows = shared.train.shape[0]
        rows = cases_rng.choice(n_rows, size=min(settings.cases, n_rows), replace=False)
        return shared.train[torch.as_tensor(rows, device=shared.train.device)]

    context = pair_context(enc, dec, i, generation, settings, shared.config.model.loss, cases, declared_events)
    watch = GlobalRandomWatch()
    for cls, stack in ((Encoder, enc), (Decoder, dec)):
        net = stack.network(i, cls)
        try:
            result = mutate(net, rng=rng, context=context, amount=amount)
        except UserError:
            raise
        except Exception as exc:
            raise OperatorError(f"pruning operator {operator_name!r} raised {type(exc).__name__}: {exc}") from exc
        if isinstance(result, tuple) and len(result) == 1:
            result = result[0]  # DEAP style: (individual,)
        stack.store_masks(i, net if result is None else result, operator_name)
    watch.check(f"pruning operator {operator_name!r}", "draw from its rng argument (seeded per cell) so that runs reproduce")
    return context.events
