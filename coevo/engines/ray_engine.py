"""The Ray engine: the grid split into contiguous shards, one Ray actor per shard.

Each actor holds what never changes (training rows, config) once, and runs the same batched
per-cell functions as the local engine (:func:`coevo.cells.evaluate_cells`,
:func:`coevo.cells.vary_cells`) on its shard. Every generation the driver ships each shard only
the centres it reads, as numpy arrays: for evaluation the parameters of its cells'
sub-populations (the shard plus its halo of neighbours), for variation the full genomes
(parameters, masks, Adam moments, steps) of the encoders and of the decoders its cells selected
(from different cells when ``selection.pairing = "independent"``). Results come back
as arrays and are joined in cell order.

Cell work is a pure function of these arrays and of random streams derived from
(seed, generation, cell), so sharding does not change a result, and a shard retried after its
worker died gives the identical result: actors are restarted by Ray and the call re-run.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
from typing import Any, Callable

import numpy as np
import ray
import torch
from ray import cloudpickle
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from coevo.cells import CellData, Variation, evaluate_cells, vary_cells
from coevo.config import Config
from coevo.errors import UserError
from coevo.genome import Layout
from coevo.population import FIELDS, Stack
from coevo.schedules import Pruning

BUILTIN_PACKAGES = ("coevo", "operators")
TIMEOUT_S = 3600.0  # default bound on one generation's wait for the workers (tests lower it)


def stack_arrays(stack: Stack, rows: np.ndarray, fields: tuple[str, ...] = FIELDS) -> dict[str, np.ndarray]:
    """Rows of a stack as numpy arrays (what travels between processes: arrays, not modules)."""
    index = torch.as_tensor(rows, device=stack.params.device)
    return {f: getattr(stack, f)[index].cpu().numpy() for f in fields}


def arrays_stack(layout: Layout, arrays: dict[str, np.ndarray], device: str) -> Stack:
    """A stack rebuilt from :func:`stack_arrays`; fields that were not shipped are empty."""
    def tensor(name: str) -> torch.Tensor:
        if name not in arrays:
            return torch.empty(0, device=device)
        return torch.tensor(arrays[name], device=device)  # a copy: arrays from Ray are read-only
    return Stack(layout, *(tensor(f) for f in FIELDS))


def _local_view(needed: np.ndarray, table: np.ndarray) -> np.ndarray:
    """``table`` (cell ids) rewritten as row positions in ``needed``; -1 where not shipped."""
    position = np.full(int(max(needed.max(), table.max())) + 1, -1, dtype=np.int64)
    position[needed] = np.arange(len(needed))
    return position[table]


class ShardWorker:
    """One shard of the grid, in a Ray actor: batched cell work for the shard's cells."""

    def __init__(self, config: Config, cells: np.ndarray, threads: int) -> None:
        torch.set_num_threads(threads)
        torch.set_flush_denormal(True)  # as coevo.problem.build does in the driver: the same floats
        self.config = config
        self.device = config.run.device
        self.cells = np.asarray(cells)
        self.shared: CellData | None = None

    def _shared(self, train: list) -> CellData:
        """The training rows, fetched from the object store on first use (again after a restart).
        ``train`` is ``[ObjectRef]``: a nested reference, which Ray passes without resolving."""
        if self.shared is None:
            self.shared = CellData(torch.tensor(ray.get(train[0]), device=self.device), self.config)
        return self.shared

    def pid(self) -> int:
        return os.getpid()

    def evaluate(self, train: list, enc_layout: Layout, dec_layout: Layout, enc: dict, dec: dict,
                 neighbours: np.ndarray, generation: int) -> np.ndarray:
        """Loss matrices of the shard's cells; ``neighbours`` index the shipped rows."""
        losses = evaluate_cells(arrays_stack(enc_layout, enc, self.device), arrays_stack(dec_layout, dec, self.device),
                                np.array(neighbours), self.cells, generation, self._shared(train))
        return losses.cpu().numpy()

    def vary(self, train: list, enc_layout: Layout, dec_layout: Layout, enc: dict, dec: dict,
             enc_parents: np.ndarray, dec_parents: np.ndarray, lr: np.ndarray, prune_probability: float | Pruning,
             generation: int, mutate: Callable[..., Any], operator_name: str) -> dict:
        """New centres of the shard's cells; ``enc_parents`` index the shipped encoders and
        ``dec_parents`` the shipped decoders."""
        v = vary_cells(arrays_stack(enc_layout, enc, self.device), arrays_stack(dec_layout, dec, self.device),
                       np.array(enc_parents), np.array(dec_parents), self.cells, np.array(lr), prune_probability,
                       generation, self._shared(train), mutate, operator_name)
        every = np.arange(len(self.cells))
        return {f.name: stack_arrays(value, every) if isinstance(value, Stack) else np.asarray(value)
                for f in dataclasses.fields(v) if f.name != "cells" for value in [getattr(v, f.name)]}


