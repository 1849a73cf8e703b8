"""Crash safety: a run killed with SIGKILL and resumed ends exactly like an uninterrupted one;
damaged checkpoints are detected and skipped, or refused with a clear message."""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from coevo.cli import main
from coevo.rundir import checkpoint
from coevo.runner import SUMMARY_TIMING_KEYS
from conftest import TINY

# Slow enough per generation (~0.1 s on one thread) that a kill lands mid-run, small enough
# that the whole file runs in seconds. One torch thread: fast and steady on a loaded machine.
KILLABLE = [
    "run.generations=30",
    "run.checkpoint_every=1",
    "run.threads=1",
    "data.n_dims=500",
    "data.n_clusters=5",
    "data.rows_per_cluster=40",
    "model.hidden=[16]",
    "model.latent=4",
    "grid.cells=4",
    "train.learning_rate=0.001",
    "prune.schedule=fixed",
]


def sets(overrides: list[str]) -> list[str]:
    return [x for o in overrides for x in ("--set", o)]


def stable(run_dir: Path) -> dict:
    summary = json.loads((run_dir / "summary.json").read_text())
    return {k: v for k, v in summary.items() if k not in SUMMARY_TIMING_KEYS}


def logged_generations(run_dir: Path) -> list[int]:
    with open(run_dir / "logbook.csv", newline="") as fh:
        return [int(row["generation"]) for row in csv.DictReader(fh)]


def newest_checkpoint(run_dir: Path) -> int:
    names = sorted((run_dir / checkpoint.CHECKPOINT_DIR).glob("gen_*.pt"))
    return int(names[-1].stem.split("_")[1]) if names else 0


