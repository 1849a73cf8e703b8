"""The Ray engine: same result as the local engine, survives a worker killed mid-generation,
and is a clear user error when Ray is not installed. Runs on one local Ray with 2 CPUs."""

from __future__ import annotations

import json
import logging
import os
import sys
import textwrap
from pathlib import Path

import pytest

from coevo.cli import main
from coevo.runner import SUMMARY_TIMING_KEYS
from conftest import TINY

SIX_CELLS = TINY + ["grid.cells=6"]  # later overrides win
RAY = ["run.engine=ray", "run.ray_workers=2"]


def sets(overrides: list[str]) -> list[str]:
    return [x for o in overrides for x in ("--set", o)]


def summary(run_dir: Path) -> dict:
    s = json.loads((run_dir / "summary.json").read_text())
    return {k: v for k, v in s.items() if k not in SUMMARY_TIMING_KEYS}


def assert_same_run(a: dict, b: dict) -> None:
    """Equal, up to the last float32 bits of the losses: torch evaluates the output sigmoid of
    the last few elements of a tensor with scalar code and the rest with SIMD code, so a shard of
    3 cells and a batch of 6 can round a few activations differently (1 ulp)."""
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], float) or isinstance(a[key], list):
            assert b[key] == pytest.approx(a[key], rel=1e-6, abs=1e-9), key
        else:
            assert b[key] == a[key], key


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray with 2 CPUs for the whole module; engines use it and leave it running.
    A generation that waits more than 120 s for its workers fails the test instead of hanging CI."""
    ray = pytest.importorskip("ray")
    from coevo.engines import ray_engine

    timeout = ray_engine.TIMEOUT_S
    ray_engine.TIMEOUT_S = 120.0
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    yield ray
    ray.shutdown()
    ray_engine.TIMEOUT_S = timeout


@pytest.fixture(scope="module")
def local_result(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("local") / "run"
    assert main(["run", "--quiet", "--out", str(out), *sets(SIX_CELLS)]) == 0
    return summary(out)


@pytest.mark.ray
def test_ray_engine_equals_local_engine(local_ray, local_result, tmp_path, capsys):
    out = tmp_path / "ray"
    assert main(["run", "--quiet", "--out", str(out), *sets(SIX_CELLS + RAY)]) == 0
    capsys.readouterr()
    assert_same_run(local_result, summary(out))
    assert local_ray.is_initialized()  # a Ray the engine did not start is left running


@pytest.mark.ray
def test_independent_pairing_on_ray_equals_local_engine(local_ray, local_result, tmp_path, capsys):
    """selection.pairing = "independent": each shard is shipped the encoders and the decoders its
    cells selected, from different cells; the run is the local engine's, and not the default's."""
    independent = ["selection.pairing=independent"]
    runs = {}
    for name, overrides in (("local", SIX_CELLS + independent), ("ray", SIX_CELLS + independent + RAY)):
        assert main(["run", "--quiet", "--out", str(tmp_path / name), *sets(overrides)]) == 0
        runs[name] = summary(tmp_path / name)
    capsys.readouterr()
    assert_same_run(runs["local"], runs["ray"])
    assert runs["local"]["test_loss_cells"] != local_result["test_loss_cells"]  # the pairing took effect


SEED_STATE = ["prune.operator=flipout", "prune.amount=0.5", "prune.probability=1.0", "prune.schedule=every",
              "prune.schedule_params.k=2", "prune.target_kept=0", "train.gradient_noise=1.0"]


@pytest.mark.ray
def test_flipout_on_ray_equals_local_engine(local_ray, tmp_path, capsys):
    """FlipOut's sign-flip counts live in the genomes: they travel to the workers and back, and
    its gradient noise is drawn per cell, so the shards reproduce the local run."""
    runs = {}
    for name, overrides in (("local", SIX_CELLS + SEED_STATE), ("ray", SIX_CELLS + SEED_STATE + RAY)):
        assert main(["run", "--quiet", "--out", str(tmp_path / name), *sets(overrides)]) == 0
        runs[name] = summary(tmp_path / name)
    capsys.readouterr()
    assert_same_run(runs["local"], runs["ray"])
    assert runs["local"]["kept_fraction"] < 0.9


@pytest.mark.ray
def test_uneven_shards_of_a_torus_match_the_local_engine(local_ray, tiny_config):
    """Four workers on a 3x3 Moore torus (shards of 3, 2, 2, 2 cells, each reading a halo of
    neighbours from other shards): losses, new centres and prune decisions as the local engine,
    with each cell's decoder from another cell than its encoder (independent pairing)."""
    import numpy as np
    import torch

    from coevo import topology
    from coevo.cells import CellData
    from coevo.engines import LocalEngine
    from coevo.engines.ray_engine import RayEngine
    from coevo.evolve import make_toolbox
    from coevo.problem import build

    cfg = tiny_config.replace(grid__topology="torus", grid__shape=[3, 3], grid__neighbourhood="moore")
    problem = build(cfg)
    neighbours = topology.neighbourhoods(cfg.grid)
    enc, dec = problem.fresh_stacks(9)
    mutate = make_toolbox(cfg).mutate
    enc_parents = np.array([4, 0, 8, 3, 4, 2, 6, 7, 1])
    dec_parents = np.array([5, 5, 0, 7, 3, 8, 2, 1, 0])  # shards need decoders their encoders do not name
    lr = np.linspace(1e-3, 2e-3, 9)
    local, remote = LocalEngine(), RayEngine("", 4)
    local.start(CellData(problem.train, cfg), neighbours)
    remote.start(CellData(problem.train, cfg), neighbours)
    try:
        assert [len(s) for s in remote.shards] == [3, 2, 2, 2]
        for generation in range(2):
            assert torch.allclose(remote.evaluate(enc, dec, generation), local.evaluate(enc, dec, generation),
                                  rtol=1e-6, atol=0)
            a = local.vary(enc, dec, enc_parents, dec_parents, lr, 0.5, generation, mutate, cfg.prune.operator)
            b = remote.vary(enc, dec, enc_parents, dec_parents, lr, 0.5, generation, mutate, cfg.prune.operator)
            assert np.array_equal(a.cells, b.cells) and np.array_equal(a.pruned, b.pruned) and a.pruned.any()
            for x, y in ((a.encoders, b.encoders), (a.decoders, b.decoders)):
                assert torch.equal(x.mask, y.mask) and torch.equal(x.steps, y.steps)
                for name in ("params", "exp_avg", "exp_avg_sq"):
                    assert torch.allclose(getattr(x, name), getattr(y, name), rtol=1e-5, atol=1e-9), name
            enc, dec = a.encoders, a.decoders
    finally:
        remote.close()
    assert local_ray.is_initialized()


