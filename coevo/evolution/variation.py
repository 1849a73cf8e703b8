"""The per-cell work of a generation, as pure functions of arrays: what an engine runs.

``evaluate_cells`` and ``vary_cells`` take the previous generation's centres (read-only) and a
list of cells, and return results for those cells only. Every random draw of cell k in
generation t comes from its own generator, derived from (seed, t, k, purpose), so results do
not depend on how an engine shards the grid, and a resumed run needs no generator state. The
pruning context an operator is handed is built in :mod:`coevo.evolution.context`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from coevo.config import Config
from coevo.errors import OperatorError, UserError
from coevo.evolution import regrowth, topology
from coevo.evolution.context import pair_context
from coevo.evolution.front import kept_ladder, multi_objective
from coevo.population import Stack
from coevo.genome import Decoder, Encoder, Layout
from coevo.measures import KeptFractions, live_entries, stack_kept_fractions
from coevo.operators.base import needs_of
from coevo.operators.protection import pair_connected, partner_reach
from coevo.registry import GlobalRandomWatch
from coevo.schedules import Pruning
from coevo.training import batched, cpu_kernels, functional
from coevo.training.trainer_terms import TrainerTerms

# purposes of the derived random streams
EVAL_BATCH, TRAIN_ORDER, PRUNE, CASES, LR_MUTATION, UPDATE_ORDER, RESET, NOISE, GROW, LATENT = 1, 2, 3, 4, 5, 6, 7, 8, 9, 10


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
    if enc.layout.model is not None:
        return functional.pair_losses(enc, dec, neighbours[cells], batches, cfg.model.loss)
    if enc.params.device.type == "cpu":
        return cpu_kernels.pair_losses(enc, dec, neighbours[cells], batches, cfg.model.loss)
    nbr = torch.as_tensor(neighbours[cells], device=enc.params.device)
    return batched.pair_losses(enc, dec, nbr, batches, cfg.model.loss)


def centre_losses(enc: Stack, dec: Stack, data: torch.Tensor, loss: str) -> np.ndarray:
    """Each cell's own pair's mean loss on every row of ``data``, (N,) float64."""
    if enc.layout.model is not None:
        return functional.centre_losses(enc, dec, data, loss).cpu().numpy()
    if enc.params.device.type == "cpu":
        return cpu_kernels.centre_losses(enc, dec, data, loss).numpy()
    return batched.centre_losses(enc, dec, data, loss).cpu().numpy()


def centre_measures(enc: Stack, dec: Stack, data: torch.Tensor, loss: str,
                    by_value: bool = False) -> tuple[np.ndarray, KeptFractions]:
    """What the logbook reads of each cell's centre pair: its loss on every row of ``data`` (the
    validation split) and its kept fractions (``by_value``: ``prune.regrow``, see
    :func:`coevo.measures.stack_alive`). Per cell, so a shard gives its cells' values."""
    return centre_losses(enc, dec, data, loss), stack_kept_fractions(enc, dec, by_value)


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
    # the layouts say which path: a model's templates (torch.func), or plain MLPs (Numba on the CPU)
    train = (functional.train_pairs if enc.layout.model is not None
             else cpu_kernels.train_pairs if enc.params.device.type == "cpu" else batched.train_pairs)
    noise_seeds = None
    if cfg.train.gradient_noise > 0:
        noise_seeds = np.array([derive_rng(cfg.run.seed, generation, int(k), NOISE).integers(2**62) for k in cells])
    latent_seeds = None
    if cfg.model.variational:  # a VAE's reparameterisation noise, drawn per cell and generation
        latent_seeds = np.array([derive_rng(cfg.run.seed, generation, int(k), LATENT).integers(2**62) for k in cells])
    new_enc, new_dec, train_loss = train(enc, dec, enc_parents, dec_parents, shared.train, orders, lr,
                                         cfg.train.batch_size, cfg.model.loss, cfg.train.beta1, cfg.train.beta2,
                                         cfg.train.fresh_optimizer_each_batch, cfg.train.bce_weight,
                                         terms=TrainerTerms.of(cfg.train, noise_seeds, latent_seeds))
    pruned = np.zeros(len(cells), dtype=bool)
    declared = needs_of(mutate).events
    events = np.zeros((len(cells), len(declared)), dtype=bool)
    settings = cfg.prune
    reset_fraction = settings.reset_fraction_for(cfg.run.mode, cfg.selection.objectives)
    step = Pruning.of(prune_probability)
    prune_probability = step.probability
    # a multi-objective run's cells prune towards a ladder of sizes (coevo.evolution.front), not one target
    targets = kept_ladder(cfg, topology.neighbourhoods(cfg.grid).shape[0]) if multi_objective(cfg) else None
    if prune_probability > 0 and operator_name != "none":
        wants_kept = settings.target_kept > 0 or step.kept is not None or step.progress is not None
        fractions = stack_kept_fractions(new_enc, new_dec, settings.regrow) if wants_kept else None
        kept = fractions.kept if fractions is not None else None
        tolerance = target_tolerance(new_enc.layout, new_dec.layout)
        for i, k in enumerate(cells):
            rng = derive_rng(cfg.run.seed, generation, int(k), PRUNE)
            if rng.random() >= prune_probability:
                continue
            target = settings.target_kept if targets is None else float(targets[k])
            plan = plan_pair(settings, step, target, None if kept is None else float(kept[i]),
                             None if fractions is None else float(fractions.mask_kept[i]), tolerance)
            if plan is None:
                continue
            drawn = copy.deepcopy(rng)  # every attempt at this pair's mutation draws the same numbers

            def attempt(share: float, i: int = i, k: int = k, drawn: np.random.Generator = drawn) -> set[str]:
                growth = None
                if settings.grow_fraction > 0:
                    growth = (regrowth.regrow_share(share, settings.grow_fraction),
                              derive_rng(cfg.run.seed, generation, int(k), GROW))
                    share = regrowth.operator_amount(share, settings.grow_fraction)
                with cpu_kernels.one_blas_thread():  # an operator's matrix products: threads cost more than they give
                    happened = _mutate_pair(new_enc, new_dec, i, copy.deepcopy(drawn), generation, shared, mutate,
                                            operator_name, derive_rng(cfg.run.seed, generation, int(k), CASES),
                                            share, declared, growth)
                if reset_fraction > 0:  # part of the mutation: an attempt undone is undone whole
                    _reset_weights(new_enc, new_dec, i, reset_fraction,
                                   derive_rng(cfg.run.seed, generation, int(k), RESET))
                return happened

            happened = within_target(attempt, plan.amount, new_enc, new_dec, i, plan.floor, settings.regrow)
            if happened is None:
                continue  # any cut at all would have taken the pair below its target
            pruned[i] = True
            events[i] = [name in happened for name in declared]
        if pruned.any():
            for stack in (new_enc, new_dec):
                stack.apply_masks()
                if settings.regrow:  # the reference: the zeros stay, the mask does not
                    stack.mask.fill_(True)
    return Variation(cells, new_enc, new_dec, pruned, train_loss, events)


