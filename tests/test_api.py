"""coevo as a library: configs built in Python are validated, runs leave the caller's process as
they found it, user observers and the TensorBoard observer, provenance in summary.json."""

from __future__ import annotations

import csv
import dataclasses
import json
import platform
import random
import shutil
import subprocess
import sys
import textwrap
from importlib import metadata

import numba
import numpy as np
import pytest
import torch

from coevo import bench, runner
import coevo
from coevo.bench import spec as bench_spec
from coevo.config import Config, ModelConfig, PruneConfig, RunConfig
from coevo.errors import ConfigError, UserError
from coevo.observers import Observer, TensorBoard
from coevo.rundir import provenance

from conftest import TINY


def _denormals_flushed() -> bool:
    """Independent of coevo's probe: 1e-40 is a float32 denormal, zero when flushed."""
    return (torch.tensor([1e-20], dtype=torch.float32) * torch.tensor([1e-20], dtype=torch.float32)).item() == 0.0


@pytest.fixture
def caller_state():
    """Put the process back as it was, whatever the test (or coevo) does to it."""
    threads, numba_threads, denormal = torch.get_num_threads(), numba.get_num_threads(), _denormals_flushed()
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    yield
    random.setstate(states[0])
    np.random.set_state(states[1])
    torch.set_rng_state(states[2])
    numba.set_num_threads(numba_threads)
    torch.set_num_threads(threads)
    torch.set_flush_denormal(denormal)


def _with(config: Config, section: str, **values) -> Config:
    """A copy with fields of one section replaced, without any validation (as a user's code may)."""
    return dataclasses.replace(config, **{section: dataclasses.replace(getattr(config, section), **values)})


# -- validation ------------------------------------------------------------------------------

BAD = [
    (lambda c: dataclasses.replace(c, run=RunConfig(mode="foo", generations=3)),
     "run.mode = 'foo' is not allowed; choose one of: coevolution, canonical"),
    (lambda c: dataclasses.replace(c, prune=PruneConfig(amount=5.0)), "prune.amount must be in [0, 1], got 5.0"),
    (lambda c: _with(c, "run", generations=0), "run.generations must be >= 1, got 0"),
    (lambda c: _with(c, "train", batch_size=5.0), "train.batch_size must be an integer, got 5.0"),
    (lambda c: _with(c, "train", fresh_optimizer_each_batch="yes"), "train.fresh_optimizer_each_batch must be true"),
    (lambda c: dataclasses.replace(c, model=ModelConfig(hidden=(8, "4"))), "model.hidden[1] must be an integer"),
    (lambda c: dataclasses.replace(c, train=ModelConfig()), "[train] must be a TrainConfig, got ModelConfig"),
    (lambda c: _with(c, "model", loss="huber"), "model.loss = 'huber' is not allowed; choose one of: l1, bce, mse"),
]


