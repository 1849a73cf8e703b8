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

from coevo import batched
from coevo.config import Config
from coevo.errors import OperatorError, UserError
from coevo.genome import Decoder, Encoder, Layout
from coevo.population import Stack
from operators.base import PruneContext

# purposes of the derived random streams
EVAL_BATCH, TRAIN_ORDER, PRUNE, CASES, LR_MUTATION = 1, 2, 3, 4, 5


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
    nbr = torch.as_tensor(neighbours[cells], device=enc.params.device)
    s = neighbours.shape[1]
    per_cell = s * s * batch * max(shared.train.shape[1], *(l.fan_out for l in enc.layout.layers))
    groups = cell_groups(len(cells), per_cell, EVAL_BUDGET_ELEMENTS, enc.params.device)
    return torch.cat([batched.pair_losses(enc, dec, nbr[g], batches[g], cfg.model.loss) for g in groups])


@dataclass
class Variation:
    """New centres for some cells, after training and (maybe) pruning."""

    cells: np.ndarray
    encoders: Stack
    decoders: Stack
    pruned: np.ndarray  # bool: was this cell's pair mutated
    train_loss: np.ndarray  # each cell's training loss over its epoch (before pruning)


# Cells train in groups whose parameters, moments, masks and gradients fit in the last-level
# cache together (~17 bytes per parameter): a 10x10 torus then costs ~10x a 10-cell ring, instead
# of falling off the cache into memory bandwidth. Results do not depend on the grouping.
CACHE_BUDGET_BYTES = 24 << 20
BYTES_PER_TRAINED_PARAMETER = 17
EVAL_BUDGET_ELEMENTS = 1 << 22


def cell_groups(n_cells: int, per_cell: int, budget: int, device: torch.device) -> list[slice]:
    """Split ``n_cells`` into near-equal contiguous groups of at most ``budget // per_cell``."""
    if device.type != "cpu":
        return [slice(0, n_cells)]
    size = max(1, budget // max(per_cell, 1))
    n_groups = -(-n_cells // size)
    bounds = np.linspace(0, n_cells, n_groups + 1).round().astype(int)
    return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]


def vary_cells(enc: Stack, dec: Stack, parents: np.ndarray, cells: np.ndarray, lr: np.ndarray,
               prune_probability: float, generation: int, shared: CellData,
               mutate: Callable[..., Any], operator_name: str) -> Variation:
    """Train a copy of each cell's selected pair (``parents[i]`` is the cell whose centres cell
    ``cells[i]`` selected) for one pass over the data, then prune it with the given probability."""
    cfg = shared.config
    device = enc.params.device
    n_rows = shared.train.shape[0]
    pruned = np.zeros(len(cells), dtype=bool)
    new_enc, new_dec, train_loss = [], [], []
    per_cell = BYTES_PER_TRAINED_PARAMETER * (enc.layout.size + dec.layout.size)
    for group in cell_groups(len(cells), per_cell, CACHE_BUDGET_BYTES, device):
        pick = torch.as_tensor(parents[group], device=device)
        pairs = Stack.join(enc[pick], dec[pick])
        orders = np.stack([derive_rng(cfg.run.seed, generation, int(k), TRAIN_ORDER).permutation(n_rows)
                           for k in cells[group]])
        train_loss.append(batched.train_epoch(
            pairs, shared.train, torch.as_tensor(orders, device=device), lr[group], cfg.train.batch_size,
            cfg.model.loss, cfg.train.beta1, cfg.train.beta2, cfg.train.fresh_optimizer_each_batch,
        ))
        if prune_probability > 0 and operator_name != "none":
            for i, k in enumerate(cells[group]):
                rng = derive_rng(cfg.run.seed, generation, int(k), PRUNE)
                if rng.random() < prune_probability:
                    pruned[group.start + i] = True
                    _mutate_pair(pairs, i, enc.layout, dec.layout, rng, generation, shared, mutate, operator_name,
                                 derive_rng(cfg.run.seed, generation, int(k), CASES))
            if pruned[group].any():
                pairs.apply_masks()
        new_enc.append(pairs.part(enc.layout, 0))
        new_dec.append(pairs.part(dec.layout, enc.layout.size))
    return Variation(cells, Stack.concat(new_enc), Stack.concat(new_dec), pruned, np.concatenate(train_loss))


def _mutate_pair(pairs: Stack, i: int, enc_layout: Layout, dec_layout: Layout, rng: np.random.Generator,
                 generation: int, shared: CellData, mutate: Callable[..., Any], operator_name: str,
                 cases_rng: np.random.Generator) -> None:
    settings = shared.config.prune

    def record() -> dict[str, list[np.ndarray]]:
        n_rows = shared.train.shape[0]
        rows = cases_rng.choice(n_rows, size=min(settings.cases, n_rows), replace=False)
        x = shared.train[torch.as_tensor(rows, device=shared.train.device)]
        with torch.no_grad():
            enc_acts = batched.forward(enc_layout, pairs.params[i, : enc_layout.size], x)
            dec_acts = batched.forward(dec_layout, pairs.params[i, enc_layout.size :], enc_acts[-1])
        return {"encoder": [a.cpu().numpy() for a in enc_acts[1:]],
                "decoder": [a.cpu().numpy() for a in dec_acts[1:]]}

    context = PruneContext(generation, settings, record)
    for cls, start, layout in ((Encoder, 0, enc_layout), (Decoder, enc_layout.size, dec_layout)):
        net = pairs.network(i, cls, start=start, layout=layout)
        try:
            result = mutate(net, rng=rng, context=context)
        except UserError:
            raise
        except Exception as exc:
            raise OperatorError(f"pruning operator {operator_name!r} raised {type(exc).__name__}: {exc}") from exc
        if isinstance(result, tuple) and len(result) == 1:
            result = result[0]  # DEAP style: (individual,)
        pairs.store_masks(i, net if result is None else result, operator_name, start=start, layout=layout)
