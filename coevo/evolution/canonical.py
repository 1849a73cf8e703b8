"""Canonical mode (the paper's baseline): one autoencoder trained by gradient descent, pruned after each
epoch with probability p_sched(t), with the same operators and schedules as coevolution.

It reuses the coevolution's per-cell functions on a grid of one cell, so training, pruning
and checkpoints are the same code.
"""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np

from coevo.evolution.loop import event_columns, make_toolbox, measure, note_events, prune_step, record
from coevo.evolution.problem import Problem
from coevo.evolution.state import RunState
from coevo.evolution.variation import CellData, vary_cells
from coevo.observers import Observer
from coevo.training import compile_watch


def step_lr(base_lr: float, epoch: int, epochs: int) -> float:
    """StepLR as in the paper's baseline: x0.1 every epochs/4 epochs (at least every epoch)."""
    step = max(1, epochs // 4)
    return base_lr * 0.1 ** (epoch // step)


def train_canonical(problem: Problem, observers: Sequence[Observer] = (), state: RunState | None = None) -> RunState:
    """Train (or continue training) the single autoencoder until ``run.generations`` epochs."""
    cfg = problem.config
    if state is None:
        enc, dec = problem.fresh_stacks(1)
        state = RunState(0, enc, dec, np.array([cfg.train.learning_rate]))
    toolbox = make_toolbox(cfg)
    shared = CellData(problem.train, cfg)
    cells = parents = np.zeros(1, dtype=np.int64)
    for obs in observers:
        obs.on_start(cfg, state)
    for epoch in range(state.generation, cfg.run.generations):
        t0, compiled = time.perf_counter(), compile_watch.seconds()
        if cfg.train.lr_decay:
            state.lr = np.array([step_lr(cfg.train.learning_rate, epoch, cfg.run.generations)])
        # train one epoch, then prune with probability p_sched(t) (sub-population size 1)
        p = prune_step(cfg, epoch, 1)
        variation = vary_cells(state.encoders, state.decoders, parents, parents, cells, state.lr, p, epoch,
                               shared, toolbox.mutate, cfg.prune.operator)
        state.encoders, state.decoders = variation.encoders, variation.decoders
        note_events(state, toolbox, variation.events, epoch)
        state.generation = epoch + 1
        m = measure(problem, (state.encoders, state.decoders), variation.train_loss)
        seconds = time.perf_counter() - t0 - (compile_watch.seconds() - compiled)  # without a first compile
        state.wall_seconds += seconds
        row = record(epoch, m, state, seconds, p.probability, int(variation.pruned.sum()), event_columns(state, toolbox))
        for obs in observers:
            obs.on_generation(row, state)
    return state
