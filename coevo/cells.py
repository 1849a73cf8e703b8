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

from coevo import batched, cpu_kernels
from coevo.config import Config
from coevo.errors import OperatorError, UserError
from coevo.genome import Decoder, Encoder
from coevo.measures import KeptFractions, stack_kept_fractions
from coevo.population import Stack
from coevo.operators.base import PruneContext
from coevo.registry import GlobalRandomWatch

# purposes of the derived random streams
EVAL_BATCH, TRAIN_ORDER, PRUNE, CASES, LR_MUTATION, UPDATE_ORDER, RESET = 1, 2, 3, 4, 5, 6, 7


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


def vary_cells(enc: Stack, dec: Stack, enc_parents: np.ndarray, dec_parents: np.ndarray, cells: np.ndarray,
               lr: np.ndarray, prune_probability: float, generation: int, shared: CellData,
               mutate: Callable[..., Any], operator_name: str) -> Variation:
    """Train a copy of each cell's selected pair for one pass over the data, then prune it with
    the given probability. Cell ``cells[i]`` selected the encoder of cell ``enc_parents[i]`` and
    the decoder of cell ``dec_parents[i]`` (the same cell unless ``selection.pairing`` is
    ``"independent"``)."""
    cfg = shared.config
    n_rows = shared.train.shape[0]
    orders = np.stack([derive_rng(cfg.run.seed, generation, int(k), TRAIN_ORDER).permutation(n_rows) for k in cells])
    train = cpu_kernels.train_pairs if enc.params.device.type == "cpu" else batched.train_pairs
    new_enc, new_dec, train_loss = train(enc, dec, enc_parents, dec_parents, shared.train, orders, lr,
                                         cfg.train.batch_size, cfg.model.loss, cfg.train.beta1, cfg.train.beta2,
                                         cfg.train.fresh_optimizer_each_batch, cfg.train.bce_weight)
    pruned = np.zeros(len(cells), dtype=bool)
    settings = cfg.prune
    if prune_probability > 0 and operator_name != "none":
        kept = stack_kept_fractions(new_enc, new_dec).kept if settings.target_kept > 0 else None
        for i, k in enumerate(cells):
            rng = derive_rng(cfg.run.seed, generation, int(k), PRUNE)
            if rng.random() >= prune_probability:
                continue
            amount = settings.amount
            if kept is not None:  # at the target: no more; near it: only what reaches it
                if kept[i] <= settings.target_kept:
                    continue
                amount = min(amount, 1.0 - settings.target_kept / kept[i])
            pruned[i] = True
            _mutate_pair(new_enc, new_dec, i, rng, generation, shared, mutate, operator_name,
                         derive_rng(cfg.run.seed, generation, int(k), CASES), amount)
            if settings.reset_fraction > 0:
                _reset_weights(new_enc, new_dec, i, settings.reset_fraction,
                               derive_rng(cfg.run.seed, generation, int(k), RESET))
        if pruned.any():
            for stack in (new_enc, new_dec):
                stack.apply_masks()
                if settings.regrow:  # the reference: the zeros stay, the mask does not
                    stack.mask.fill_(True)
    return Variation(cells, new_enc, new_dec, pruned, train_loss)


def _reset_weights(enc: Stack, dec: Stack, i: int, fraction: float, rng: np.random.Generator) -> None:
    """Exploration without regrowth: zero each alive weight of pair i (and its Adam moments) with
    probability ``fraction``; the masks are untouched, so the zeros train again."""
    for stack in (enc, dec):
        draw = torch.as_tensor(rng.random(stack.layout.size) < fraction, device=stack.mask.device) & stack.mask[i]
        for field in (stack.params, stack.exp_avg, stack.exp_avg_sq):
            field[i].masked_fill_(draw, 0.0)


def _mutate_pair(enc: Stack, dec: Stack, i: int, rng: np.random.Generator, generation: int, shared: CellData,
                 mutate: Callable[..., Any], operator_name: str, cases_rng: np.random.Generator,
                 amount: float) -> None:
    """Prune row i's encoder and decoder with the operator; activations are recorded on demand."""
    settings = shared.config.prune

    def record() -> dict[str, list[np.ndarray]]:
        n_rows = shared.train.shape[0]
        rows = cases_rng.choice(n_rows, size=min(settings.cases, n_rows), replace=False)
        x = shared.train[torch.as_tensor(rows, device=shared.train.device)]
        with torch.no_grad():
            enc_acts = batched.forward(enc.layout, enc.params[i], x)
            dec_acts = batched.forward(dec.layout, dec.params[i], enc_acts[-1])
        return {"encoder": [a.cpu().numpy() for a in enc_acts[1:]],
                "decoder": [a.cpu().numpy() for a in dec_acts[1:]]}

    context = PruneContext(generation, settings, record)
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
