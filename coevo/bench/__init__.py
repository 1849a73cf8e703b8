"""``coevo bench``: run every trial of a sweep spec into one directory, resumably.

Layout of a bench directory::

    spec.toml                       the resolved spec (a directory holds one sweep)
    rows.jsonl                      one JSON row per finished trial, appended and flushed
    trials/<combination>/seed-<n>/  each trial's run directory (coevo.runner)
    report.md, figures/*.png        written by coevo.bench.report

A row is written only once its trial has finished, so re-running the same command skips
finished trials, reads the summary of a trial that finished just before a crash, resumes one
that has checkpoints and reruns one that has neither.

Trials run through a :class:`TrialExecutor`. :class:`LocalExecutor` uses processes on this
machine, which die with the driver; :class:`RayExecutor` runs one Ray task per trial (same
:func:`execute_trial`) for sweeps bigger than one machine. Workers receive plain config dicts and
paths, never live objects.

One writer per directory (:mod:`coevo.rundir.lock`): the driver holds the bench directory for the whole
sweep, and each trial holds its run directory while it runs, so a trial whose worker died (or an
orphan of a killed driver) can never be written by two processes at once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
import tomllib
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence

from coevo import config as config_module
from coevo.bench import report as bench_report
from coevo.bench.spec import Spec, Trial, parse, seed_overlap_warning
from coevo.errors import ConfigError, UserError
from coevo.rundir import lock

SPEC_FILE = "spec.toml"

ROW_FIELDS = ("test_loss", "validation_loss", "train_loss", "train_loss_mean", "test_loss_mean", "test_loss_floor",
              "test_loss_baseline", "kept_fraction", "kept_fraction_encoder", "kept_fraction_decoder",
              "kept_fraction_mean", "mask_kept_fraction", "compact_fraction", "generations",
              "seconds_per_generation", "wall_seconds", "loss")
"""Copied from each trial's summary.json into its row."""

TRIAL_LOCK_WAIT_S = 60.0
"""How long a trial waits for another live writer of its run directory (an orphaned worker of a
killed driver that has not exited yet, a retried Ray task whose first worker is still winding
down) before it is reported as failed, writing no row."""


class TrialStopped(Exception):
    """A trial that did not start, or was stopped at a generation, because the sweep was interrupted."""


_interrupted = False
"""Set by SIGINT or SIGTERM while trials run (a plain flag: a handler must take no lock): no
trial starts any more, and running ones stop after their current generation."""

_pool_stop: Any = None
"""In a pool worker: the pool's shared event, which the driver sets when it is interrupted."""


def _stopping() -> bool:
    return _interrupted or (_pool_stop is not None and _pool_stop.is_set())


class _StopAtGeneration:
    """An observer that ends the run after the generation during which the sweep was
    interrupted; the run's checkpoints are kept, so re-running the sweep resumes it."""

    def on_start(self, config: Any, state: Any) -> None:
        pass

    def on_generation(self, row: dict, state: Any) -> None:
        if _stopping():
            raise KeyboardInterrupt


def execute_trial(config: dict[str, dict[str, Any]], run_dir: str) -> dict:
    """Run one trial to its summary (in a worker). A finished run directory is read, one with
    checkpoints resumed, anything else left by a crash removed and run again; all of it while
    holding the directory's lock (see :data:`TRIAL_LOCK_WAIT_S`). The driver has checked that a
    directory holding a run is this trial's (:func:`check_trial_dir`)."""
    from coevo import runner
    from coevo.rundir.checkpoint import CHECKPOINT_DIR

    path = Path(run_dir)
    summary = path / "summary.json"
    wait_s = float(os.environ.get("COEVO_TRIAL_LOCK_WAIT_S", TRIAL_LOCK_WAIT_S))  # tests shorten it in the workers
    with lock.hold(path, wait_s=wait_s):
        if not summary.exists() and any((path / CHECKPOINT_DIR).glob("gen_*.pt")):
            try:
                runner.resume(path, quiet=True, observers=[_StopAtGeneration()])
            except UserError:  # every checkpoint damaged: start over below
                pass
        if not summary.exists():
            lock.clear(path)
            runner.start(config_module.from_dict(config), path, quiet=True, observers=[_StopAtGeneration()])
        return json.loads(summary.read_text())