DIES_ONCE = '''
import os, signal
from coevo.operators.random_pruning import random_prune

DRIVER_PID = {driver}
MARKER = {marker!r}

def prune(net, amount, rng, context):
    """Random pruning; in a Ray worker at generation 1, first kill the worker's own process once."""
    if os.getpid() != DRIVER_PID and context.generation == 1 and not os.path.exists(MARKER):
        with open(MARKER, "w") as fh:
            fh.write(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    return random_prune(net, amount, rng, context)
'''


@pytest.mark.ray
def test_ray_worker_killed_mid_generation_costs_a_retry(local_ray, local_result, tmp_path, monkeypatch, capsys):
    """The operator kills its worker in the middle of generation 1's variation. Ray restarts the
    actor and re-runs the shard; the run ends as if nothing happened. The operator's module is
    only importable in the driver (tmp_path is not on the workers' path): it travels by value."""
    marker = tmp_path / "killed"
    (tmp_path / "dies_once_op.py").write_text(DIES_ONCE.format(driver=os.getpid(), marker=str(marker)))
    monkeypatch.syspath_prepend(str(tmp_path))
    op = ["prune.operator=dies_once_op:prune"]
    out = tmp_path / "ray"
    assert main(["run", "--quiet", "--out", str(out), *sets(SIX_CELLS + RAY + op)]) == 0
    capsys.readouterr()
    assert marker.exists() and int(marker.read_text()) != os.getpid()  # a worker really died
    ran = summary(out)
    assert ran.pop("operator") == "dies_once_op:prune"
    expected = dict(local_result)
    expected.pop("operator")
    assert_same_run(expected, ran)


BROKEN = '''
def prune(net, amount, rng, context):
    raise ValueError("no mask for you")
'''


@pytest.mark.ray
def test_operator_error_in_a_worker_is_a_user_error(local_ray, tmp_path, monkeypatch, capsys):
    (tmp_path / "broken_op.py").write_text(BROKEN)
    monkeypatch.syspath_prepend(str(tmp_path))
    code = main(["run", "--quiet", "--out", str(tmp_path / "r"),
                 *sets(SIX_CELLS + RAY + ["prune.operator=broken_op:prune", "prune.probability=1.0"])])
    _, err = capsys.readouterr()
    assert code == 2 and err.count("\n") == 1
    assert "pruning operator 'broken_op:prune' raised ValueError: no mask for you" in err


def test_ray_engine_without_ray_is_a_user_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    monkeypatch.delitem(sys.modules, "coevo.engines.ray_engine", raising=False)
    out = tmp_path / "r"
    code = main(["run", "--quiet", "--out", str(out), *sets(SIX_CELLS + RAY)])
    _, err = capsys.readouterr()
    assert code == 2 and err.count("\n") == 1
    assert "run.engine = 'ray' needs Ray" in err and "pip install 'coevo[ray]'" in err
    assert not out.exists()
