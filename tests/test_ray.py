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
        if key == "front":  # a list of points: the same points, each up to the last bits
            assert len(a[key]) == len(b[key])
            for p, q in zip(a[key], b[key]):
                assert_same_run(p, q)
        elif isinstance(a[key], float) or (isinstance(a[key], list)
                                           and all(isinstance(v, (int, float)) for v in a[key])):
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


def logbook(run_dir: Path) -> list[dict]:
    import csv

    with open(run_dir / "logbook.csv", newline="") as fh:
        return [{k: v for k, v in row.items() if "seconds" not in k} for row in csv.DictReader(fh)]


@pytest.mark.ray
def test_torus_on_two_workers_equals_local_engine_generation_by_generation(local_ray, tmp_path, capsys):
    """A 3x4 Moore torus with pruning on, 5 generations on 2 workers: every logbook row (the
    validation losses and kept fractions now computed on the workers) and the summary are the
    local engine's."""
    torus = SIX_CELLS + ["grid.topology=torus", "grid.shape=[3, 4]", "grid.neighbourhood=moore",
                         "run.generations=5", "run.checkpoint_every=2", "prune.probability=0.7"]
    runs = {}
    for name, overrides in (("local", torus), ("ray", torus + RAY)):
        assert main(["run", "--quiet", "--out", str(tmp_path / name), *sets(overrides)]) == 0
    capsys.readouterr()
    assert_same_run(summary(tmp_path / "local"), summary(tmp_path / "ray"))
    local_rows, ray_rows = logbook(tmp_path / "local"), logbook(tmp_path / "ray")
    assert len(local_rows) == len(ray_rows) == 5
    assert any(float(r["pruned_cells"]) > 0 for r in local_rows)
    for a, b in zip(local_rows, ray_rows):
        assert a.keys() == b.keys()
        for key in a:
            assert float(b[key]) == pytest.approx(float(a[key]), rel=1e-6, abs=1e-9), key


@pytest.mark.ray
def test_independent_pairing_on_ray_equals_local_engine(local_ray, local_result, tmp_path, capsys):
    """selection.pairing = "independent": each shard is shipped the encoders and the decoders its
    cells selected, from different cells; the run is the local engine's, and not the default's."""
    local, ray = local_and_ray(tmp_path, capsys, SIX_CELLS + ["selection.pairing=independent"])
    assert_same_run(local, ray)
    assert local["test_loss_cells"] != local_result["test_loss_cells"]  # the pairing took effect


def local_and_ray(tmp_path, capsys, overrides: list[str]) -> tuple[dict, dict]:
    """The summaries of one run with the local engine and one with the ray engine (RAY)."""
    runs = {}
    for name, extra in (("local", []), ("ray", RAY)):
        assert main(["run", "--quiet", "--out", str(tmp_path / name), *sets(overrides + extra)]) == 0
        runs[name] = summary(tmp_path / name)
    capsys.readouterr()
    return runs["local"], runs["ray"]


SEED_STATE = ["prune.operator=flipout", "prune.amount=0.5", "prune.probability=1.0", "prune.schedule=every",
              "prune.schedule_params.k=2", "prune.target_kept=0", "train.gradient_noise=1.0"]


@pytest.mark.ray
def test_flipout_on_ray_equals_local_engine(local_ray, tmp_path, capsys):
    """FlipOut's sign-flip counts live in the genomes: they travel to the workers and back, and
    its gradient noise is drawn per cell, so the shards reproduce the local run."""
    local, ray = local_and_ray(tmp_path, capsys, SIX_CELLS + SEED_STATE)
    assert_same_run(local, ray)
    assert local["kept_fraction"] < 0.9


@pytest.mark.ray
def test_a_conv_model_on_ray_equals_local_engine(local_ray, tmp_path, capsys):
    """A module model's layouts carry its reference: the workers rebuild the same templates and
    train the same functional path."""
    local, ray = local_and_ray(tmp_path, capsys, SIX_CELLS + ["model.family=conv", "data.sample_shape=[2, 20]",
                                                              "model.params.channels=[4]", "prune.target_kept=0.3"])
    assert_same_run(local, ray)
    assert local["kept_fraction"] < 0.9


@pytest.mark.ray
@pytest.mark.parametrize("params", [["prune.params.scope=global"], ["prune.params.unit=neuron"]],
                         ids=["global", "neuron"])
