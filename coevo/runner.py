"""Runs as a user sees them: a run directory with config, logbook, checkpoints, summary, model
and plots. Everything that can be refused is checked before the directory is created, so a
refused run never creates or changes one.

This is also coevo's Python API: ``start(config, out, observers=[...])`` and ``resume``. A run
leaves the caller's process as it found it (see :func:`global_state_kept`), so it can run in a
notebook or inside a larger program.
"""

from __future__ import annotations

import contextlib
import io
import json
import random
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Iterator, Sequence

import numba
import numpy as np
import torch

from coevo import config as config_module
from coevo import errors, report, watchdog
from coevo.training import batched, functional
from coevo.config import Config
from coevo.engines import make_engine
from coevo.errors import DataError, OperatorError, UserError
from coevo.evolution import front as front_module
from coevo.evolution.canonical import train_canonical
from coevo.evolution.loop import coevolve, final_losses, make_toolbox, prune_probability
from coevo.evolution.problem import Problem, build, operator_needs
from coevo.evolution.state import RunState
from coevo.evolution.variation import centre_losses
from coevo.genome import state_dict
from coevo.measures import baseline_loss, loss_floor, stack_kept_fractions
from coevo.observers import Checkpointer, CsvLogbook, LogbookRecorder, Observer, ProgressBar, TensorBoard
from coevo.rundir import checkpoint as checkpoint_module
from coevo.rundir import directory as rundir
from coevo.rundir import lock, provenance
from coevo.rundir.checkpoint import CHECKPOINT_DIR, atomic_write_bytes

SUMMARY_TIMING_KEYS = ("seconds_per_generation", "wall_seconds", "memory")
"""Summary keys that measure the machine, not the run: they differ between two runs of one config."""
TENSORBOARD_DIR = "tensorboard"


def flush_denormal_enabled() -> bool:
    """Whether float32 denormals are flushed to zero in this thread (torch has no getter)."""
    return bool((torch.tensor([1e-30], dtype=torch.float32) * 1e-10).item() == 0.0)


@contextlib.contextmanager
def global_state_kept() -> Iterator[None]:
    """Restore on exit what a run changes process-wide: torch's and Numba's thread counts,
    flush-denormal, and the global random states of python (DEAP's tournament reseeds it),
    numpy and torch (a resume restores the checkpoint's). Inside, the run sets them freely."""
    torch_threads = torch.get_num_threads()
    numba_threads = numba.get_num_threads()  # may start Numba's OpenMP pool, which resets torch's
    torch.set_num_threads(torch_threads)
    denormal = flush_denormal_enabled()
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
        numba.set_num_threads(numba_threads)
        torch.set_num_threads(torch_threads)
        torch.set_flush_denormal(denormal)


def prepare(config: Config) -> Problem:
    """Validate the config, load data and resolve every plug-in: all user mistakes surface here,
    before any file is written (a bad config raises :class:`coevo.errors.ConfigError`)."""
    with global_state_kept():
        return _prepare(config)


def _prepare(config: Config) -> Problem:
    config_module.validate(config)
    expected = rundir.check_memory(config)  # before the data are loaded or the grid allocated
    with user_code("preparing the run"), watchdog.limit(config.run.plugin_timeout):
        problem = build(config)
        problem.expected_peak_bytes = expected
        make_toolbox(config)
        prune_probability(config, 0, 1)
        if config.run.mode == "coevolution":
            make_engine(config).close()
    return problem


