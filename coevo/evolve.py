"""Spatial coevolution of encoders and decoders (SPEC 4, the paper's Lipi-AE-S).

The loop reads like DEAP's ``eaSimple``: one comment per phase. Generations are synchronous:
every cell reads the previous generation's centres, so the engine may run cells in any order,
batched or sharded, with the same result.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from deap import base, tools

from coevo import schedules, topology
from coevo.cells import LR_MUTATION, UPDATE_ORDER, CellData, centre_losses, derive_rng
from coevo.checkpoint import RunState
from coevo.config import Config
from coevo.engines import Engine, LocalEngine
from coevo.errors import OperatorError, UserError
from coevo.genome import Decoder, Encoder, Network
from coevo.measures import stack_kept_fractions
from coevo.observers import Observer
from coevo.problem import Problem
from coevo.registry import GlobalRandomWatch
from coevo.population import Stack
from coevo import operators

CONCEPTS = {"best": np.min, "worst": np.max, "mean": np.mean}


def apply_operator(net, operator, amount: float, rng: np.random.Generator, context, **params):
    """DEAP-style mutation: prune ``net`` in place with ``operator`` and its keyword ``params``
    (``prune.params``, bound once by :func:`make_toolbox`); returns ``(net,)``."""
    result = operator(net, amount, rng, context, **params)
    return (net,) if result is None else result if isinstance(result, tuple) else (result,)


def make_toolbox(config: Config) -> base.Toolbox:
    """The DEAP toolbox of a run: ``select`` (tournament) and ``mutate`` (the pruning operator,
    with ``prune.amount`` and ``prune.params`` bound as DEAP binds keyword arguments). Resolving
    the operator checks its parameters, so a bad one stops here, before a run starts."""
    toolbox = base.Toolbox()
    toolbox.register("select", tools.selTournament, k=1, tournsize=config.selection.tournament_size)
    operator, params = operators.registry.resolve(config.prune.operator, config.prune.params)
    toolbox.register("mutate", apply_operator, operator=operator, amount=config.prune.amount, **params)
    return toolbox


def prune_probability(config: Config, generation: int, subpopulation: int) -> float:
    """p_sched(t) of the configured schedule with its ``prune.schedule_params``, checked to be a
    probability, and computed without touching a global random generator (a schedule is a pure
    function of its arguments)."""
    name = config.prune.schedule
    schedule, params = schedules.registry.resolve(name, config.prune.schedule_params)
    last = config.run.generations - 1
    watch = GlobalRandomWatch()
    try:
        p = float(schedule(generation, last, config.prune.probability, subpopulation, **params))
    except UserError:
        raise
    except Exception as exc:
        raise OperatorError(f"pruning schedule {name!r} raised {type(exc).__name__}: {exc}") from exc
    watch.check(f"pruning schedule {name!r}", "a schedule must be a pure function of (t, T, p, s) and its parameters")
    if not 0.0 <= p <= 1.0:
        raise OperatorError(f"pruning schedule {name!r} returned {p!r} at generation "
                            f"{generation}; a schedule must return a probability in [0, 1]")
    return p


def solution_concept(losses: np.ndarray, concept: str) -> tuple[np.ndarray, np.ndarray]:
    """Encoder fitness over rows, decoder fitness over columns of each (s, s) loss matrix."""
    reduce = CONCEPTS[concept]
    return reduce(losses, axis=2), reduce(losses, axis=1)


def select_parents(neighbours: np.ndarray, enc_fitness: np.ndarray, dec_fitness: np.ndarray,
                   toolbox: base.Toolbox, pairing: str) -> tuple[np.ndarray, np.ndarray]:
    """For each cell, the cells whose encoder and whose decoder it trains next: a tournament
    among its sub-population's encoders on their fitness (rows), then

    - ``pairing = "encoder"`` (the reference's): the winner E_i brings its own decoder D_i;
    - ``pairing = "independent"`` (Lipizzaner's): a second tournament among the decoders on
      their own fitness (columns) picks D_j, and (E_i, D_j) is trained.

    Both tournaments draw from python's ``random`` (seeded per generation), encoder first, cell by
    cell; "encoder" pairing draws exactly what it always did. Returns (encoder cells, decoder cells).

    The individuals are handles: selection needs only their fitness, and the genome itself
    stays in row ``ind.cell`` of the population stack (copied only once selected).
    """
    enc_parents = np.empty(neighbours.shape[0], dtype=np.int64)
    dec_parents = np.empty(neighbours.shape[0], dtype=np.int64)
    for k, row in enumerate(neighbours):
        enc_parents[k] = toolbox.select(_handles(Encoder, row, enc_fitness[k]))[0].cell
        if pairing == "independent":
            dec_parents[k] = toolbox.select(_handles(Decoder, row, dec_fitness[k]))[0].cell
        else:
            dec_parents[k] = enc_parents[k]
    return enc_parents, dec_parents


def _handles(cls: type[Network], cells: np.ndarray, fitness: np.ndarray) -> list[Network]:
    """DEAP individuals of one sub-population: empty networks that name their cell, with fitness."""
    subpop = []
    for cell, value in zip(cells, fitness):
        ind = cls([], cell=int(cell))
        ind.fitness.values = (float(value),)
        subpop.append(ind)
    return subpop


@dataclass
class Measures:
    train: np.ndarray  # each cell's training loss over the epoch that made its centre
    validation: np.ndarray  # each centre pair's loss on the whole validation split
    seconds: float  # time spent measuring (logging cost, not part of the algorithm)


def measure(problem: Problem, enc: Stack, dec: Stack, train_loss: np.ndarray) -> Measures:
    """The logbook's losses. Training loss is what the epoch saw (free, as training loops report
    it); validation loss is each new centre, after pruning, on the whole validation split."""
    t0 = time.perf_counter()
    validation = centre_losses(enc, dec, problem.validation, problem.config.model.loss)
    return Measures(np.asarray(train_loss, dtype=np.float64), validation, time.perf_counter() - t0)


def record(generation: int, m: Measures, state: RunState, seconds: float, prune_p: float, pruned: int,
           extra: dict | None = None) -> dict:
    """One logbook row."""
    stats = tools.Statistics()
    stats.register("min", np.min)
    stats.register("median", np.median)
    stats.register("max", np.max)
    best = int(np.argmin(m.validation))
    kept = stack_kept_fractions(state.encoders, state.decoders)
    row = {"generation": generation}
    row.update({f"train_loss_{k}": float(v) for k, v in stats.compile(m.train).items()})
    row["train_loss_mean"] = float(np.mean(m.train))
    row["validation_loss_best"] = float(m.validation[best])
    row["validation_loss_median"] = float(np.median(m.validation))
    row["validation_loss_max"] = float(np.max(m.validation))
    row["best_cell"] = best
    row["kept_mean"] = float(kept.kept.mean())
    row["kept_encoder"] = float(kept.kept_encoder.mean())
    row["kept_decoder"] = float(kept.kept_decoder.mean())
    row["kept_best"] = float(kept.kept[best])
    row["mask_kept_mean"] = float(kept.mask_kept.mean())
    row["compact_best"] = float(kept.compact[best])
    row["latent_best"] = int(kept.latent[best])
    row.update({f"lr_{k}": float(v) for k, v in stats.compile(state.lr).items()})
    row["prune_probability"] = prune_p
    row["pruned_cells"] = pruned
    row["seconds"] = seconds
    row["measure_seconds"] = m.seconds
    row["wall_seconds"] = state.wall_seconds
    if extra:
        row.update(extra)
    return row


def coevolve(problem: Problem, observers: Sequence[Observer] = (), state: RunState | None = None,
             engine: Engine | None = None) -> RunState:
    """Run (or continue) spatial coevolution until ``run.generations``; returns the final state."""
    cfg = problem.config
    neighbours = topology.neighbourhoods(cfg.grid)
    n_cells, s = neighbours.shape
    if state is None:
        enc, dec = problem.fresh_stacks(n_cells)
        state = RunState(0, enc, dec, np.full(n_cells, cfg.train.learning_rate))
    toolbox = make_toolbox(cfg)
    engine = engine or LocalEngine()
    engine.start(CellData(problem.train, cfg), neighbours)
    for obs in observers:
        obs.on_start(cfg, state)
    try:
        for gen in range(state.generation, cfg.run.generations):
            t0 = time.perf_counter()
            p = prune_probability(cfg, gen, s)
            # DEAP's tournament draws from python's random: seeded per generation
            random.seed(f"{cfg.run.seed}:{gen}")
            generation = asynchronous_generation if cfg.run.update == "asynchronous" else synchronous_generation
            selection_loss, train_loss, pruned = generation(state, neighbours, engine, toolbox, cfg, gen, p)
            # mutate learning rates
            rng = derive_rng(cfg.run.seed, gen, 0, LR_MUTATION)
            state.lr = np.clip(state.lr + rng.normal(0.0, cfg.train.lr_sigma, n_cells),
                               cfg.train.lr_min, cfg.train.lr_max) if cfg.train.lr_sigma > 0 else state.lr
            state.generation = gen + 1
            # record
            m = measure(problem, state.encoders, state.decoders, train_loss)
            seconds = time.perf_counter() - t0
            state.wall_seconds += seconds
            row = record(gen, m, state, seconds, p, int(pruned.sum()), {"selection_loss_best": selection_loss})
            for obs in observers:
                obs.on_generation(row, state)
    finally:
        engine.close()
    return state


def synchronous_generation(state: RunState, neighbours: np.ndarray, engine: Engine, toolbox: base.Toolbox,
                           cfg: Config, gen: int, p: float) -> tuple[float, np.ndarray, np.ndarray]:
    """Every cell reads the previous generation's centres, so the engine runs them all at once.
    Replaces the state's centres; returns the best centre's selection loss, each cell's training
    loss and whether it was pruned."""
    # gather + evaluate: every encoder x decoder pair of each sub-population, one mini-batch
    losses = engine.evaluate(state.encoders, state.decoders, gen).cpu().numpy()
    # fitness: the solution concept over rows (encoders) and columns (decoders)
    enc_fitness, dec_fitness = solution_concept(losses, cfg.selection.solution_concept)
    # select: tournament on encoder fitness (and on decoder fitness, with independent pairing)
    enc_parents, dec_parents = select_parents(neighbours, enc_fitness, dec_fitness, toolbox, cfg.selection.pairing)
    # train + mutate: copies of the selected pairs, one pass over the data, then maybe pruned
    variation = engine.vary(state.encoders, state.decoders, enc_parents, dec_parents, state.lr, p, gen,
                            toolbox.mutate, cfg.prune.operator)
    # replace: the trained pairs become the new centres
    state.encoders, state.decoders = variation.encoders, variation.decoders
    return float(enc_fitness[:, 0].min()), variation.train_loss, variation.pruned


def asynchronous_generation(state: RunState, neighbours: np.ndarray, engine: LocalEngine, toolbox: base.Toolbox,
                            cfg: Config, gen: int, p: float) -> tuple[float, np.ndarray, np.ndarray]:
    """The reference's order: one cell at a time, in an order shuffled each generation, each
    reading its neighbours' latest centres, so a good pair can cross the grid in one generation.
    Same phases and the same per-cell random streams as :func:`synchronous_generation`."""
    n = len(neighbours)
    order = derive_rng(cfg.run.seed, gen, 0, UPDATE_ORDER).permutation(n)
    enc, dec = state.encoders[:], state.decoders[:]
    train_loss, pruned, selection_loss = np.zeros(n), np.zeros(n, dtype=bool), np.inf
    for k in order:
        cell = np.array([k])
        losses = engine.evaluate(enc, dec, gen, cells=cell).cpu().numpy()
        enc_fitness, dec_fitness = solution_concept(losses, cfg.selection.solution_concept)
        enc_parent, dec_parent = select_parents(neighbours[cell], enc_fitness, dec_fitness, toolbox,
                                                cfg.selection.pairing)
        variation = engine.vary(enc, dec, enc_parent, dec_parent, state.lr[cell], p, gen, toolbox.mutate,
                                cfg.prune.operator, cells=cell)
        enc.put(k, variation.encoders)
        dec.put(k, variation.decoders)
        train_loss[k], pruned[k] = variation.train_loss[0], variation.pruned[0]
        selection_loss = min(selection_loss, float(enc_fitness[0, 0]))
    state.encoders, state.decoders = enc, dec
    return selection_loss, train_loss, pruned


def final_losses(problem: Problem, state: RunState) -> dict[str, np.ndarray]:
    """Each centre pair's loss on train, validation and test."""
    loss = problem.config.model.loss
    out = {}
    for name, split in (("train", problem.train), ("validation", problem.validation), ("test", problem.test)):
        out[name] = centre_losses(state.encoders, state.decoders, split, loss)
    return out