@pytest.fixture(autouse=True)
def keep_torch_threads():
    """``run.threads`` sets torch's thread count for the process; give other tests theirs back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
@pytest.mark.parametrize("semantics", [
    [],
    ["run.update=asynchronous", "prune.regrow=true", "train.fresh_optimizer_each_batch=true"],
    # state kept for the seed methods: sign-flip counts and gradient noise; early-bird's mask history
    ["prune.operator=flipout", "prune.amount=0.5", "prune.schedule=every", "prune.schedule_params.k=3",
     "train.gradient_noise=1.0", "prune.target_kept=0"],
    ["prune.operator=early_bird", "prune.amount=0.3", "prune.probability=1.0", "train.scale_l1=1e-4",
     "train.scale_l1_latent=1e-3", "prune.target_kept=0"],
    # operators that read gradients (snip, snap) or edit weights (merge)
    ["prune.operator=snip", "prune.schedule=geometric", "prune.probability=1.0", "prune.schedule_params.target=0.9",
     "prune.target_kept=0"],
    ["prune.operator=snap", "prune.amount=0.1", "prune.target_kept=0.3"],
    ["prune.operator=merge", "prune.amount=0.1", "prune.target_kept=0.3"],
    # edits the decoder's weights and biases
    ["prune.operator=latent_fold", "prune.probability=0.3", "prune.schedule=fixed", "prune.params.tolerance=0.5"],
    # the baselines: global magnitude, and neuron-unit magnitude (cuts whole neurons)
    ["prune.operator=magnitude", "prune.params.scope=global", "prune.amount=0.2", "prune.target_kept=0.3"],
    ["prune.operator=magnitude", "prune.params.unit=neuron", "prune.amount=0.2", "prune.target_kept=0.3"],
    # two objectives: the crowded tournament, the ladder of sizes and the front archive
    ['selection.objectives=["loss", "kept"]', "prune.schedule=gradual", "prune.target_kept=0.1"],
    # the functional path: a convolutional pair (Conv1d on the rows as 1 x 500 signals)
    ["model.family=conv", "data.sample_shape=[1, 500]", "model.params.channels=[4]", "prune.operator=variance",
     "prune.target_kept=0.3"],
], ids=["coevo", "reference", "flipout", "early_bird", "snip", "snap", "merge", "latent_fold", "magnitude-global",
        "magnitude-neuron", "front", "conv"])
def test_sigkilled_run_resumes_to_the_uninterrupted_result(tmp_path, capsys, semantics):
    killed, full = tmp_path / "killed", tmp_path / "full"
    overrides = KILLABLE + semantics
    proc = subprocess.Popen([sys.executable, "-m", "coevo", "run", "--quiet", "--out", str(killed), *sets(overrides)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while newest_checkpoint(killed) < 3:
            assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read().decode()}"
            assert time.monotonic() < deadline, "no third checkpoint within 120 s"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    assert not (killed / "summary.json").exists()
    done = logged_generations(killed)
    assert 3 <= len(done) < 30, "the kill must land mid-run"

    assert main(["resume", str(killed), "--quiet"]) == 0
    assert main(["run", "--quiet", "--out", str(full), *sets(overrides)]) == 0
    capsys.readouterr()
    assert stable(killed) == stable(full)
    assert logged_generations(killed) == list(range(30))
    if (full / "front.pt").exists():  # the front's pairs too, not only their losses
        a, b = (torch.load(d / "front.pt", weights_only=True) for d in (killed, full))
        assert all(torch.equal(x[k], y[k]) for x, y in zip(a["encoders"] + a["decoders"], b["encoders"] + b["decoders"])
                   for k in x)
        assert len(stable(full)["front"]) >= 2


TINY_RESUME = TINY + ["run.generations=4"]  # later overrides win


@pytest.fixture
def finished_run(tmp_path, capsys) -> tuple[Path, dict]:
    """A 4-generation run with a checkpoint after every generation, and its summary."""
    run_dir = tmp_path / "run"
    assert main(["run", "--quiet", "--out", str(run_dir), *sets(TINY_RESUME)]) == 0
    capsys.readouterr()
    return run_dir, stable(run_dir)


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_truncated_checkpoint_falls_back_to_the_previous_good_one(finished_run, capsys):
    run_dir, summary = finished_run
    checkpoints = sorted((run_dir / checkpoint.CHECKPOINT_DIR).glob("gen_*.pt"))
    assert [p.name for p in checkpoints] == ["gen_000002.pt", "gen_000003.pt", "gen_000004.pt"]
    truncate(checkpoints[-1])  # as if the disk filled up while the last one was written
    (run_dir / "summary.json").unlink()
    assert main(["resume", str(run_dir), "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert "skipping checkpoint gen_000004.pt: checksum mismatch" in err and "skipping" not in out
    assert stable(run_dir) == summary  # generation 4 was run again from generation 3's checkpoint
    assert logged_generations(run_dir) == [0, 1, 2, 3]


def test_every_checkpoint_damaged_is_a_clear_error(finished_run, capsys):
    run_dir, _ = finished_run
    for path in (run_dir / checkpoint.CHECKPOINT_DIR).glob("gen_*.pt"):
        truncate(path)
    logbook = (run_dir / "logbook.csv").read_bytes()
    assert main(["resume", str(run_dir), "--quiet"]) == 2
    _, err = capsys.readouterr()
    assert err.startswith("coevo: error: every checkpoint in ") and err.count("\n") == 1
    assert "is damaged" in err and "cannot be resumed" in err
    assert (run_dir / "logbook.csv").read_bytes() == logbook  # nothing was touched


def test_a_checkpoint_holds_everything_needed_to_continue(finished_run):
    """Genomes, masks, moments, steps, learning rates, logbook position and the global random
    states all come back from disk; a temporary file left by a killed writer is cleaned up."""
    run_dir, _ = finished_run
    from coevo import config as config_module
    from coevo.evolution.problem import build

    problem = build(config_module.load(run_dir / "config.toml"))
    state, rows, warnings = checkpoint.load_latest(run_dir, problem.enc_layout, problem.dec_layout, "cpu")
    assert (state.generation, rows, warnings) == (4, 4, [])
    assert state.encoders.steps.min() > 0 and state.encoders.exp_avg_sq.abs().sum() > 0
    assert not state.encoders.mask.all()  # the fixed schedule pruned something in 4 generations

    stale = run_dir / checkpoint.CHECKPOINT_DIR / ".gen_000009.pt.tmp1"
    stale.write_bytes(b"half a checkpoint")
    random.seed(5), np.random.seed(5), torch.manual_seed(5)
    state.lr = state.lr * 2
    checkpoint.save(run_dir, state, rows)
    expected = (random.random(), np.random.random(), torch.rand(1).item())
    random.seed(6), np.random.seed(6), torch.manual_seed(6)
    again, again_rows, _ = checkpoint.load_latest(run_dir, problem.enc_layout, problem.dec_layout, "cpu")
    assert (random.random(), np.random.random(), torch.rand(1).item()) == expected
    assert again_rows == rows and np.array_equal(again.lr, state.lr)
    for name in ("params", "mask", "exp_avg", "exp_avg_sq", "steps"):
        assert torch.equal(getattr(again.decoders, name), getattr(state.decoders, name))
    assert not stale.exists()