@dataclass(frozen=True)
class PairPlan:
    """What the pruning controller asks of one pair's mutation: the operator's amount, and the
    live kept fraction the mutation may not go below (None: no target)."""

    amount: float
    floor: float | None


def plan_pair(settings, step: Pruning, target: float, kept: float | None, mask_kept: float | None,
              tolerance: float) -> PairPlan | None:
    """The pruning controller for one pair, a pure function: from the schedule's step (its amount,
    or the kept fraction or progress it sets), the pair's target, its live kept fraction and its
    mask's kept fraction, the amount to ask of the operator and the floor to hold; None when the
    pair is left alone (at rest at its goal, and no regrowth to swap connections)."""
    amount = settings.amount if step.amount is None else step.amount
    goal = step.kept_goal(target)
    at_rest = False
    if goal is not None:  # the schedule's kept fraction of the masks: this pair's amount to reach it
        at_rest = mask_kept <= goal
        amount = 0.0 if at_rest else 1.0 - goal / mask_kept
    if target > 0 and not at_rest:  # at the target: no more; near it: only what reaches it
        at_rest = kept <= target
        # the operator cuts a share of the mask's alive entries: ask for the live excess of them
        amount = 0.0 if at_rest else min(amount, (kept - target) / mask_kept)
    if at_rest and settings.grow_fraction == 0:
        return None  # (with regrowth a pair at rest still moves connections: a swap)
    # no lower than the target, or than the pair already is (a regrowth swap at rest)
    floor = min(target, kept) - tolerance if target > 0 else None
    return PairPlan(float(amount), floor)


TARGET_STEPS = 6
"""Bisection steps on the amount when a mutation overshoots the target: the amount kept is within
1/64 of the largest that holds it."""


def target_tolerance(enc_layout: Layout, dec_layout: Layout) -> float:
    """How far below ``prune.target_kept`` a pair may end: one entry per layer (each layer's cut is
    rounded), as a fraction of the pair's entries."""
    return (len(enc_layout.layers) + len(dec_layout.layers)) / (enc_layout.size + dec_layout.size)


def pair_kept(enc: Stack, dec: Stack, i: int, by_value: bool = False) -> float:
    """Pair i's live kept fraction, the measure the logbook reports (:mod:`coevo.measures`)."""
    rows = [stack.mask[i:i + 1] & (stack.params[i:i + 1] != 0) if by_value else stack.mask[i:i + 1]
            for stack in (enc, dec)]
    alive = torch.cat(rows, dim=1).cpu().numpy()
    return float(live_entries(enc.layout + dec.layout, alive).mean())


