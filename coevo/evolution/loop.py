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

from coevo import operators
from coevo import schedules
from coevo.config import Config
from coevo.engines import Engine, LocalEngine
from coevo.errors import ConfigError, OperatorError, UserError
from coevo.evolution import front, topology
from coevo.population import Stack
from coevo.evolution.problem import Problem
from coevo.evolution.state import RunState
from coevo.evolution.variation import LR_MUTATION, UPDATE_ORDER, CellData, centre_losses, centre_measures, derive_rng
from coevo.genome import Decoder, Encoder, Network
from coevo.measures import KeptFractions, stack_kept_fractions
from coevo.observers import Observer
from coevo.registry import GlobalRandomWatch
from coevo.training import compile_watch

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
    if front.multi_objective(config):  # NSGA-II's crowded comparison on (loss, kept)
        toolbox.register("select", front.sel_crowded_tournament, k=1, tournsize=config.selection.tournament_size)
    else:
        toolbox.register("select", tools.selTournament, k=1, tournsize=config.selection.tournament_size)
    operator, params = operators.registry.resolve(config.prune.operator, config.prune.params)
    toolbox.register("mutate", apply_operator, operator=operator, amount=config.prune.amount, **params)
    toolbox.mutate.coevo_needs = operators.needs_of(operator)  # what the trainer and stacks must provide
    return toolbox


def prune_probability(config: Config, generation: int, subpopulation: int) -> float:
    """p_sched(t) of the configured schedule with its ``prune.schedule_params``, checked to be a
    probability, and computed without touching a global random generator (a schedule is a pure
    function of its arguments)."""
    return prune_step(config, generation, subpopulation).probability


def prune_step(config: Config, generation: int, subpopulation: int) -> schedules.Pruning:
    """The configured schedule's :class:`~coevo.schedules.Pruning` at ``generation``: its
    probability, checked, and the amount or kept fraction it sets (``None``: ``prune.amount``),
    checked to be in [0, 1]. What the engines pass to :func:`coevo.evolution.variation.vary_cells`."""
    name = config.prune.schedule
    schedule, params = schedules.registry.resolve(name, config.prune.schedule_params)
    last = config.run.generations - 1
    watch = GlobalRandomWatch()
    try:
        returned = schedule(generation, last, config.prune.probability, subpopulation, **params)
        parts = (returned.probability, returned.amount, returned.kept, returned.progress) \
            if isinstance(returned, schedules.Pruning) else (returned,)
        for value in parts:  # float("0.5") and float(True) would pass silently
            if isinstance(value, (str, bytes, bool, np.bool_)):
                raise OperatorError(f"pruning schedule {name!r} returned {value!r} ({type(value).__name__}) at "
                                    f"generation {generation}; a schedule returns a number (or schedules.Pruning "
                                    f"of numbers)")
        step = schedules.Pruning.of(returned)
        p = float(step.probability)
        amount = None if step.amount is None else float(step.amount)
        kept = None if step.kept is None else float(step.kept)
        progress = None if step.progress is None else float(step.progress)
    except (UserError, KeyboardInterrupt):
        raise
    except BaseException as exc:  # SystemExit and BaseException subclasses too: the schedule's error
        raise OperatorError(f"pruning schedule {name!r} raised {type(exc).__name__}: {exc}") from exc
    watch.check(f"pruning schedule {name!r}", "a schedule must be a pure function of (t, T, p, s) and its parameters")
    if not 0.0 <= p <= 1.0:
        raise OperatorError(f"pruning schedule {name!r} returned {p!r} at generation "
                            f"{generation}; a schedule must return a probability in [0, 1]")
    if amount is not None and not 0.0 <= amount <= 1.0:
        raise OperatorError(f"pruning schedule {name!r} returned the amount {amount!r} at generation "
                            f"{generation}; an amount is a fraction in [0, 1]")
    if kept is not None and not 0.0 <= kept <= 1.0:
        raise OperatorError(f"pruning schedule {name!r} returned the kept fraction {kept!r} at generation "
                            f"{generation}; a kept fraction is in [0, 1]")
    if sum(x is not None for x in (amount, kept, progress)) > 1:
        raise OperatorError(f"pruning schedule {name!r} returned more than one of amount, kept and progress at "
                            f"generation {generation}; return one: Pruning(p, amount=...), Pruning(p, kept=...) "
                            f"or Pruning(p, progress=...)")
    if progress is not None:
        if not 0.0 <= progress <= 1.0:
            raise OperatorError(f"pruning schedule {name!r} returned the progress {progress!r} at generation "
                                f"{generation}; progress towards prune.target_kept is in [0, 1]")
        if not config.prune.target_kept > 0:
            raise ConfigError(f"pruning schedule {name!r} prunes towards prune.target_kept, which is 0; "
                              f"set it (e.g. --set prune.target_kept=0.1) or use the polynomial schedule")
    # progress stays progress: each pair's kept goal follows from its own target (coevo.evolution.variation.vary_cells)
    return schedules.Pruning(p, amount, kept, progress)