@pytest.mark.parametrize("make_bad, message", BAD)
def test_a_python_built_config_is_validated_before_anything_is_written(tmp_path, monkeypatch, tiny_config,
                                                                        make_bad, message):
    bad = make_bad(tiny_config)
    monkeypatch.chdir(tmp_path)  # the default run directory would be runs/... here
    for call in (lambda: runner.start(bad, out=tmp_path / "run", quiet=True),
                 lambda: runner.start(bad, quiet=True),
                 lambda: runner.prepare(bad)):
        with pytest.raises(ConfigError) as err:
            call()
        assert message in str(err.value) and "\n" not in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_a_run_needs_a_config(tmp_path):
    with pytest.raises(ConfigError, match="needs a coevo.config.Config, got dict"):
        runner.start({"run": {"generations": 3}}, out=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_resume_is_validated_too(tmp_path, tiny_config):
    with pytest.raises(UserError, match="run directory .*missing does not exist"):
        runner.resume(tmp_path / "missing")
    run_dir = runner.start(_with(tiny_config, "run", generations=2), out=tmp_path / "run", quiet=True)
    config_text = (run_dir / "config.toml").read_text()
    with pytest.raises(ConfigError, match="run.generations must be >= 1, got 0"):
        runner.resume(run_dir, generations=0)
    assert (run_dir / "config.toml").read_text() == config_text


def test_bench_validates_every_combination_before_writing(tmp_path):
    spec = bench_spec.parse('trials = 1\ngenerations = 2\n[base.data]\nn_dims = 20\nrows_per_cluster = 5\n'
                            '[[combination]]\noperator = "none"\n[[combination]]\noperator = "random"\n')
    broken = dataclasses.replace(spec.combinations[1], config={**spec.combinations[1].config,
                                                               "prune": {**spec.combinations[1].config["prune"],
                                                                         "amount": 5.0}})
    spec = dataclasses.replace(spec, combinations=(spec.combinations[0], broken))
    message = r"combination random \+ gradual \(coevolution\): prune.amount must be in \[0, 1\]"
    with pytest.raises(ConfigError, match=message):
        bench.run(spec, tmp_path / "bench", jobs=1, quiet=True)
    assert not (tmp_path / "bench").exists()


# -- global state ----------------------------------------------------------------------------

def test_a_run_leaves_the_callers_global_state(tmp_path, tiny_config, caller_state):
    torch.set_num_threads(3)  # not what the run asks for (run.threads = 1)
    if numba.config.NUMBA_NUM_THREADS >= 2:
        numba.set_num_threads(1)  # the run sets 2 for its kernels (run.threads = 2 on resume)
    numba_threads = numba.get_num_threads()
    torch.set_flush_denormal(False)  # the run turns flushing on
    random.seed(1234)
    np.random.seed(99)
    torch.manual_seed(7)
    before = (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state().clone())

    def unchanged() -> None:
        assert torch.get_num_threads() == 3
        assert numba.get_num_threads() == numba_threads
        assert not _denormals_flushed()
        assert random.getstate() == before[0]
        assert np.array_equal(np.random.get_state()[1], before[1])
        assert torch.equal(torch.get_rng_state(), before[2])

    run_dir = runner.start(_with(tiny_config, "run", generations=2, threads=1), out=tmp_path / "run", quiet=True)
    unchanged()
    # a resume restores the checkpoint's global random states for the run: not for the caller
    (run_dir / "config.toml").write_text((run_dir / "config.toml").read_text().replace("threads = 1", "threads = 2"))
    runner.resume(run_dir, generations=3, quiet=True)
    unchanged()


def test_matplotlib_backend_is_left_alone(tmp_path):
    """In a fresh interpreter: importing and running coevo neither switches the backend nor loads pyplot."""
    script = textwrap.dedent(f"""
        import sys
        import matplotlib
        matplotlib.use("svg")
        from coevo import bench, config, report, runner
        from coevo.bench import report as bench_report
        run_dir = runner.start(config.load(None, {TINY!r}), out={str(tmp_path / "run")!r}, quiet=True)
        assert (run_dir / "plots" / "loss.png").stat().st_size > 0
        assert matplotlib.get_backend() == "svg", matplotlib.get_backend()
        assert "matplotlib.pyplot" not in sys.modules
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


# -- observers -------------------------------------------------------------------------------

class Recorder(Observer):
    """Only what the hooks saw."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def on_start(self, config, state):
        self.calls.append(("start", state.generation, config.run.generations))

    def on_generation(self, row, state):
        self.calls.append(("generation", row["generation"], state.generation))

    def on_end(self, summary):
        self.calls.append(("end", summary["test_loss"]))

    def close(self):
        self.calls.append(("close",))


def test_user_observers_see_every_generation_the_summary_and_close(tmp_path, tiny_config):
    recorder = Recorder()
    run_dir = runner.start(tiny_config, out=tmp_path / "run", quiet=True, observers=[recorder])
    summary = json.loads((run_dir / "summary.json").read_text())
    assert recorder.calls == [("start", 0, 3), ("generation", 0, 1), ("generation", 1, 2), ("generation", 2, 3),
                              ("end", summary["test_loss"]), ("close",)]
    again = Recorder()
    runner.resume(run_dir, generations=4, quiet=True, observers=[again])
    assert again.calls[:2] == [("start", 3, 4), ("generation", 3, 4)] and again.calls[-1] == ("close",)


def test_an_observer_is_closed_when_the_run_fails(tmp_path, tiny_config):
    class Failing(Recorder):
        def on_generation(self, row, state):
            super().on_generation(row, state)
            raise RuntimeError("observer broke")

    failing = Failing()
    with pytest.raises(RuntimeError, match="observer broke"):
        runner.start(tiny_config, out=tmp_path / "run", quiet=True, observers=[failing])
    assert failing.calls == [("start", 0, 3), ("generation", 0, 1), ("close",)]


def test_observers_must_be_a_list_of_observers(tmp_path, tiny_config):
    for wrong in (Recorder(), [print]):
        with pytest.raises(TypeError, match="observers must be a list"):
            runner.start(tiny_config, out=tmp_path / "run", quiet=True, observers=wrong)
    assert not (tmp_path / "run").exists()


# -- TensorBoard ----------------------------------------------------------------------------

def _scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def _logbook(run_dir) -> list[dict]:
    with open(run_dir / "logbook.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_tensorboard_holds_the_logbooks_scalars(tmp_path, tiny_config):
    pytest.importorskip("tensorboard")
    run_dir = runner.start(_with(tiny_config, "run", tensorboard=True), out=tmp_path / "run", quiet=True)
    scalars = _scalars(run_dir / runner.TENSORBOARD_DIR)
    rows = _logbook(run_dir)
    columns = [c for c in rows[0] if c != "generation"]
    assert set(columns) <= set(scalars)
    for column in columns:
        assert [step for step, _ in scalars[column]] == [0, 1, 2], column
        assert [v for _, v in scalars[column]] == pytest.approx([float(r[column]) for r in rows], rel=1e-6), column
    summary = json.loads((run_dir / "summary.json").read_text())
    assert scalars["final/test_loss"] == [(3, pytest.approx(summary["test_loss"], rel=1e-6))]


def test_tensorboard_after_a_crash_and_resume_holds_each_generation_once(tmp_path, tiny_config):
    pytest.importorskip("tensorboard")
    log_dir = tmp_path / "tb"
    run_dir = runner.start(tiny_config, out=tmp_path / "run", quiet=True, observers=[TensorBoard(log_dir)])
    sorted((run_dir / "checkpoints").glob("gen_*.pt"))[-1].unlink()  # as if it died during generation 2
    (run_dir / "summary.json").unlink()
    runner.resume(run_dir, generations=4, quiet=True, observers=[TensorBoard(log_dir)])
    scalars = _scalars(log_dir)
    rows = _logbook(run_dir)
    assert [step for step, _ in scalars["validation_loss_best"]] == [0, 1, 2, 3]
    assert [v for _, v in scalars["validation_loss_best"]] == pytest.approx(
        [float(r["validation_loss_best"]) for r in rows], rel=1e-6)


def test_tensorboard_missing_is_one_line_naming_the_extra(tmp_path, tiny_config, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as without the package
    with pytest.raises(UserError, match=r"pip install coevo\[tensorboard\]"):
        TensorBoard(tmp_path / "tb")
    with pytest.raises(UserError, match=r"pip install coevo\[tensorboard\]"):
        runner.start(_with(tiny_config, "run", tensorboard=True), out=tmp_path / "run", quiet=True)
    assert list(tmp_path.iterdir()) == []


# -- provenance ------------------------------------------------------------------------------

def test_summary_records_provenance(tmp_path, tiny_config, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not a git repository
    run_dir = runner.start(tiny_config, out="run", quiet=True)
    record = json.loads((run_dir / "summary.json").read_text())["provenance"]
    assert record["coevo"] == coevo.__version__ == metadata.version("coevo")
    assert record["python"] == platform.python_version()
    assert record["numpy"] == np.__version__ and record["torch"] == torch.__version__
    assert record["numba"] == numba.__version__ and record["deap"] == metadata.version("deap")
    assert record["git_commit"] is None and record["git_dirty"] is None
    assert record["blas"], "no BLAS found"
    for lib in record["blas"]:
        assert lib["internal_api"] and lib["version"] and lib["filename"]


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_provenance_names_the_git_commit(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run([*git, "init", "-q"], check=True)
    (repo / "exp.toml").write_text("[run]\n")
    subprocess.run([*git, "add", "exp.toml"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "x"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    (repo / "runs").mkdir()  # untracked outputs do not make it dirty
    assert provenance.git_commit(repo) == (head, False)
    (repo / "exp.toml").write_text("[run]\nseed = 2\n")
    assert provenance.git_commit(repo) == (head, True)
    monkeypatch.chdir(repo)
    assert provenance.collect()["git_commit"] == head
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))  # no git executable at all
    assert provenance.git_commit(repo) == (None, None)