def within_target(attempt: Callable[[float], set[str]], amount: float, enc: Stack, dec: Stack, i: int,
                  floor: float | None, by_value: bool = False) -> set[str] | None:
    """Mutate pair i with ``attempt(amount)``; if that leaves its live kept fraction below
    ``floor``, bisect for the largest amount that does not (structured cuts and the dead weight
    they leave behind take more entries than the amount says). Returns the operator's events, or
    None (pair i unchanged) when even amount 0 overshoots (an operator that ignores the amount,
    or the reset mutation alone). Each attempt starts from pair i as it was, and draws the same
    random numbers."""
    if floor is None:
        return attempt(amount)
    index = np.array([i])
    saved = enc[index], dec[index]
    happened = attempt(amount)
    if pair_kept(enc, dec, i, by_value) >= floor:
        return happened
    enc.put(i, saved[0]), dec.put(i, saved[1])
    happened = attempt(0.0)  # the smallest mutation there is (the reset alone may overshoot)
    if pair_kept(enc, dec, i, by_value) < floor:
        enc.put(i, saved[0]), dec.put(i, saved[1])
        return None
    lo, hi, best = 0.0, amount, (enc[index], dec[index], happened)
    for _ in range(TARGET_STEPS):
        mid = (lo + hi) / 2
        enc.put(i, saved[0]), dec.put(i, saved[1])
        happened = attempt(mid)
        if pair_kept(enc, dec, i, by_value) >= floor:
            lo, best = mid, (enc[index], dec[index], happened)
        else:
            hi = mid
    kept_enc, kept_dec, happened = best
    enc.put(i, kept_enc), dec.put(i, kept_dec)
    return happened


def _reset_weights(enc: Stack, dec: Stack, i: int, fraction: float, rng: np.random.Generator) -> None:
    """Exploration without regrowth: zero each alive weight of pair i (and its Adam moments) with
    probability ``fraction``; the masks are untouched, so the zeros train again. A reset that would
    leave no input -> latent -> output path of non-zero entries is skipped (a pair that outputs a
    constant until it retrains would be judged as one)."""
    draws = [torch.as_tensor(rng.random(stack.layout.size) < fraction, device=stack.mask.device) & stack.mask[i]
             for stack in (enc, dec)]
    after = [stack.layout.unit_masks(stack.layout.split((stack.mask[i] & (stack.params[i] != 0) & ~draw).cpu().numpy()))
             for stack, draw in zip((enc, dec), draws)]
    if not pair_connected(*after):
        return
    for stack, draw in zip((enc, dec), draws):
        for field in (stack.params, stack.exp_avg, stack.exp_avg_sq):
            field[i].masked_fill_(draw, 0.0)


def _mutate_pair(enc: Stack, dec: Stack, i: int, rng: np.random.Generator, generation: int, shared: CellData,
                 mutate: Callable[..., Any], operator_name: str, cases_rng: np.random.Generator,
                 amount: float, declared_events: tuple[str, ...] = (),
                 growth: tuple[float, np.random.Generator] | None = None) -> set[str]:
    """Prune row i's encoder and decoder with the operator; activations and gradients are
    recorded on demand. With ``growth`` (share, rng), then revive that share of each layer's cut
    elsewhere (:mod:`coevo.evolution.regrowth`). Returns the events the operator reported."""
    settings = shared.config.prune

    def cases() -> torch.Tensor:
        n_rows = shared.train.shape[0]
        rows = cases_rng.choice(n_rows, size=min(settings.cases, n_rows), replace=False)
        return shared.train[torch.as_tensor(rows, device=shared.train.device)]

    context = pair_context(enc, dec, i, generation, settings, shared.config.model.loss, cases, declared_events)
    watch = GlobalRandomWatch()
    before = ({cls: stack.mask[i].cpu().numpy().copy() for cls, stack in ((Encoder, enc), (Decoder, dec))}
              if growth is not None else {})
    nets = {}
    for cls, stack, other in ((Encoder, enc, dec), (Decoder, dec, enc)):
        net = nets[cls] = stack.network(i, cls, keep_inputs=settings.keep_inputs)
        # the partner as it is now (the decoder sees the encoder this mutation left): rule 3 holds over the pair
        partner = partner_reach(cls.role, other.layout.unit_masks(other.layout.split(other.mask[i].cpu().numpy())))
        net.partner_reach = partner.copy()
        net.partner_reach.flags.writeable = False
        try:
            result = mutate(net, rng=rng, context=context, amount=amount)
        except (UserError, KeyboardInterrupt):
            raise
        except BaseException as exc:  # SystemExit and BaseException subclasses too: the operator's error
            raise OperatorError(f"pruning operator {operator_name!r} raised {type(exc).__name__}: {exc}") from exc
        if isinstance(result, tuple) and len(result) == 1:
            result = result[0]  # DEAP style: (individual,)
        stack.store_masks(i, net if result is None else result, operator_name, settings.keep_inputs, partner)
    watch.check(f"pruning operator {operator_name!r}", "draw from its rng argument (seeded per cell) so that runs reproduce")
    if growth is not None:
        share, grow_rng = growth
        for cls, stack, other in ((Encoder, enc, dec), (Decoder, dec, enc)):
            gradients = context.gradients(nets[cls]) if settings.grow_by == "gradient" else None
            partner = partner_reach(cls.role, other.layout.unit_masks(other.layout.split(other.mask[i].cpu().numpy())))
            regrowth.grow(stack, i, before[cls], share, grow_rng, gradients, cls.role, partner)
    return context.events