def solution_concept(losses: np.ndarray, concept: str) -> tuple[np.ndarray, np.ndarray]:
    """Encoder fitness over rows, decoder fitness over columns of each (s, s) loss matrix."""
    reduce = CONCEPTS[concept]
    return reduce(losses, axis=2), reduce(losses, axis=1)


def select_parents(neighbours: np.ndarray, enc_fitness: np.ndarray, dec_fitness: np.ndarray,
                   toolbox: base.Toolbox, pairing: str,
                   kept: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """For each cell, the cells whose encoder and whose decoder it trains next: a tournament
    among its sub-population's encoders on their fitness (rows), then

    - ``pairing = "encoder"`` (the reference's): the winner E_i brings its own decoder D_i;
    - ``pairing = "independent"`` (Lipizzaner's): a second tournament among the decoders on
      their own fitness (columns) picks D_j, and (E_i, D_j) is trained.

    Both tournaments draw from python's ``random`` (seeded per generation), encoder first, cell by
    cell; "encoder" pairing draws exactly what it always did. Returns (encoder cells, decoder cells).

    The individuals are handles: selection needs only their fitness, and the genome itself
    stays in row ``ind.cell`` of the population stack (copied only once selected). With ``kept``
    (each cell's pair's live kept fraction: ``selection.objectives = ["loss", "kept"]``) a
    handle's fitness is (loss, kept of its cell's pair).
    """
    enc_parents = np.empty(neighbours.shape[0], dtype=np.int64)
    dec_parents = np.empty(neighbours.shape[0], dtype=np.int64)
    for k, row in enumerate(neighbours):
        enc_parents[k] = toolbox.select(_handles(Encoder, row, enc_fitness[k], kept))[0].cell
        if pairing == "independent":
            dec_parents[k] = toolbox.select(_handles(Decoder, row, dec_fitness[k], kept))[0].cell
        else:
            dec_parents[k] = enc_parents[k]
    return enc_parents, dec_parents


def _handles(cls: type[Network], cells: np.ndarray, fitness: np.ndarray, kept: np.ndarray | None = None) -> list:
    """DEAP individuals of one sub-population: empty networks that name their cell, with fitness
    (with ``kept``, two-objective handles of :mod:`coevo.evolution.front`)."""
    if kept is not None:
        return [front.handle(int(cell), value, kept[cell]) for cell, value in zip(cells, fitness)]
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
    kept: KeptFractions  # each centre pair's kept fractions
    seconds: float  # time spent measuring (logging cost, not part of the algorithm)


def measure(problem: Problem, centres: Engine | tuple[Stack, Stack], train_loss: np.ndarray) -> Measures:
    """The logbook's losses. Training loss is what the epoch saw (free, as training loops report
    it); validation loss is each new centre, after pruning, on the whole validation split. The
    centres are an engine's (measured where they live) or a pair of stacks."""
    t0 = time.perf_counter()
    data, loss = problem.validation, problem.config.model.loss
    by_value = problem.config.prune.regrow
    validation, kept = (centre_measures(*centres, data, loss, by_value) if isinstance(centres, tuple)
                        else centres.measure(data, loss))
    return Measures(np.asarray(train_loss, dtype=np.float64), validation, kept, time.perf_counter() - t0)


def record(generation: int, m: Measures, state: RunState, seconds: float, prune_p: float, pruned: int,
           extra: dict | None = None) -> dict:
    """One logbook row."""
    stats = tools.Statistics()
    stats.register("min", np.min)
    stats.register("median", np.median)
    stats.register("max", np.max)
    best = int(np.argmin(m.validation))
    kept = m.kept
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
    row["latent_alive_best"] = int(kept.latent[best])
    row["latent_alive_mean"] = float(kept.latent.mean())
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
    engine.load(state.encoders, state.decoders)
    # two objectives: each cell's pair size is its second fitness value, and the front an archive
    kept = stack_kept_fractions(state.encoders, state.decoders, cfg.prune.regrow).kept if front.multi_objective(cfg) else None
    if kept is not None and state.front is None:
        state.front = front.Front()
    for obs in observers:
        obs.on_start(cfg, state)
    try:
        for gen in range(state.generation, cfg.run.generations):
            t0, compiled = time.perf_counter(), compile_watch.seconds()
            p = prune_step(cfg, gen, s)
            # DEAP's tournament draws from python's random: seeded per generation
            random.seed(f"{cfg.run.seed}:{gen}")
            generation = asynchronous_generation if cfg.run.update == "asynchronous" else synchronous_generation
            selection_loss, train_loss, pruned, events = generation(state, neighbours, engine, toolbox, cfg, gen, p,
                                                                    kept)
            note_events(state, toolbox, events, gen)
            # replace: the new centres stay in the engine; a checkpoint or an observer that reads
            # them fetches them then
            state.centres_in(engine.centres)
            # mutate learning rates
            rng = derive_rng(cfg.run.seed, gen, 0, LR_MUTATION)
            state.lr = np.clip(state.lr + rng.normal(0.0, cfg.train.lr_sigma, n_cells),
                               cfg.train.lr_min, cfg.train.lr_max) if cfg.train.lr_sigma > 0 else state.lr
            state.generation = gen + 1
            # record
            m = measure(problem, engine, train_loss)
            front_columns = {}
            if kept is not None:
                kept = m.kept.kept
                state.front.update(gen, m.validation, kept, engine.centres)
                front_columns = {"front_points": len(state.front)}
            # a first run's kernel compile is not the algorithm's time
            seconds = time.perf_counter() - t0 - (compile_watch.seconds() - compiled)
            state.wall_seconds += seconds
            row = record(gen, m, state, seconds, p.probability, int(pruned.sum()),
                         {"selection_loss_best": selection_loss, **front_columns, **event_columns(state, toolbox)})
            for obs in observers:
                obs.on_generation(row, state)
        state.set_centres(*engine.centres())  # the final centres, before the engine lets them go
    finally:
        engine.close()
    return state


def synchronous_generation(state: RunState, neighbours: np.ndarray, engine: Engine, toolbox: base.Toolbox,
                           cfg: Config, gen: int, p: schedules.Pruning,
                           kept: np.ndarray | None = None) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """Every cell reads the previous generation's centres, so the engine runs them all at once.
    Replaces the engine's centres; returns the best centre's selection loss, each cell's training
    loss, whether it was pruned and which operator events it reported. ``kept``: each centre
    pair's kept fraction, the second objective (None: loss only)."""
    # gather + evaluate: every encoder x decoder pair of each sub-population, one mini-batch
    losses = engine.evaluate(gen).cpu().numpy()
    # fitness: the solution concept over rows (encoders) and columns (decoders)
    enc_fitness, dec_fitness = solution_concept(losses, cfg.selection.solution_concept)
    # select: tournament on encoder fitness (and on decoder fitness, with independent pairing)
    enc_parents, dec_parents = select_parents(neighbours, enc_fitness, dec_fitness, toolbox, cfg.selection.pairing,
                                              kept)
    # train + mutate + replace: copies of the selected pairs, one pass over the data, maybe
    # pruned, become the new centres
    train_loss, pruned, events = engine.vary(enc_parents, dec_parents, state.lr, p, gen, toolbox.mutate,
                                             cfg.prune.operator)
    return float(enc_fitness[:, 0].min()), train_loss, pruned, events


def asynchronous_generation(state: RunState, neighbours: np.ndarray, engine: LocalEngine, toolbox: base.Toolbox,
                            cfg: Config, gen: int, p: schedules.Pruning,
                            kept: np.ndarray | None = None) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """The reference's order: one cell at a time, in an order shuffled each generation, each
    reading its neighbours' latest centres, so a good pair can cross the grid in one generation.
    Same phases and the same per-cell random streams as :func:`synchronous_generation`; the
    engine replaces each cell's centre as soon as it is trained. ``kept`` (the second objective)
    is each pair's size at the start of the generation."""
    n = len(neighbours)
    order = derive_rng(cfg.run.seed, gen, 0, UPDATE_ORDER).permutation(n)
    train_loss, pruned, selection_loss = np.zeros(n), np.zeros(n, dtype=bool), np.inf
    events = np.zeros((n, len(operators.needs_of(toolbox.mutate).events)), dtype=bool)
    for k in order:
        cell = np.array([k])
        losses = engine.evaluate(gen, cells=cell).cpu().numpy()
        enc_fitness, dec_fitness = solution_concept(losses, cfg.selection.solution_concept)
        enc_parent, dec_parent = select_parents(neighbours[cell], enc_fitness, dec_fitness, toolbox,
                                                cfg.selection.pairing, kept)
        cell_loss, cell_pruned, cell_events = engine.vary(enc_parent, dec_parent, state.lr[cell], p, gen,
                                                          toolbox.mutate, cfg.prune.operator, cells=cell)
        train_loss[k], pruned[k], events[k] = cell_loss[0], cell_pruned[0], cell_events[0]
        selection_loss = min(selection_loss, float(enc_fitness[0, 0]))
    return selection_loss, train_loss, pruned, events


def note_events(state: RunState, toolbox: base.Toolbox, events: np.ndarray, generation: int) -> None:
    """Remember the first generation each declared operator event happened in any cell."""
    for name, happened in zip(operators.needs_of(toolbox.mutate).events, np.asarray(events).T):
        if happened.any() and name not in state.events:
            state.events[name] = generation


def event_columns(state: RunState, toolbox: base.Toolbox) -> dict[str, int]:
    """Logbook columns ``NAME_generation``: the first generation of each declared event, -1 before it."""
    return {f"{name}_generation": state.events.get(name, -1) for name in operators.needs_of(toolbox.mutate).events}


def final_losses(problem: Problem, state: RunState) -> dict[str, np.ndarray]:
    """Each centre pair's loss on train, validation and test."""
    loss = problem.config.model.loss
    out = {}
    for name, split in (("train", problem.train), ("validation", problem.validation), ("test", problem.test)):
        out[name] = centre_losses(state.encoders, state.decoders, split, loss)
    return out