def test_magnitude_on_ray_equals_local_engine(local_ray, tmp_path, capsys, params):
    """The baseline operator in both scopes and units: the same masks on the workers as locally."""
    local, ray = local_and_ray(tmp_path, capsys, SIX_CELLS + ["prune.operator=magnitude", "prune.amount=0.3",
                                                              "prune.probability=1.0", "prune.target_kept=0.3",
                                                              *params])
    assert_same_run(local, ray)
    assert local["kept_fraction"] < 0.9


@pytest.mark.ray
def test_a_front_run_on_ray_equals_local_engine(local_ray, tmp_path, capsys):
    """Two objectives: selection on the driver, each cell's rung on the workers, the front
    archive fed from the workers' centres."""
    local, ray = local_and_ray(tmp_path, capsys, SIX_CELLS + ['selection.objectives=["loss", "kept"]',
                                                              "prune.schedule=gradual", "prune.target_kept=0.2"])
    assert_same_run(local, ray)
    assert len(local["front"]) >= 2


def _engines(cfg, workers: int):
    """A local engine and a ray engine started on ``cfg``'s grid, both holding fresh centres."""
    from coevo.engines import LocalEngine
    from coevo.engines.ray_engine import RayEngine
    from coevo.evolution import topology
    from coevo.evolution.problem import build
    from coevo.evolution.variation import CellData

    problem = build(cfg)
    neighbours = topology.neighbourhoods(cfg.grid)
    enc, dec = problem.fresh_stacks(len(neighbours))
    local, remote = LocalEngine(), RayEngine("", workers)
    for engine in (local, remote):
        engine.start(CellData(problem.train, cfg), neighbours)
        engine.load(enc, dec)
    return problem, neighbours, local, remote


def assert_same_centres(local, remote) -> None:
    import torch

    for x, y in zip(local.centres(), remote.centres()):
        assert torch.equal(x.mask, y.mask) and torch.equal(x.steps, y.steps)
        for name in ("params", "exp_avg", "exp_avg_sq"):
            assert torch.allclose(getattr(x, name), getattr(y, name), rtol=1e-5, atol=1e-9), name


@pytest.mark.ray
def test_uneven_shards_of_a_torus_match_the_local_engine(local_ray, tiny_config):
    """Four workers on a 3x3 Moore torus (shards of 3, 2, 2, 2 cells, each reading a halo of
    neighbours from other shards): losses, new centres, prune decisions and the logbook's
    measures as the local engine, with each cell's decoder from another cell than its encoder
    (independent pairing), over generations in which the centres stay on the workers."""
    import numpy as np
    import torch

    from coevo.evolution.loop import make_toolbox

    cfg = tiny_config.replace(grid__topology="torus", grid__shape=[3, 3], grid__neighbourhood="moore")
    problem, _, local, remote = _engines(cfg, 4)
    mutate = make_toolbox(cfg).mutate
    enc_parents = np.array([4, 0, 8, 3, 4, 2, 6, 7, 1])
    dec_parents = np.array([5, 5, 0, 7, 3, 8, 2, 1, 0])  # shards need decoders their encoders do not name
    lr = np.linspace(1e-3, 2e-3, 9)
    try:
        assert [len(s) for s in remote.shards] == [3, 2, 2, 2]
        for generation in range(3):
            assert torch.allclose(remote.evaluate(generation), local.evaluate(generation), rtol=1e-6, atol=0)
            a = local.vary(enc_parents, dec_parents, lr, 0.5, generation, mutate, cfg.prune.operator)
            b = remote.vary(enc_parents, dec_parents, lr, 0.5, generation, mutate, cfg.prune.operator)
            assert np.array_equal(a[1], b[1]) and a[1].any()
            assert np.allclose(a[0], b[0], rtol=1e-6, atol=0)
            assert_same_centres(local, remote)
            (va, ka), (vb, kb) = (e.measure(problem.validation, cfg.model.loss) for e in (local, remote))
            assert np.allclose(va, vb, rtol=1e-6, atol=0)
            assert all(np.array_equal(getattr(ka, f), getattr(kb, f)) for f in ("kept", "mask_kept", "compact", "latent"))
            enc_parents, dec_parents = np.roll(enc_parents, 1), np.roll(dec_parents, 2)
    finally:
        remote.close()
    assert local_ray.is_initialized()