def ship_by_value(mutate: Callable[..., Any], operator_name: str) -> None:
    """A user operator named by import path ('mypkg.ops:prune') may not be importable on the
    workers (another machine, another working directory): pickle its module's code by value."""
    if ":" not in operator_name:
        return
    module_name = operator_name.partition(":")[0]
    if module_name.split(".")[0] in BUILTIN_PACKAGES:
        return
    try:
        cloudpickle.register_pickle_by_value(importlib.import_module(module_name))
    except (ImportError, ValueError):  # not importable here: make_toolbox has already said so
        pass


class RayEngine:
    """Shards the grid over ``workers`` Ray actors (one torch thread each unless ``run.threads``).

    A worker that dies is restarted, as often as needed, and each call it was running is re-run,
    up to ``retries`` times per call. ``address`` names an existing cluster ('auto', 'HOST:6379'
    or 'ray://HOST:10001'); empty starts a local Ray with this machine's CPUs, which
    :meth:`close` shuts down again. A Ray that is already running in this process is used as it
    is and left running. ``timeout_s`` bounds one generation's wait for the workers.
    """

    def __init__(self, address: str = "", workers: int = 2, *, retries: int = 3,
                 timeout_s: float | None = None) -> None:
        self.address = address
        self.workers = workers
        self.retries = retries
        self.timeout_s = TIMEOUT_S if timeout_s is None else timeout_s
        self.actors: list[Any] = []
        self.shards: list[np.ndarray] = []
        self._owns_ray = False
        self._mutate: tuple[Callable[..., Any], Any] | None = None

    # -- lifecycle ---------------------------------------------------------------------
    def start(self, shared: CellData, neighbours: np.ndarray) -> None:
        config = shared.config
        threads = config.run.threads or 1
        self.shards = [s for s in np.array_split(np.arange(neighbours.shape[0]), self.workers) if len(s)]
        self._connect(len(self.shards) * threads)
        # what each shard evaluates never changes: its sub-populations' cells (the shard and its
        # halo) and the neighbour table rewritten as rows of that selection
        self.halos = [np.unique(neighbours[shard]) for shard in self.shards]
        self.tables = []
        for shard, halo in zip(self.shards, self.halos):
            table = np.full_like(neighbours, -1)
            table[shard] = _local_view(halo, neighbours[shard])
            self.tables.append(table)
        self.device = shared.train.device
        cpus = float(ray.cluster_resources().get("CPU", 0))
        if cpus <= 0:
            raise UserError(f"the Ray cluster at {self.address or 'this machine'} has no CPUs to run workers on")
        # more workers than CPUs share them (fractional CPUs) rather than wait for ever to be placed
        per_worker = min(threads, cpus / len(self.shards))
        self._train = [ray.put(shared.train.cpu().numpy())]  # once: every actor (and its restarts) reads it
        actor = ray.remote(ShardWorker).options(
            num_cpus=per_worker, num_gpus=(1 / len(self.shards)) if config.run.device == "cuda" else 0,
            max_restarts=-1, max_task_retries=self.retries, scheduling_strategy="SPREAD",
        )
        self.actors = [actor.remote(config, shard, threads) for shard in self.shards]

    def _connect(self, cpus_wanted: int) -> None:
        if ray.is_initialized():
            return
        options = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
        if self.address:
            ray.init(address=self.address, **options)
        else:
            ray.init(num_cpus=max(os.cpu_count() or 1, cpus_wanted), **options)
            self._owns_ray = True

    def close(self) -> None:
        """Stop the actors; shut Ray down only if this engine started it."""
        for actor in self.actors:
            try:
                ray.kill(actor)
            except Exception:  # already gone
                pass
        self.actors = []
        self._mutate = None
        if self._owns_ray and ray.is_initialized():
            ray.shutdown()
        self._owns_ray = False

    # -- one generation ----------------------------------------------------------------
    def evaluate(self, enc: Stack, dec: Stack, generation: int) -> torch.Tensor:
        calls = []
        for actor, halo, table in zip(self.actors, self.halos, self.tables):
            calls.append(actor.evaluate.remote(self._train, enc.layout, dec.layout,
                                               stack_arrays(enc, halo, ("params",)),
                                               stack_arrays(dec, halo, ("params",)), table, generation))
        return torch.as_tensor(np.concatenate(self._gather(calls)), device=self.device)

    def vary(self, enc: Stack, dec: Stack, enc_parents: np.ndarray, dec_parents: np.ndarray, lr: np.ndarray,
             prune_probability: float | Pruning, generation: int, mutate: Callable[..., Any], operator_name: str) -> Variation:
        mutate_ref = self._put_mutate(mutate, operator_name)
        calls = []
        for actor, shard in zip(self.actors, self.shards):
            # each shard gets only the encoders and the decoders its cells selected
            enc_needed, dec_needed = np.unique(enc_parents[shard]), np.unique(dec_parents[shard])
            calls.append(actor.vary.remote(self._train, enc.layout, dec.layout,
                                           stack_arrays(enc, enc_needed), stack_arrays(dec, dec_needed),
                                           _local_view(enc_needed, enc_parents[shard]),
                                           _local_view(dec_needed, dec_parents[shard]), np.asarray(lr)[shard],
                                           prune_probability, generation, mutate_ref, operator_name))
        parts = self._gather(calls)
        layouts = {"encoders": enc.layout, "decoders": dec.layout}
        joined = {}
        for key in parts[0]:
            if key in layouts:  # a stack: join the shards' rows field by field
                joined[key] = arrays_stack(layouts[key], {f: np.concatenate([p[key][f] for p in parts])
                                                          for f in FIELDS}, str(self.device))
            else:  # a per-cell array
                joined[key] = np.concatenate([p[key] for p in parts])
        return Variation(cells=np.concatenate(self.shards), **joined)

    def _put_mutate(self, mutate: Callable[..., Any], operator_name: str) -> Any:
        """The mutation (the toolbox's partial holding the operator) goes to the object store once."""
        if self._mutate is None or self._mutate[0] is not mutate:
            ship_by_value(mutate, operator_name)
            self._mutate = (mutate, ray.put(mutate))
        return self._mutate[1]

    def _gather(self, calls: list) -> list:
        """Results in shard order. A user mistake raised in a worker (e.g. a broken pruning
        operator) is re-raised as itself; a worker that died more often than ``retries`` or a
        generation slower than ``timeout_s`` ends the run with a clear message."""
        try:
            return ray.get(calls, timeout=self.timeout_s)
        except RayTaskError as exc:
            if isinstance(exc.cause, UserError):
                raise exc.cause from None
            raise
        except RayActorError as exc:
            raise RuntimeError(f"a Ray worker died in each of {self.retries + 1} tries of the same shard; "
                               f"the last checkpoint is kept (coevo resume DIR continues): {exc}") from None
        except GetTimeoutError:
            raise RuntimeError(f"Ray workers did not answer within {self.timeout_s} s; the last checkpoint is "
                               f"kept (coevo resume DIR continues)") from None