def _init_worker(parent_pid: int, stop: Any) -> None:
    """A pool worker: dies with the driver; SIGINT (a terminal's Ctrl-C reaches the whole
    process group) sets the shared stop event, so the trial stops after its generation and no
    queued trial starts. SIGTERM keeps its default: the worker dies, its checkpoints kept."""
    global _pool_stop
    lock.die_with_parent(parent_pid)
    _pool_stop = stop
    signal.signal(signal.SIGINT, _on_signal)


def _on_signal(signum: int, frame: Any) -> None:
    global _interrupted
    _interrupted = True


def _worker_task(task: Callable[[dict, str], dict], config: dict, run_dir: str) -> dict:
    """Run ``task`` unless the sweep was interrupted before this trial's turn came."""
    if _stopping():
        raise TrialStopped("the sweep was interrupted before it started")
    return task(config, run_dir)


def _holder_pid(run_dir: Path) -> int | None:
    """The pid of this host's process that took ``run_dir``'s lock (the file outlives a dead holder)."""
    words = lock.holder_of(run_dir).split()
    if len(words) == 4 and words[0] == "pid" and words[1].isdigit() and words[3] == socket.gethostname():
        return int(words[1])
    return None


class TrialExecutor(Protocol):
    """Where trials run. ``run`` yields each trial with its summary, or the exception it raised,
    as trials finish (in any order)."""

    def run(self, trials: Sequence[Trial], out: Path) -> Iterator[tuple[Trial, dict | BaseException]]: ...


