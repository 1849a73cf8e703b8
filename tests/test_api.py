"""coevo as a library: configs built in Python are validated, runs leave the caller's process as
they found it."""

from __future__ import annotations

import dataclasses
import random
import subprocess
import sys
import textwrap

import numba
import numpy as np
import pytest
import torch

from coevo import bench, bench_spec, runner
from coevo.config import Config, ModelConfig, PruneConfig, RunConfig, TrainConfig
from coevo.errors import ConfigError, UserError

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
    message = r"combination random \+ exponential \(coevolution\): prune.amount must be in \[0, 1\]"
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
        from coevo import bench, bench_report, config, report, runner
        run_dir = runner.start(config.load(None, {TINY!r}), out={str(tmp_path / "run")!r}, quiet=True)
        assert (run_dir / "plots" / "loss.png").stat().st_size > 0
        assert matplotlib.get_backend() == "svg", matplotlib.get_backend()
        assert "matplotlib.pyplot" not in sys.modules
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
