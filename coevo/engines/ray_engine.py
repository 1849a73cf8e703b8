"""The Ray engine: the grid split into contiguous shards, one Ray actor per shard, each
holding its shard's centres from one generation to the next.

The driver keeps the DEAP-level loop (selection on the loss matrices, learning rates, the
logbook); the centres' weights stay on the workers. A generation:

1. evaluate: a worker needs the parameters of its halo, the neighbours of its cells that live in
   other shards. The driver asks each owner for exactly those rows (:meth:`ShardWorker.export`)
   and hands the resulting object references to the reader, so the arrays go from worker to
   worker through Ray's object store, never through the driver. Workers return loss matrices.
2. select: in the driver, on the loss matrices.
3. vary: a worker imports, the same way, the full genomes (parameters, masks, Adam moments,
   steps) of the encoders and decoders its cells selected from other shards, trains its cells'
   pairs and holds them as its new centres. It returns the training losses and prune flags, and,
   as a second return value, a copy of its new centres that the driver owns but does not fetch:
   it stays in the object store on the worker's node.
4. measure: each worker computes its centres' validation losses (the logbook's pass) and kept
   fractions and returns only those per-cell values.

The driver fetches the centres only when something reads them (a checkpoint, the summary, an
observer that looks at weights): :meth:`RayEngine.centres` reads the copies of step 3.

Cell work is a pure function of the centres and of random streams derived from
(seed, generation, cell), so sharding does not change a result. Every call to a worker names
the version of the centres it works on and carries a reference to the copy of the shard at that
version: a worker that does not hold that version (Ray restarted it after it died, with nothing
in memory) first restores it from the copy, and the call re-runs with the identical result. The
copies survive a worker because the driver owns them and the object store (not the worker
process) holds them; losing a whole node loses them too, as it loses that node's workers.
:class:`Traffic` counts the bytes each route carries.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
import statistics
from typing import Any, Callable

import numpy as np
import ray
import torch
from ray import cloudpickle
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from coevo.config import Config
from coevo.errors import UserError
from coevo.population import FIELDS, Stack
from coevo.evolution.variation import CellData, centre_measures, evaluate_cells, vary_cells
from coevo.genome import Layout
from coevo.measures import KeptFractions
from coevo.rundir import reaper
from coevo.schedules import Pruning

BUILTIN_PACKAGES = ("coevo", "operators")
TIMEOUT_S = 3600.0  # default bound on one generation's wait for the workers (tests lower it)
SIDES = ("encoders", "decoders")


def stack_arrays(stack: Stack, rows: np.ndarray, fields: tuple[str, ...] = FIELDS) -> dict[str, np.ndarray]:
    """Rows of a stack as numpy arrays (what travels between processes: arrays, not modules)."""
    index = torch.as_tensor(rows, device=stack.params.device)
    return {f: getattr(stack, f)[index].cpu().numpy() for f in fields}


def whole_arrays(stack: Stack) -> dict[str, np.ndarray]:
    """Every row of a stack as numpy arrays, without a copy (Ray copies them as it stores them)."""
    return {f: getattr(stack, f).detach().cpu().numpy() for f in FIELDS}


def arrays_stack(layout: Layout, arrays: dict[str, np.ndarray], device: str) -> Stack:
    """A stack rebuilt from :func:`stack_arrays`; fields that were not shipped are empty."""
    def tensor(name: str) -> torch.Tensor:
        if name not in arrays:
            return torch.empty(0, device=device)
        return torch.tensor(arrays[name], device=device)  # a copy: arrays from Ray are read-only
    return Stack(layout, *(tensor(f) for f in FIELDS))


def pool(own: Stack, own_cells: np.ndarray, imports: list[dict], fields: tuple[str, ...],
         n_cells: int) -> tuple[Stack, np.ndarray]:
    """A shard's own rows followed by rows imported from other shards (each import is
    :func:`stack_arrays` plus its ``cells``), as one stack of ``fields``, and each cell's row in
    it (-1 for cells it lacks)."""
    cells = np.concatenate([own_cells] + [np.asarray(part["cells"], dtype=np.int64) for part in imports])
    position = np.full(n_cells, -1, dtype=np.int64)
    position[cells] = np.arange(len(cells))
    if not any(len(part["cells"]) for part in imports):
        return own, position
    device = own.params.device
    joined = {f: torch.cat([getattr(own, f)] + [torch.tensor(part[f], device=device) for part in imports])
              for f in fields}
    return Stack(own.layout, *(joined.get(f, torch.empty(0, device=device)) for f in FIELDS)), position


def _nbytes(value: Any) -> int:
    """Bytes of the numpy arrays in a (nested) value."""
    if isinstance(value, np.ndarray):
        return value.nbytes
    if isinstance(value, dict):
        return sum(_nbytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_nbytes(v) for v in value)
    return 0


class Traffic:
    """Bytes of the arrays the engine moves, per generation (a generation starts with
    :meth:`RayEngine.evaluate`) and by route. Counted: numpy arrays' bytes; not counted: object
    references, scalars, the config and pickle framing (small).

    - ``to_workers``: arrays the driver sends (parents, learning rates; data and initial centres
      go once, before the first generation, under ``setup``);
    - ``between_workers``: rows one worker exports to another (halos, selected parents);
    - ``from_workers``: arrays the driver receives (loss matrices, training losses, prune flags,
      validation losses, kept fractions);
    - ``kept``: the copies of each shard's new centres written to the object store on the
      worker's node (not moved unless a worker restarts or the driver fetches them);
    - ``fetched``: centres the driver fetched on demand (checkpoints, summary, observers).
    """

    ROUTES = ("to_workers", "between_workers", "from_workers", "kept", "fetched")

    def __init__(self) -> None:
        self.setup = dict.fromkeys(self.ROUTES, 0)
        self.generations: list[dict[str, int]] = []

    def begin(self) -> None:
        self.generations.append(dict.fromkeys(self.ROUTES, 0))

    def add(self, route: str, nbytes: int) -> None:
        (self.generations[-1] if self.generations else self.setup)[route] += int(nbytes)

    def per_generation(self, skip: int = 0) -> dict[str, float]:
        """Median bytes per generation of each route, over the generations after the first ``skip``."""
        gens = self.generations[skip:] or self.generations
        return {r: float(statistics.median(g[r] for g in gens)) if gens else 0.0 for r in self.ROUTES}


class ShardWorker:
    """One shard of the grid, in a Ray actor: holds the shard's centres and runs the batched cell
    work for the shard's cells. Cells are named by their ids in the whole grid."""

    def __init__(self, config: Config, cells: np.ndarray, neighbours: np.ndarray, enc_layout: Layout,
                 dec_layout: Layout, threads: int) -> None:
        torch.set_num_threads(threads)
        torch.set_flush_denormal(True)  # as coevo.evolution.problem.build does in the driver: the same floats
        self.config = config
        self.device = config.run.device
        self.cells = np.asarray(cells)
        self.neighbours = np.asarray(neighbours)
        self.layouts = {"encoders": enc_layout, "decoders": dec_layout}
        self.row = np.full(len(self.neighbours), -1, dtype=np.int64)  # a cell's row in the held stacks
        self.row[self.cells] = np.arange(len(self.cells))
        self.shared: CellData | None = None
        self.data: dict[str, torch.Tensor] = {}
        self.held: dict[str, Stack] = {}
        self.version: int | None = None  # of the held centres; None: nothing held (new or restarted)
        self.restores = 0  # how often the held centres were read back from a copy

    def pid(self) -> int:
        return os.getpid()

    def stats(self) -> dict:
        """This process's id, the version it holds and how often it restored its shard."""
        return {"pid": os.getpid(), "version": self.version, "restores": self.restores}

    # -- what the worker reads: nested references (``[ObjectRef]``), which Ray passes unresolved
    def _shared(self, train: list) -> CellData:
        """The training rows, fetched from the object store on first use (again after a restart)."""
        if self.shared is None:
            self.shared = CellData(torch.tensor(ray.get(train[0]), device=self.device), self.config)
        return self.shared

    def _data(self, data: list) -> torch.Tensor:
        key = data[0].hex()
        if key not in self.data:
            self.data[key] = torch.tensor(ray.get(data[0]), device=self.device)
        return self.data[key]

    def _hold(self, version: int, copy: list) -> None:
        """Make sure the held centres are ``version``: restore them from its copy if not."""
        if self.version != version:
            arrays = ray.get(copy[0])
            self.held = {side: arrays_stack(self.layouts[side], arrays[side], self.device) for side in SIDES}
            self.version = version
            self.restores += 1

    # -- calls from the driver ---------------------------------------------------------------
    def export(self, version: int, copy: list, enc_cells: np.ndarray, dec_cells: np.ndarray,
               fields: tuple[str, ...]) -> dict:
        """Rows of held centres for another shard: ``fields`` of these cells' encoders and decoders."""
        self._hold(version, copy)
        out = {}
        for side, cells in zip(SIDES, (enc_cells, dec_cells)):
            out[side] = stack_arrays(self.held[side], self.row[np.asarray(cells, dtype=np.int64)], fields)
            out[side]["cells"] = np.asarray(cells, dtype=np.int64)
        return out

    def evaluate(self, version: int, copy: list, train: list, generation: int, *imports: dict) -> np.ndarray:
        """Loss matrices of the shard's cells; ``imports`` hold the halo's parameters."""
        self._hold(version, copy)
        n = len(self.neighbours)
        enc, position = pool(self.held["encoders"], self.cells, [i["encoders"] for i in imports], ("params",), n)
        dec, dec_position = pool(self.held["decoders"], self.cells, [i["decoders"] for i in imports], ("params",), n)
        assert np.array_equal(position, dec_position)
        table = np.full_like(self.neighbours, -1)
        table[self.cells] = position[self.neighbours[self.cells]]
        if (table[self.cells] < 0).any():
            raise RuntimeError("a shard was not sent its whole halo")
        return evaluate_cells(enc, dec, table, self.cells, generation, self._shared(train)).cpu().numpy()

    def vary(self, version: int, copy: list, train: list, generation: int, enc_parents: np.ndarray,
             dec_parents: np.ndarray, lr: np.ndarray, prune_probability: float | Pruning,
             mutate: Callable[..., Any], operator_name: str, *imports: dict) -> tuple[dict, dict]:
        """Train the shard's cells' selected pairs (``enc_parents``/``dec_parents`` name cells;
        ``imports`` hold the genomes of those in other shards) and hold them as version + 1.
        Returns the per-cell results and the copy of the new centres."""
        self._hold(version, copy)
        n = len(self.neighbours)
        enc, enc_position = pool(self.held["encoders"], self.cells, [i["encoders"] for i in imports], FIELDS, n)
        dec, dec_position = pool(self.held["decoders"], self.cells, [i["decoders"] for i in imports], FIELDS, n)
        enc_rows, dec_rows = enc_position[np.asarray(enc_parents)], dec_position[np.asarray(dec_parents)]
        if (enc_rows < 0).any() or (dec_rows < 0).any():
            raise RuntimeError("a shard was not sent every parent its cells selected")
        v = vary_cells(enc, dec, enc_rows, dec_rows, self.cells, np.array(lr), prune_probability, generation,
                       self._shared(train), mutate, operator_name)
        self.held = {"encoders": v.encoders, "decoders": v.decoders}
        self.version = version + 1
        copy_out = {side: whole_arrays(self.held[side]) for side in SIDES}
        return {"train_loss": np.asarray(v.train_loss), "pruned": np.asarray(v.pruned), "events": v.events}, copy_out

    def measure(self, version: int, copy: list, data: list, loss: str) -> dict:
        """The held centres' losses on ``data`` and their kept fractions, per cell."""
        self._hold(version, copy)
        validation, kept = centre_measures(self.held["encoders"], self.held["decoders"], self._data(data), loss,
                                           self.config.prune.regrow)
        return {"validation": validation, **{f.name: getattr(kept, f.name) for f in dataclasses.fields(kept)}}


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
    """Shards the grid over ``workers`` Ray actors (one torch thread each unless ``run.threads``),
    each holding its shard's centres.

    A worker that dies is restarted, as often as needed; it restores its shard from the copy
    the object store keeps of it and each call it was running is re-run, up to ``retries`` times
    per call. ``address`` names an existing cluster ('auto', 'HOST:6379' or 'ray://HOST:10001');
    empty starts a local Ray with this machine's CPUs, which :meth:`close` shuts down again. A
    Ray that is already running in this process is used as it is and left running.
    ``timeout_s`` bounds one generation's wait for the workers. ``traffic`` counts the bytes.
    """

    def __init__(self, address: str = "", workers: int = 2, *, retries: int = 3,
                 timeout_s: float | None = None) -> None:
        self.address = address
        self.workers = workers
        self.retries = retries
        self.timeout_s = TIMEOUT_S if timeout_s is None else timeout_s
        self.actors: list[Any] = []
        self.shards: list[np.ndarray] = []
        self.copies: list[Any] = []  # per shard: reference to the copy of its held centres
        self.version = 0  # of the centres the workers hold
        self.traffic = Traffic()
        self._owns_ray = False
        self._watchdog: reaper.Watchdog | None = None
        self._mutate: tuple[Callable[..., Any], Any] | None = None
        self._data: tuple[torch.Tensor, list] | None = None
        self._fetched: tuple[int, tuple[Stack, Stack]] | None = None

    # -- lifecycle ---------------------------------------------------------------------
    def start(self, shared: CellData, neighbours: np.ndarray) -> None:
        config = shared.config
        threads = config.run.threads or 1
        n_cells = neighbours.shape[0]
        self.shards = [s for s in np.array_split(np.arange(n_cells), self.workers) if len(s)]
        self._connect(len(self.shards) * threads)
        self.owner = np.empty(n_cells, dtype=np.int64)  # each cell's shard
        for i, shard in enumerate(self.shards):
            self.owner[shard] = i
        # what each shard evaluates never changes: its halo, the cells of other shards that its
        # cells' sub-populations include, grouped by the shard that holds them
        self.halos = []
        for i, shard in enumerate(self.shards):
            halo = np.unique(neighbours[shard])
            halo = halo[self.owner[halo] != i]
            self.halos.append([(j, halo[self.owner[halo] == j]) for j in np.unique(self.owner[halo])])
        self.device = shared.train.device
        cpus = float(ray.cluster_resources().get("CPU", 0))
        if cpus <= 0:
            raise UserError(f"the Ray cluster at {self.address or 'this machine'} has no CPUs to run workers on")
        # more workers than CPUs share them (fractional CPUs) rather than wait for ever to be placed
        per_worker = min(threads, cpus / len(self.shards))
        train = shared.train.cpu().numpy()
        self._train = [ray.put(train)]  # once: every actor (and its restarts) reads it
        self.traffic.add("to_workers", train.nbytes * len(self.shards))
        self._actor = ray.remote(ShardWorker).options(
            num_cpus=per_worker, num_gpus=(1 / len(self.shards)) if config.run.device == "cuda" else 0,
            max_restarts=-1, max_task_retries=self.retries, scheduling_strategy="SPREAD",
        )
        self._config, self._neighbours, self._threads = config, np.asarray(neighbours), threads

    def load(self, enc: Stack, dec: Stack) -> None:
        """Each shard's centres go to the object store (owned by the driver); the workers are
        created holding nothing and restore from there on their first call."""
        if not self.actors:
            self.actors = [self._actor.remote(self._config, shard, self._neighbours, enc.layout, dec.layout,
                                              self._threads) for shard in self.shards]
        self.layouts = {"encoders": enc.layout, "decoders": dec.layout}
        # bytes of one row of each field, for counting what an export carries
        self.row_bytes = {side: {f: getattr(stack, f)[0].numel() * getattr(stack, f).element_size()
                                 for f in FIELDS}
                          for side, stack in zip(SIDES, (enc, dec))}
        self.copies = []
        for shard in self.shards:
            arrays = {side: stack_arrays(stack, shard) for side, stack in zip(SIDES, (enc, dec))}
            self.traffic.add("to_workers", _nbytes(arrays))
            self.copies.append(ray.put(arrays))
        self.version += 1
        self._fetched = (self.version, (enc, dec))

    def _connect(self, cpus_wanted: int) -> None:
        if ray.is_initialized():
            return
        options = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
        if self.address:
            ray.init(address=self.address, **options)
        else:  # a local Ray of our own, which dies with this process even if it is SIGKILLed
            self._watchdog = reaper.init_local_ray(ray, num_cpus=max(os.cpu_count() or 1, cpus_wanted), **options)
            self._owns_ray = True

    def close(self) -> None:
        """Stop the actors; shut Ray down only if this engine started it."""
        for actor in self.actors:
            try:
                ray.kill(actor)
            except Exception:  # already gone
                pass
        self.actors = []
        self.copies = []
        self._mutate = None
        self._data = None
        self._fetched = None
        if self._owns_ray and ray.is_initialized():
            ray.shutdown()
        if self._watchdog is not None:
            self._watchdog.close()
            self._watchdog = None
        self._owns_ray = False

    # -- one generation ----------------------------------------------------------------
    def evaluate(self, generation: int) -> torch.Tensor:
        self.traffic.begin()
        halos = [[self._export(j, cells, cells, ("params",)) for j, cells in halo] for halo in self.halos]
        calls = [actor.evaluate.remote(self.version, [copy], self._train, generation, *halo)
                 for actor, copy, halo in zip(self.actors, self.copies, halos)]
        parts = self._gather(calls)
        self.traffic.add("from_workers", _nbytes(parts))
        return torch.as_tensor(np.concatenate(parts), device=self.device)

    def vary(self, enc_parents: np.ndarray, dec_parents: np.ndarray, lr: np.ndarray,
             prune_probability: float | Pruning, generation: int, mutate: Callable[..., Any],
             operator_name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        mutate_ref = self._put_mutate(mutate, operator_name)
        enc_parents, dec_parents, lr = np.asarray(enc_parents), np.asarray(dec_parents), np.asarray(lr)
        # first every export (a worker's calls run in the order sent, and vary moves its centres
        # on), then every vary: a shard gets the genomes its cells selected from other shards
        imports: list[list] = [[] for _ in self.shards]
        for i, shard in enumerate(self.shards):
            enc_p, dec_p = enc_parents[shard], dec_parents[shard]
            for j in range(len(self.shards)):
                enc_cells, dec_cells = np.unique(enc_p[self.owner[enc_p] == j]), np.unique(dec_p[self.owner[dec_p] == j])
                if j != i and (len(enc_cells) or len(dec_cells)):
                    imports[i].append(self._export(j, enc_cells, dec_cells, FIELDS))
        calls, copies = [], []
        for i, (actor, shard) in enumerate(zip(self.actors, self.shards)):
            enc_p, dec_p = enc_parents[shard], dec_parents[shard]
            self.traffic.add("to_workers", enc_p.nbytes + dec_p.nbytes + lr[shard].nbytes)
            result, copy = actor.vary.options(num_returns=2).remote(
                self.version, [self.copies[i]], self._train, generation, enc_p, dec_p, lr[shard], prune_probability,
                mutate_ref, operator_name, *imports[i])
            calls.append(result)
            copies.append(copy)
        parts = self._gather(calls)
        self.traffic.add("from_workers", _nbytes(parts))
        self.traffic.add("kept", len(enc_parents) * sum(sum(b.values()) for b in self.row_bytes.values()))
        self.copies, self.version = copies, self.version + 1
        return tuple(np.concatenate([p[key] for p in parts]) for key in ("train_loss", "pruned", "events"))

    def measure(self, data: torch.Tensor, loss: str) -> tuple[np.ndarray, KeptFractions]:
        if self._data is None or self._data[0] is not data:  # the validation split goes once
            rows = data.cpu().numpy()
            self._data = (data, [ray.put(rows)])
            self.traffic.add("to_workers", rows.nbytes * len(self.shards))
        calls = [actor.measure.remote(self.version, [copy], self._data[1], loss)
                 for actor, copy in zip(self.actors, self.copies)]
        parts = self._gather(calls)
        self.traffic.add("from_workers", _nbytes(parts))
        joined = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
        return joined.pop("validation"), KeptFractions(**joined)

    def centres(self) -> tuple[Stack, Stack]:
        """Fetched from the object store's copies (not from the workers), once per version."""
        if self._fetched is None or self._fetched[0] != self.version:
            parts = self._gather(list(self.copies))
            self.traffic.add("fetched", _nbytes(parts))
            stacks = tuple(arrays_stack(self.layouts[side], {f: np.concatenate([p[side][f] for p in parts])
                                                             for f in FIELDS}, str(self.device))
                           for side in SIDES)
            self._fetched = (self.version, stacks)
        return self._fetched[1]

    def _export(self, shard: int, enc_cells: np.ndarray, dec_cells: np.ndarray, fields: tuple[str, ...]) -> Any:
        """A reference to rows of ``shard``'s held centres, to pass on to another worker."""
        self.traffic.add("between_workers", len(enc_cells) * sum(self.row_bytes["encoders"][f] for f in fields)
                         + len(dec_cells) * sum(self.row_bytes["decoders"][f] for f in fields))
        return self.actors[shard].export.remote(self.version, [self.copies[shard]], enc_cells, dec_cells, fields)

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