@dataclass
class LocalExecutor:
    """Trials in ``jobs`` processes on this machine (spawned: fork after OpenMP hangs), which
    exit when this process dies (:func:`coevo.rundir.lock.die_with_parent`), SIGKILL included;
    ``jobs = 1`` too, so that a trial whose user code ends its process (``os._exit``) cannot end
    the sweep silently. ``in_process`` runs them one after another in this process instead (for
    tests that patch the runner).

    A worker that dies (killed, out of memory) breaks the process pool, and every trial still in
    it with it. Those trials go to a fresh pool: a dead worker's lock on its trial's directory
    went with it, and :func:`execute_trial` resumes or restarts the directory, as on Ray. A trial
    that had started (its directory still holds the lock file its worker left) is charged one
    try, and is reported as failed after ``retries`` retries; the pool also stops the trials that
    ran beside the dead worker, so they are charged too. A worker that exited by itself (an exit
    code, not a signal) in the middle of a trial, before its summary.json, fails that trial at
    once: its user code would end it again.

    Once :data:`_interrupted` is set (see :func:`_graceful_signals`), no trial starts and running ones
    stop after their generation; they are yielded as :class:`TrialStopped` or the runner's
    ``Interrupted``."""

    jobs: int
    task: Callable[[dict, str], dict] = execute_trial
    retries: int = 3
    in_process: bool = False

    def run(self, trials: Sequence[Trial], out: Path) -> Iterator[tuple[Trial, dict | BaseException]]:
        if self.in_process:
            for trial in trials:
                if _interrupted:
                    return
                try:
                    yield trial, self.task(trial.config(), str(out / trial.run_dir))
                except Exception as exc:  # a failed trial must not stop the sweep
                    yield trial, exc
            return
        queue, broken_pools = list(trials), {id(t): 0 for t in trials}
        while queue and not _interrupted:
            stop = multiprocessing.get_context("spawn").Event()
            # the pool starts its workers from this thread, on the first submit: the parent-death
            # signal is tied to it, and it outlives the pool
            pool = ProcessPoolExecutor(self.jobs, mp_context=multiprocessing.get_context("spawn"),
                                       initializer=_init_worker, initargs=(os.getpid(), stop))
            again: list[Trial] = []
            broken: list[Trial] = []
            try:
                with _sigint_ignored():  # inherited by the workers until _init_worker sets their handler
                    pending: dict[Future, Trial] = {pool.submit(_worker_task, self.task, t.config(),
                                                                str(out / t.run_dir)): t for t in queue}
                workers = dict(pool._processes or {})  # pid -> Process: to tell how a dead worker ended
                while pending:
                    finished, _ = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                    if _interrupted and not stop.is_set():
                        stop.set()
                        for future in [f for f in pending if f.cancel()]:
                            pending.pop(future)
                    for future in finished:
                        trial = pending.pop(future)
                        exc = future.exception()
                        if isinstance(exc, BrokenProcessPool):
                            broken.append(trial)  # decided once the pool's workers have been reaped
                            continue
                        yield trial, exc if exc is not None else future.result()
            finally:
                stop.set()  # left early (a second Ctrl-C, say): queued trials must not start
                pool.shutdown(wait=True, cancel_futures=True)  # the broken pool's workers are gone, locks too
            for trial in broken:
                run_dir = out / trial.run_dir
                if _interrupted:
                    yield trial, TrialStopped("the sweep was interrupted")
                    continue
                if not (run_dir / lock.LOCK_FILE).exists():  # it had not started
                    again.append(trial)
                    continue
                worker = workers.get(_holder_pid(run_dir))
                code = worker.exitcode if worker is not None else None
                if code is not None and code >= 0 and not (run_dir / "summary.json").exists():
                    yield trial, RuntimeError(f"its worker process exited (exit code {code}) in the middle of the "
                                              f"trial, without writing summary.json: does user code call os._exit()?")
                    continue
                broken_pools[id(trial)] += 1
                if broken_pools[id(trial)] <= self.retries:
                    again.append(trial)
                    continue
                yield trial, RuntimeError(f"its worker process died in each of {broken_pools[id(trial)]} "
                                          f"tries (killed, or out of memory?)")
            queue = [t for t in trials if t in again]  # in the sweep's order


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """SIGINT ignored while workers are spawned (an ignored signal stays ignored across exec), so
    that a Ctrl-C cannot kill a worker before it has its own handler. Main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def _graceful_signals() -> Iterator[None]:
    """While trials run: SIGINT or SIGTERM sets :data:`_interrupted` (no new trial, running ones
    stop after their generation, finished ones keep their rows); a second one raises
    KeyboardInterrupt at once. Main thread only (Python delivers signals there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if _interrupted:
            raise KeyboardInterrupt
        _on_signal(signum, frame)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


RAY_CONNECT_TIMEOUT_S = 10.0
"""How long ``--ray-address HOST:PORT`` may take to answer before it counts as unreachable."""


@dataclass
class RayExecutor:
    """One Ray task per trial, one CPU and one torch thread each (:attr:`trial_threads`), at
    most ``jobs`` at once (default: as many as the cluster schedules).

    ``address`` names a running cluster ('auto', 'HOST:6379', 'ray://HOST:10001'); empty
    starts a local Ray with ``jobs`` CPUs (default: this machine's), shut down after the sweep
    and killed with this process if it dies (:mod:`coevo.rundir.reaper`). On a cluster, Ray ends a
    dead driver's tasks itself (they are not detached).
    A Ray already running in this process is used as it is and left running. A task whose
    worker dies (the process killed, its node lost) is run again, up to ``retries`` times: the
    dead worker's lock on the trial's directory went with it, and :func:`execute_trial` resumes
    or restarts the directory. Workers must see the bench directory at the same path (a shared
    file system on a cluster); they are given absolute paths."""

    address: str = ""
    jobs: int | None = None
    retries: int = 3
    task: Callable[[dict, str], dict] = execute_trial
    trial_threads: int = 1
    _owns_ray: bool = field(default=False, init=False, repr=False)
    _watchdog: Any = field(default=None, init=False, repr=False)

    def start(self) -> None:
        """Import Ray and connect (or start a local one); a user error if either fails."""
        ray = _import_ray()
        if self.address:
            _check_reachable(self.address)
        if ray.is_initialized():
            return
        options = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
        if self.address:
            try:
                ray.init(address=self.address, **options)
            except Exception as exc:  # ConnectionError, ValueError, RuntimeError, ...
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise UserError(f"--ray-address {self.address}: cannot connect to a Ray cluster there ({first})") from None
        else:  # a local Ray whose every process dies with this one (coevo.rundir.reaper)
            from coevo.rundir.reaper import init_local_ray

            self._watchdog = init_local_ray(ray, num_cpus=self.jobs or cores(), **options)
            self._owns_ray = True

    def close(self) -> None:
        """Shut Ray down if :meth:`start` started it."""
        if self._owns_ray:
            import ray

            if ray.is_initialized():
                ray.shutdown()
            self._owns_ray = False
            if self._watchdog is not None:
                self._watchdog.close()
                self._watchdog = None

    def run(self, trials: Sequence[Trial], out: Path) -> Iterator[tuple[Trial, dict | BaseException]]:
        import ray
        from ray.exceptions import RayError, RayTaskError

        self.start()
        remote = ray.remote(num_cpus=1, max_retries=self.retries, retry_exceptions=False)(self.task)
        queue = list(trials)
        window = self.jobs or len(queue)
        pending: dict[Any, Trial] = {}
        try:
            while queue or pending:
                while queue and len(pending) < window:
                    trial = queue.pop(0)
                    pending[remote.remote(trial.config(), str((Path(out) / trial.run_dir).resolve()))] = trial
                finished, _ = ray.wait(list(pending), num_returns=1)
                for ref in finished:
                    trial = pending.pop(ref)
                    try:
                        result: dict | BaseException = ray.get(ref)
                    except RayTaskError as exc:  # the trial raised: report it as itself
                        cause = exc.cause if isinstance(exc.cause, BaseException) else exc
                        result = cause
                    except RayError as exc:  # its worker died in every try
                        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                        result = RuntimeError(f"the Ray worker running it died in each of {self.retries + 1} "
                                              f"tries ({type(exc).__name__}: {first})")
                    yield trial, result
        finally:
            for ref in pending:  # interrupted: stop what still runs
                try:
                    ray.cancel(ref, force=True)
                except Exception:
                    pass
            self.close()


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise UserError(f"--executor ray needs Ray, which is not installed ({exc}); "
                        f"install it with: pip install 'coevo[ray]'") from None
    return ray


def _check_reachable(address: str) -> None:
    """Fail fast, with one line, on a HOST:PORT (or ray://HOST:PORT) that does not answer."""
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        return  # 'auto', 'local': Ray resolves these itself, quickly
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=RAY_CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise UserError(f"--ray-address {address}: cannot reach it within {RAY_CONNECT_TIMEOUT_S:.0f} s "
                        f"({exc.strerror or exc}); is a Ray head running there (ray start --head)?") from None


def make_executor(name: str, jobs: int | None = None, ray_address: str = "") -> TrialExecutor | None:
    """The executor ``--executor NAME`` asks for (None: run() builds the local one)."""
    if name == "local":
        if ray_address:
            raise UserError("--ray-address needs --executor ray")
        return None
    if name == "ray":
        _import_ray()
        return RayExecutor(ray_address, jobs)
    raise UserError(f"--executor {name!r} is unknown; choose one of: local, ray")


def cores() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_jobs(spec: Spec) -> int:
    """As many trials at once as there are cores for one trial's torch threads."""
    return max(1, cores() // max(1, spec.base["run"]["threads"]))


def default_out(spec: Spec) -> Path:
    """Fixed per spec name, so that re-running the same command resumes."""
    return Path("bench-runs") / spec.name


@dataclass
class Outcome:
    out: Path
    total: int
    skipped: int
    ran: int = 0
    failed: list[tuple[Trial, BaseException]] = field(default_factory=list)
    report: Path | None = None


def prepare(spec: Spec, out: Path) -> list[Trial]:
    """Claim ``out`` for this spec and return the trials still to run. Refuses, before writing
    anything, a directory that holds a different sweep; a larger ``trials`` extends a sweep."""
    out = Path(out)
    spec_path = out / SPEC_FILE
    if spec_path.exists():
        previous = parse(spec_path.read_text(), source=str(spec_path), resolve=False)
        if previous.identity() != spec.identity():
            where = _first_difference(previous.identity(), spec.identity())
            raise UserError(f"{out} holds a different sweep ({SPEC_FILE} differs at {where}); "
                            f"use another --out, or the same spec (only trials may grow and baseline change)")
        if spec.trials < previous.trials:
            raise UserError(f"{out} has trials = {previous.trials}; a re-run may add trials, not drop them "
                            f"(got trials = {spec.trials})")
    elif out.exists() and (not out.is_dir() or not lock.is_empty(out)):
        raise UserError(f"{out} exists and is not a bench directory (no {SPEC_FILE}); choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    _atomic_write(spec_path, spec.dumps())
    done = {(r["combination"], r["seed"]) for r in read_rows_repairing(out / bench_report.ROWS)}
    return [t for t in spec.expand() if t.key not in done]


def run(spec: Spec, out: Path, jobs: int | None = None, quiet: bool = False,
        executor: TrialExecutor | None = None) -> Outcome:
    """Run every unfinished trial of ``spec`` into ``out``, then write the report."""
    out = Path(out)
    if jobs is not None and jobs < 1:
        raise UserError(f"--jobs must be >= 1, got {jobs}")
    for combination in spec.combinations:  # parse checked these; a Spec built in Python did not pass there
        try:
            config_module.from_dict(combination.config)
        except ConfigError as exc:
            raise ConfigError(f"combination {combination.label} ({combination.mode}): {exc}") from None
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} exists and is not a bench directory (no {SPEC_FILE}); choose another --out")
    overlap = seed_overlap_warning(spec)
    if overlap:  # a warning, not an error: the sweep still runs
        print(f"coevo bench: warning: {overlap}", file=sys.stderr)
    if executor is not None and callable(getattr(executor, "start", None)):
        executor.start()  # e.g. connect to Ray: a user error before anything is written
    try:
        # one driver per bench directory: a second one would write the same rows
        with lock.hold(out):
            return _run_locked(spec, out, jobs, quiet, executor)
    finally:
        if executor is not None and callable(getattr(executor, "close", None)):
            executor.close()


def _run_locked(spec: Spec, out: Path, jobs: int | None, quiet: bool, executor: TrialExecutor | None) -> Outcome:
    global _interrupted
    _interrupted = False
    todo = prepare(spec, out)
    total = len(spec.expand())
    outcome = Outcome(out, total, skipped=total - len(todo))
    threads = getattr(executor, "trial_threads", None)
    if threads:  # e.g. Ray: one CPU and one torch thread per trial
        todo = [_with_threads(t, threads) for t in todo]
        where = "Ray tasks (one CPU each)"
    else:
        jobs = min(jobs or default_jobs(spec), max(1, len(todo)))
        if jobs > 1:
            todo = [_with_threads(t, max(1, cores() // jobs)) for t in todo]
        where = f"{jobs} worker{'s' * (jobs > 1)}"
    for trial in todo:  # before anything runs: a directory holding a run must be this trial's
        check_trial_dir(trial, out / trial.run_dir)
    executor = executor or LocalExecutor(jobs)
    if not quiet:
        print(f"bench {spec.name}: {total} trials ({len(spec.combinations)} combinations x {spec.trials}), "
              f"{outcome.skipped} done, {len(todo)} to run on {where}; {out}")
    bar = None
    if not quiet and todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=outcome.skipped, unit="trial", desc=f"bench {spec.name}", dynamic_ncols=True)
    results = executor.run(todo, out)
    signals = _graceful_signals() if isinstance(executor, LocalExecutor) else contextlib.nullcontext()
    try:
        with signals, open(out / bench_report.ROWS, "a") as rows:
            for trial, result in results:
                if isinstance(result, (KeyboardInterrupt, TrialStopped)):  # the sweep was interrupted
                    continue
                if isinstance(result, BaseException):
                    outcome.failed.append((trial, result))
                else:
                    rows.write(json.dumps(make_row(trial, result)) + "\n")
                    rows.flush()
                    os.fsync(rows.fileno())
                    outcome.ran += 1
                if bar is not None:
                    left = total - bar.n - 1
                    bar.set_postfix_str(f"{left} left; last: {trial.combination.mode} {trial.combination.label} "
                                        f"seed {trial.seed}", refresh=False)
                    bar.update(1)
    finally:
        close = getattr(results, "close", None)
        if close is not None:  # stop the workers now, also on Ctrl-C
            close()
        if bar is not None:
            bar.close()
    if _interrupted:  # every finished trial has its row; the report waits for the re-run
        raise KeyboardInterrupt
    if bench_report.read_rows(out / bench_report.ROWS):
        outcome.report = bench_report.write_report(out, spec.baseline, spec.name)
    return outcome


def rebuild_report(out: Path) -> Path:
    """Rewrite a bench directory's report from its rows (and its spec's baseline)."""
    out = Path(out)
    if not out.is_dir():
        raise UserError(f"--report {out}: no such bench directory")
    spec = read_spec(out)
    return bench_report.write_report(out, spec.baseline if spec else None, spec.name if spec else None)


def format_outcome(outcome: Outcome) -> str:
    """The closing lines of ``coevo bench`` (stdout; failed trials: :func:`format_failures`)."""
    lines = [f"bench: {outcome.ran} trials run, {outcome.skipped} already done, {len(outcome.failed)} failed "
             f"(of {outcome.total}); rows: {outcome.out / bench_report.ROWS}"]
    if outcome.report is not None:
        lines.append(f"report: {outcome.report}")
    return "\n".join(lines)


def format_failures(outcome: Outcome) -> list[str]:
    """One line per failed trial, for stderr: which trial, why, and the fix."""
    lines = []
    for trial, exc in outcome.failed:
        why = (str(exc).strip().splitlines() or [""])[0]
        lines.append(f"coevo: error: trial {outcome.out / trial.run_dir} failed ({type(exc).__name__}: {why}); "
                     f"re-run the same command to retry it")
    return lines


def check_trial_dir(trial: Trial, path: Path) -> None:
    """Refuse (a UserError naming the directory and what differs) a trial directory that holds a
    run which is not this trial's: a row is written from it, or it is resumed, only when its
    config.toml is the trial's configuration (run.threads aside: it follows --jobs) and the data
    it recorded (summary.json, else its newest checkpoint) are the trial's data."""
    from coevo.rundir import directory as rundir

    if not path.is_dir() or lock.is_empty(path):
        return
    fix = f"move it away (or use another --out) to run trial {trial.combination.label} seed {trial.seed} there"
    if not (path / "config.toml").exists():
        found = [e.name for e in path.iterdir() if e.name != lock.LOCK_FILE and ".tmp" not in e.name]
        if found:
            raise UserError(f"{path} holds {found[0]} but no config.toml, so it is not a run of this trial; {fix}")
        return
    try:
        there = rundir._flat(config_module.to_dict(config_module.load(path / "config.toml")))
    except (UserError, tomllib.TOMLDecodeError) as exc:
        raise UserError(f"{path / 'config.toml'} cannot be read ({exc}); {fix}") from None
    config = rundir.with_absolute_source(config_module.from_dict(trial.config()))
    here = rundir._flat(config_module.to_dict(config))
    for key in sorted((set(there) | set(here)) - {"run.threads"}):
        if there.get(key) != here.get(key):
            raise UserError(f"{path} is not this trial's run: its config.toml sets {key} = {there.get(key)!r}, "
                            f"the trial {key} = {here.get(key)!r}; {fix}")
    recorded = _recorded_data(path)
    if recorded is None:
        return  # no summary and no checkpoint: nothing to adopt, the trial runs there from scratch
    if not recorded:
        raise UserError(f"{path} records no data fingerprint (a run of an older coevo?), so it cannot be "
                        f"told to be this trial's; {fix}")
    from coevo import data as data_module

    fingerprint = rundir.data_fingerprint(config, data_module.load(config.data, config.run.seed))
    for key in ("shape", "splits_sha256"):
        if recorded.get(key) != fingerprint[key]:
            raise UserError(f"{path} was run on other data than this trial's ({config.data.source}: its {key} "
                            f"differs, {recorded.get(key)!r} there, {fingerprint[key]!r} here); {fix}")


def _recorded_data(path: Path) -> dict | None:
    """The data fingerprint a run directory recorded: summary.json's, else its newest good
    checkpoint's; {} when it records none; None when it has no summary and no good checkpoint."""
    from coevo.rundir import checkpoint

    summary = path / "summary.json"
    if summary.exists():
        try:
            data = json.loads(summary.read_text()).get("data")
        except (ValueError, AttributeError) as exc:
            raise UserError(f"{summary} cannot be read ({exc}); move the directory away to run the trial again") from None
        if data:
            return data
    try:
        _, saved, _ = checkpoint.read_latest(path)
    except UserError:  # no checkpoint, or every one damaged: the trial starts over
        return {} if summary.exists() else None
    return (saved.get("meta") or {}).get("data") or {}


def make_row(trial: Trial, summary: dict) -> dict:
    """One row of rows.jsonl: the combination, the seed, the final numbers, the run directory."""
    c = trial.combination
    row: dict[str, Any] = {"combination": c.id, "label": c.label, "combination_index": c.index,
                           "mode": c.mode, "operator": c.settings["prune.operator"],
                           "schedule": c.settings["prune.schedule"], "settings": c.settings,
                           "trial": trial.index, "seed": trial.seed}
    row.update({k: summary.get(k) for k in ROW_FIELDS})
    row["data"] = _data_section(c.config)
    row["run_dir"] = trial.run_dir.as_posix()
    return row


def _data_section(config: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The trial's data config as its run directory's config.toml records it (a data file's path
    made absolute, as the runner does), so that the report pairs only trials of the same data."""
    from coevo.rundir.directory import is_file_source

    data = dict(config["data"])
    if is_file_source(data["source"]):
        data["source"] = str(Path(data["source"]).resolve())
    return data


def read_rows_repairing(path: Path) -> list[dict]:
    """The rows, after cutting off a last line left half-written by a crash (it is rerun)."""
    if path.exists():
        text = path.read_bytes()
        if text and not text.endswith(b"\n"):
            cut = text.rfind(b"\n") + 1
            with open(path, "r+b") as fh:
                fh.truncate(cut)
    return bench_report.read_rows(path)


def _with_threads(trial: Trial, threads: int) -> Trial:
    """Cap torch's threads when trials share the cores (unless the spec set run.threads)."""
    if trial.combination.config["run"]["threads"]:
        return trial
    config = {s: dict(v) for s, v in trial.combination.config.items()}
    config["run"]["threads"] = threads
    return replace(trial, combination=replace(trial.combination, config=config))


def _first_difference(a: Any, b: Any, where: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in list(a) + [k for k in b if k not in a]:
            if a.get(key) != b.get(key):
                return _first_difference(a.get(key), b.get(key), f"{where}.{key}" if where else str(key))
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                return _first_difference(x, y, f"{where}[{i}]")
    return f"{where}: {a!r} there, {b!r} here"


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def read_spec(out: Path) -> Spec | None:
    """The spec a bench directory was run with, if it has one."""
    path = Path(out) / SPEC_FILE
    if not path.exists():
        return None
    try:
        return parse(path.read_text(), source=str(path), resolve=False)
    except (tomllib.TOMLDecodeError, UserError) as exc:
        raise UserError(f"{path} cannot be read: {exc}") from None