class Interrupted(KeyboardInterrupt):
    """A run stopped by Ctrl-C: ``message`` says what was kept and how to go on."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@contextlib.contextmanager
def user_code(what: str) -> Iterator[None]:
    """``SystemExit`` raised inside a run (a plug-in's ``sys.exit()``) is an OperatorError, not
    the end of the process: the run did not finish."""
    try:
        yield
    except SystemExit as exc:
        where = errors.user_frame(exc.__traceback__)
        raise OperatorError(f"user code called sys.exit({exc.code!r}) while {what}"
                            + (f" ({where})" if where else "")
                            + "; a pruning operator, schedule or observer must raise an exception instead") from exc


def _interrupted(run_dir: Path) -> Interrupted:
    newest = sorted((run_dir / CHECKPOINT_DIR).glob("gen_*.pt")) if run_dir.is_dir() else []
    if newest:
        gen = int(newest[-1].stem.split("_")[1])
        return Interrupted(f"interrupted; the checkpoint of generation {gen} is kept: "
                           f"`coevo resume {run_dir}` continues from it")
    if run_dir.is_dir():
        return Interrupted(f"interrupted before the first checkpoint; no generation is kept: "
                           f"`coevo resume {run_dir}` runs it again from generation 0")
    return Interrupted("interrupted; nothing was written")


def _kept(run_dir: Path) -> str:
    """What a run stopped mid-way leaves to resume from, and how."""
    newest = sorted(p for p in (run_dir / CHECKPOINT_DIR).glob("gen_*.pt") if p.is_file())
    if newest:
        return (f"the checkpoint of generation {int(newest[-1].stem.split('_')[1])} is kept: "
                f"`coevo resume {run_dir}` continues from it")
    return f"no checkpoint was written yet: `coevo resume {run_dir}` runs it again from generation 0"


def default_run_dir(config: Config) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{stamp}-{config.run.mode}-{config.prune.operator.replace(':', '.')}-s{config.run.seed}"


def start(config: Config, out: str | Path | None = None, quiet: bool = False,
          observers: Sequence[Observer] = ()) -> Path:
    """Run a configuration from scratch into a new run directory; returns its path.

    ``observers`` (:class:`coevo.observers.Observer` instances) are called after coevo's own,
    at the start, after every generation and at the end of the run."""
    run_dir = Path(out) if out is not None else default_run_dir(config)
    with global_state_kept():
        try:
            t0 = time.perf_counter()
            config_module.validate(config)
            config = rundir.with_absolute_source(config)
            problem = _prepare(config)
            extra = _observers(config, run_dir, observers)
            if run_dir.exists() and not run_dir.is_dir():
                raise UserError(f"run directory {run_dir} already exists and is not a directory; choose another --out")
            # one writer per run directory: a live one makes this a clear refusal (coevo.rundir.lock)
            with lock.hold(run_dir):
                if not lock.is_empty(run_dir):
                    if not never_checkpointed(run_dir):
                        raise UserError(f"run directory {run_dir} already exists and is not empty; "
                                        f"choose another --out, or continue it with `coevo resume {run_dir}`")
                    lock.clear(run_dir)  # a run that stopped before its first checkpoint: start it afresh
                atomic_write_bytes(run_dir / "config.toml", config_module.dumps(config).encode())
                _run(problem, run_dir, None, None, quiet, extra, t0)
        except KeyboardInterrupt:
            raise _interrupted(run_dir) from None
    return run_dir


RESTARTABLE = ("config.toml", "logbook.csv", CHECKPOINT_DIR, TENSORBOARD_DIR, "plots", lock.LOCK_FILE)


def never_checkpointed(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds only what a run that stopped before its first checkpoint leaves
    (config.toml, a logbook, no checkpoint, no summary): then ``coevo run --out`` may reuse it."""
    for entry in run_dir.iterdir():
        if entry.name.startswith(".") and ".tmp" in entry.name:
            continue  # a temporary file of a killed write
        if entry.name not in RESTARTABLE:
            return False
    return (run_dir / "config.toml").exists() and not any((run_dir / CHECKPOINT_DIR).glob("gen_*.pt"))


def resume(run_dir: str | Path, generations: int | None = None, quiet: bool = False,
           observers: Sequence[Observer] = (), data: str | Path | None = None) -> Path:
    """Continue a run from its newest good checkpoint (optionally to a new generation count).

    Everything is checked before anything is written: config.toml against the configuration the
    checkpoint was written with, the data against its fingerprint, the checkpoint against the
    network (see :mod:`coevo.rundir.directory`). A logbook that is short or damaged is rebuilt from the
    checkpoint. ``data`` points the run at its data file in a new place (same fingerprint)."""
    run_dir = Path(run_dir)
    with global_state_kept():
        try:
            t0 = time.perf_counter()
            if not run_dir.is_dir():
                raise UserError(f"run directory {run_dir} does not exist")
            if not (run_dir / "config.toml").exists():
                raise UserError(f"{run_dir} is not a coevo run directory (no config.toml)")
            with lock.hold(run_dir):  # one writer per run directory (coevo.rundir.lock)
                _resume(run_dir, generations, quiet, observers, t0, data)
        except KeyboardInterrupt:
            raise _interrupted(run_dir) from None
    return run_dir


def _resume(run_dir: Path, generations: int | None, quiet: bool, observers: Sequence[Observer], t0: float,
            data: str | Path | None) -> None:
    config = config_module.load(run_dir / "config.toml")
    written = config
    if generations is not None:
        config = config.replace(run__generations=generations)
    if never_checkpointed(run_dir):  # stopped before its first checkpoint: nothing to continue, run it again
        if data is not None:
            config = config.replace(data__source=str(Path(data).resolve()))
        problem = _prepare(config)
        extra = _observers(config, run_dir, observers)
        print(f"coevo: {run_dir} has no checkpoint yet (it stopped before its first one); running it from "
              f"generation 0", file=sys.stderr)
        lock.clear(run_dir)
        atomic_write_bytes(run_dir / "config.toml", config_module.dumps(config).encode())
        _run(problem, run_dir, None, None, quiet, extra, t0)
        return
    path, saved, warnings = checkpoint_module.read_latest(run_dir)
    for w in warnings:
        print(f"coevo: {w}", file=sys.stderr)
    meta = saved.get("meta") or {}
    if data is not None:
        if not Path(data).is_file():
            raise DataError(f"--data {data} does not exist or is not a file")
        if meta.get("data") and not rundir.is_file_source(meta["data"]["source"]):
            raise UserError(f"--data: this run's data are generated ({meta['data']['source']}), not read from a file")
        config = config.replace(data__source=str(Path(data).resolve()))
    rundir.check_config(meta.get("config"), config, path.name, run_dir)
    rundir.check_data_file(meta.get("data"), config, path.name, moved=data is not None)
    problem = _prepare(config)
    fingerprint = rundir.data_fingerprint(config, problem.dataset)
    rundir.check_dataset(meta.get("data"), fingerprint, path.name)
    state = checkpoint_module.state_from(saved, problem.enc_layout, problem.dec_layout, config.run.device, path.name)
    if state.generation > config.run.generations:
        raise UserError(f"{run_dir} already ran {state.generation} generations; "
                        f"--generations must be at least that")
    extra = _observers(config, run_dir, observers)
    # every check passed: from here on the run directory is written
    rundir.remove_stale_temporaries(run_dir)
    if config != written:
        atomic_write_bytes(run_dir / "config.toml", config_module.dumps(config).encode())
    logbook = run_dir / "logbook.csv"
    note = rundir.restore_logbook(logbook, saved.get("logbook"), int(saved["logbook_rows"]), path.name)
    if note:
        print(f"coevo: {note}", file=sys.stderr)
    text = logbook.read_bytes().decode() if saved.get("logbook") is None else saved["logbook"]
    _run(problem, run_dir, state, text, quiet, extra, t0, fingerprint)


def _observers(config: Config, run_dir: Path, user: Sequence[Observer]) -> list[Observer]:
    """The optional observers the config asks for, then the user's; checked before any write."""
    lone = isinstance(user, Observer)  # observers=obs where [obs] was meant
    user = [] if lone else list(user)
    if lone or not all(callable(getattr(o, "on_start", None)) and callable(getattr(o, "on_generation", None))
                       for o in user):
        raise TypeError("observers must be a list of coevo.observers.Observer instances "
                        "(objects with on_start and on_generation methods)")
    extra: list[Observer] = [TensorBoard(run_dir / TENSORBOARD_DIR)] if config.run.tensorboard else []
    return extra + user


def _run(problem: Problem, run_dir: Path, state: RunState | None, logbook: str | None, quiet: bool,
         extra: list[Observer], t0: float, fingerprint: dict | None = None) -> None:
    """The loop, then the outputs; ``extra`` observers see the summary and are always closed."""
    if fingerprint is None:
        fingerprint = rundir.data_fingerprint(problem.config, problem.dataset)
    meta = {"config": config_module.to_dict(problem.config), "data": fingerprint}
    try:
        with user_code("running"), watchdog.limit(problem.config.run.plugin_timeout):
            state = _execute(problem, run_dir, state, logbook, quiet, extra, meta)
            summary = finish(problem, run_dir, state, time.perf_counter() - t0, fingerprint)
            for obs in extra:
                if callable(getattr(obs, "on_end", None)):
                    obs.on_end(summary)
    except watchdog.Stalled as exc:
        raise OperatorError(f"{exc}; {_kept(run_dir)}") from exc
    finally:
        for obs in extra:
            if callable(getattr(obs, "close", None)):
                obs.close()


def _execute(problem: Problem, run_dir: Path, state: RunState | None, logbook: str | None, quiet: bool,
             extra: Sequence[Observer] = (), meta: dict | None = None) -> RunState:
    cfg = problem.config
    csv_log = CsvLogbook(run_dir / "logbook.csv", logbook)
    observers = [csv_log, LogbookRecorder(),
                 Checkpointer(run_dir, cfg.run.checkpoint_every, cfg.run.generations, csv_log, meta)]
    bar = None if quiet else ProgressBar(cfg.run.generations, f"{cfg.run.mode} {cfg.prune.operator}")
    if bar is not None:
        observers.append(bar)
    observers += extra
    try:
        if cfg.run.mode == "coevolution":
            return coevolve(problem, observers, state, make_engine(cfg))
        return train_canonical(problem, observers, state)
    finally:
        csv_log.close()
        if bar is not None:
            bar.close()


def finish(problem: Problem, run_dir: Path, state: RunState, wall_seconds: float, data: dict | None = None) -> dict:
    """Write summary.json, best.pt (the pair with the lowest validation loss) and the plots;
    ``data`` (the data fingerprint) lets ``coevo bench`` check a finished run is of its trial's data."""
    cfg = problem.config
    losses = final_losses(problem, state)
    best = int(np.argmin(losses["validation"]))
    enc, dec = state.encoders, state.decoders
    kept = stack_kept_fractions(enc, dec, cfg.prune.regrow)
    summary = {
        "test_loss": float(losses["test"][best]),
        "validation_loss": float(losses["validation"][best]),
        "train_loss": float(losses["train"][best]),
        "test_loss_floor": loss_floor(cfg),
        "test_loss_baseline": baseline_loss(problem.train, problem.test, cfg.model.loss),
        "kept_fraction": float(kept.kept[best]),
        "kept_fraction_encoder": float(kept.kept_encoder[best]),
        "kept_fraction_decoder": float(kept.kept_decoder[best]),
        "mask_kept_fraction": float(kept.mask_kept[best]),
        "compact_fraction": float(kept.compact[best]),
        "latent_alive": int(kept.latent[best]),
        "best_cell": best,
        "test_loss_mean": float(losses["test"].mean()),
        "train_loss_mean": float(losses["train"].mean()),
        "test_loss_cells": [float(v) for v in losses["test"]],
        "kept_fraction_mean": float(kept.kept.mean()),
        "generations": state.generation,
        "seconds_per_generation": state.wall_seconds / max(state.generation, 1),
        "wall_seconds": wall_seconds,
        "seed": cfg.run.seed,
        "mode": cfg.run.mode,
        "operator": cfg.prune.operator,
        "schedule": cfg.prune.schedule,
        "loss": cfg.model.loss,
        "cells": len(enc),
        "parameters": enc.layout.size + dec.layout.size,
        "provenance": provenance.collect(),
        "data": data if data is not None else rundir.data_fingerprint(cfg, problem.dataset),
    }
    if enc.layout.model is not None and enc.layout.model.ref.variational:  # a VAE: its KL beside the reconstruction
        summary["test_kl"] = float(functional.centre_kl(enc, dec, problem.test)[best])
    summary["memory"] = {"expected_peak_mb": None if problem.expected_peak_bytes is None
                         else round(problem.expected_peak_bytes / 2**20),
                         "peak_rss_mb": round(rundir.peak_resident_bytes() / 2**20)}  # this process's, from its start
    summary["warnings"] = report.quality_warnings(summary)
    for name in operator_needs(cfg).events:  # e.g. early_bird_generation: null if it never happened
        summary[f"{name}_generation"] = state.events.get(name)
    model = {"encoder": state_dict(enc.layout, enc.params[best], enc.mask[best]),
             "decoder": state_dict(dec.layout, dec.params[best], dec.mask[best])}
    summary["best_pair"] = pair = rundir.pair_id(model)
    # a resume: files derived from the old best pair that derived.json does not list yet
    rundir.adopt_legacy_derived(run_dir, _previous_pair(run_dir) or "unknown")
    _save_atomic(model, run_dir / "best.pt")
    if cfg.run.save_centres:
        _save_atomic({"encoders": [state_dict(enc.layout, enc.params[k], enc.mask[k]) for k in range(len(enc))],
                      "decoders": [state_dict(dec.layout, dec.params[k], dec.mask[k]) for k in range(len(dec))],
                      "validation_loss": torch.as_tensor(losses["validation"])}, run_dir / "centres.pt")
    if state.front is not None:  # a multi-objective run: its front, measured, and one file of its pairs
        summary["front"], front_models = front_summary(problem, state)
        _save_atomic(front_models, run_dir / "front.pt")
    report.plot_run(run_dir)
    _plot_reconstructions(problem, enc, dec, best, run_dir, summary)
    if state.front is not None:
        report.plot_front(run_dir / "plots" / "front.png", summary)
    # summary.json last: its presence means the run directory is complete
    atomic_write_bytes(run_dir / "summary.json", (json.dumps(summary, indent=2) + "\n").encode())
    stale = rundir.stale_derived(run_dir, pair)
    if stale:
        print(f"coevo: the best pair changed; {', '.join(stale)} still describe the previous one: run "
              f"`coevo export` / `coevo analyze` again (`coevo report` lists stale files)", file=sys.stderr)
    return summary


def _plot_reconstructions(problem: Problem, enc, dec, best: int, run_dir: Path, summary: dict) -> None:
    """plots/test_reconstructions.png for image data: eight test images over the best pair's outputs."""
    shape = report.image_shape(getattr(problem.dataset, "shape", (problem.dataset.n_dims,)))
    if shape is None:
        return
    x = problem.test[:8]
    with torch.no_grad():
        if enc.layout.model is not None:
            out = functional.reconstruct(enc.layout, dec.layout, enc.params[best], dec.params[best], x)
        else:
            out = batched.pair_forward(enc.layout, dec.layout, enc.params[best], dec.params[best], x)
    report.plot_reconstructions(run_dir / "plots" / "test_reconstructions.png", x.cpu().numpy(), out.cpu().numpy(),
                                shape, f"best pair (cell {best}): test {summary['loss'].upper()} "
                                       f"{summary['test_loss']:.4f} at kept {summary['kept_fraction']:.3f}")


def front_summary(problem: Problem, state: RunState) -> tuple[list[dict], dict]:
    """The front's points, smallest first, each with its test loss and compact fraction, and the
    pairs as ``front.pt`` holds them (state dicts, as best.pt and centres.pt)."""
    points = state.front.points()
    enc, dec = front_module.pair_stacks([pair for _, pair in points], problem.enc_layout, problem.dec_layout,
                                         problem.test.device)
    test = centre_losses(enc, dec, problem.test, problem.config.model.loss)
    kept = stack_kept_fractions(enc, dec, problem.config.prune.regrow)
    rows = [{"kept_fraction": point.kept_fraction, "validation_loss": point.validation_loss,
             "test_loss": float(test[i]), "compact_fraction": float(kept.compact[i]),
             "kept_fraction_encoder": float(kept.kept_encoder[i]), "kept_fraction_decoder": float(kept.kept_decoder[i]),
             "generation": point.generation, "cell": point.cell} for i, (point, _) in enumerate(points)]
    models = {"encoders": [state_dict(enc.layout, enc.params[i], enc.mask[i]) for i in range(len(points))],
              "decoders": [state_dict(dec.layout, dec.params[i], dec.mask[i]) for i in range(len(points))],
              "points": rows}
    return rows, models


def _previous_pair(run_dir: Path) -> str | None:
    """The id of the best pair a run directory held before this run's end (None: it held none)."""
    try:
        pair = json.loads((run_dir / "summary.json").read_text()).get("best_pair")
        if isinstance(pair, str):
            return pair
    except (OSError, ValueError, AttributeError):
        pass
    try:
        return rundir.pair_id(torch.load(run_dir / "best.pt", weights_only=True))
    except Exception:  # none, or damaged: nothing derived from it can be told apart
        return None


def _save_atomic(obj: dict, path: Path) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def config_of(run_dir: Path) -> Config:
    return config_module.load(Path(run_dir) / "config.toml")