@pytest.mark.ray
def test_only_border_rows_travel(local_ray, tiny_config):
    """A 6x6 von Neumann torus on 2 workers: shards of 3 rows, each with one row of interior
    cells. Evaluation ships each shard exactly its halo's parameters (2 rows of the other shard),
    worker to worker; variation ships only parents selected across the border; the driver sends
    and receives no genomes, and a generation moves far less than the population."""
    import numpy as np

    from coevo.evolution.loop import make_toolbox
    from coevo.population import FIELDS

    cfg = tiny_config.replace(grid__topology="torus", grid__shape=[6, 6], grid__neighbourhood="von_neumann",
                              grid__radius=1)
    problem, neighbours, local, remote = _engines(cfg, 2)
    enc, dec = local.centres()
    params = (enc.params[0].numel() + dec.params[0].numel()) * 4  # bytes of one cell's pair's parameters
    genome = sum(getattr(s, f)[0].numel() * getattr(s, f).element_size() for s in (enc, dec) for f in FIELDS)
    mutate = make_toolbox(cfg).mutate
    remote.measure(problem.validation, cfg.model.loss)  # the validation split goes once, before any generation
    try:
        assert [len(s) for s in remote.shards] == [18, 18]
        assert [sum(len(c) for _, c in halo) for halo in remote.halos] == [12, 12]
        remote.evaluate(0)
        assert remote.traffic.generations[-1]["between_workers"] == 24 * params
        # every cell selects itself, except cell 0 (top row) its neighbour 30 across the border
        parents = np.arange(36)
        parents[0] = 30
        remote.vary(parents, parents, np.full(36, 1e-3), 0.0, 0, mutate, cfg.prune.operator)
        remote.measure(problem.validation, cfg.model.loss)
        moved = remote.traffic.generations[-1]
        assert moved["between_workers"] == 24 * params + genome
        assert moved["to_workers"] < genome and moved["from_workers"] < genome  # per-cell values only
        assert moved["fetched"] == 0
        # the shards stayed resident: each worker read its centres from the object store once, at the start
        assert [s["restores"] for s in local_ray.get([a.stats.remote() for a in remote.actors])] == [1, 1]
        assert moved["between_workers"] + moved["to_workers"] + moved["from_workers"] < 36 * genome / 2
        local.vary(parents, parents, np.full(36, 1e-3), 0.0, 0, mutate, cfg.prune.operator)
        assert_same_centres(local, remote)  # fetched on demand, once
        assert remote.traffic.generations[-1]["fetched"] == 36 * genome
    finally:
        remote.close()


@pytest.mark.ray
def test_a_worker_killed_between_generations_restores_its_shard(local_ray, tiny_config):
    """The centres live on the workers: a worker killed after a generation comes back empty,
    restores its shard from the copy in the object store and goes on with the same result."""
    import numpy as np
    import torch

    from coevo.evolution.loop import make_toolbox

    cfg = tiny_config.replace(grid__cells=6)
    problem, _, local, remote = _engines(cfg, 2)
    mutate = make_toolbox(cfg).mutate
    parents = np.array([1, 2, 3, 4, 5, 0])
    try:
        before = local_ray.get(remote.actors[0].stats.remote())
        for generation in range(2):
            for engine in (local, remote):
                engine.evaluate(generation)
                engine.vary(parents, parents, np.full(6, 1e-3), 0.5, generation, mutate, cfg.prune.operator)
            if generation == 0:
                local_ray.kill(remote.actors[0], no_restart=False)
        assert torch.allclose(remote.evaluate(2), local.evaluate(2), rtol=1e-6, atol=0)
        after = local_ray.get(remote.actors[0].stats.remote(), timeout=120)
        assert after["pid"] != before["pid"] and after["restores"] == 1  # a new process, restored once
        assert local_ray.get(remote.actors[1].stats.remote(), timeout=120)["restores"] == 1  # never left
        assert_same_centres(local, remote)
    finally:
        remote.close()


@pytest.mark.ray
def test_ray_run_resumed_from_a_checkpoint_equals_local_engine(local_ray, local_result, tmp_path, capsys):
    """A ray run stopped after 2 of 3 generations (its checkpoints fetch the centres from the
    workers) and resumed on the ray engine ends as the uninterrupted local run."""
    out = tmp_path / "ray"
    assert main(["run", "--quiet", "--out", str(out), *sets(SIX_CELLS + RAY + ["run.generations=2"])]) == 0
    assert main(["resume", str(out), "--quiet", "--generations", "3"]) == 0
    capsys.readouterr()
    assert_same_run(local_result, summary(out))


DIES_ONCE = '''
import os, signal
from coevo.operators.magnitude import magnitude_prune

DRIVER_PID = {driver}
MARKER = {marker!r}

def prune(net, amount, rng, context):
    """The default operator (magnitude over the model); in a Ray worker at generation 1, first
    kill the worker's own process once."""
    if os.getpid() != DRIVER_PID and context.generation == 1 and not os.path.exists(MARKER):
        with open(MARKER, "w") as fh:
            fh.write(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    return magnitude_prune(net, amount, rng, context)
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
