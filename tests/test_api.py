"""coevo as a library: configs built in Python are validated before anything is written."""

from __future__ import annotations

import dataclasses

import pytest

from coevo import bench, bench_spec, runner
from coevo.config import Config, ModelConfig, PruneConfig, RunConfig, TrainConfig
from coevo.errors import ConfigError, UserError


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
