"""Multi-objective coevolution (coevo.evolution.front): the crowded tournament, the ladder of sizes, the
front archive, and a run's front in summary.json, front.pt, plots, report and export."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from coevo import config
from coevo.cli import main
from coevo.errors import ConfigError
from coevo.evolution import front
from coevo.evolution.loop import make_toolbox, select_parents
from coevo.evolution.problem import build
from coevo.evolution.variation import CellData, vary_cells
from coevo.measures import stack_kept_fractions
from coevo.schedules import Pruning
from conftest import TINY

FRONT = ['selection.objectives=["loss", "kept"]']


def sets(overrides: list[str]) -> list[str]:
    return [x for o in overrides for x in ("--set", o)]


@pytest.mark.parametrize("overrides, message", [
    (['selection.objectives=["kept"]'], "selection.objectives"),
    (['selection.objectives=["loss", "size"]'], "selection.objectives"),
    (FRONT + ["run.mode=canonical"], "canonical mode"),
    (FRONT + ["selection.largest_kept=0.05"], "target_kept < largest_kept"),
    (FRONT + ["prune.target_kept=0", "prune.schedule=fixed"], "target_kept < largest_kept"),
    (FRONT + ["prune.regrow=true"], "prune.regrow"),
])
def test_a_bad_front_setting_is_a_one_line_error(overrides, message, tmp_path, capsys):
    with pytest.raises(ConfigError, match=message):
        config.validate(config.load(None, overrides))
    assert main(["run", "--quiet", "--out", str(tmp_path / "run"), *sets(TINY + overrides)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not (tmp_path / "run").exists()


def test_the_ladder_spans_target_to_largest_geometrically():
    cfg = config.load(None, FRONT + ["prune.target_kept=0.1", "selection.largest_kept=0.4"])
    ladder = front.kept_ladder(cfg, 5)
    assert ladder[0] == pytest.approx(0.1) and ladder[-1] == pytest.approx(0.4)
    assert np.allclose(ladder[1:] / ladder[:-1], 4 ** 0.25)


def individuals(values):
    return [front.handle(i, *v) for i, v in enumerate(values)]


def test_the_crowded_tournament_prefers_rank_then_crowding():
    # 0 and 2 are the ends of the first front, 1 its middle; 3 is dominated by 1
    pop = individuals([(0.1, 0.9), (0.2, 0.5), (0.4, 0.1), (0.3, 0.6)])
    random.seed(0)
    wins = [front.sel_crowded_tournament(pop, 1, 2)[0].cell for _ in range(2000)]
    counts = np.bincount(wins, minlength=4)
    # 3 wins only a tournament of two 3s (1/16), 1 only against itself or 3 (3/16)
    assert counts[3] / 2000 == pytest.approx(1 / 16, abs=0.02)
    assert counts[1] / 2000 == pytest.approx(3 / 16, abs=0.03)
    assert counts[0] == pytest.approx(counts[2], rel=0.2)


def test_the_tournament_draws_are_seeded_by_python_random():
    pop = individuals([(0.1, 0.9), (0.2, 0.5), (0.4, 0.1)])
    random.seed("s")
    first = [front.sel_crowded_tournament(pop, 1, 2)[0].cell for _ in range(50)]
    random.seed("s")
    assert first == [front.sel_crowded_tournament(pop, 1, 2)[0].cell for _ in range(50)]


def test_selection_on_two_objectives_takes_a_smaller_pair_that_is_no_worse():
    neighbours = np.array([[0, 1, 2]])
    losses = np.array([[0.2, 0.2, 0.2]])  # equal losses: the smallest pair dominates the others
    kept = np.array([0.9, 0.5, 0.3])

    def picks(overrides, sizes):
        toolbox = make_toolbox(config.load(None, overrides + ["selection.tournament_size=2"]))
        random.seed(1)
        return np.array([select_parents(neighbours, losses, losses, toolbox, "encoder", sizes)[0][0]
                         for _ in range(600)])

    # pair 2 wins every tournament it is drawn into: 1 - (2/3)^2 = 5/9 of them
    assert np.mean(picks(FRONT, kept) == 2) == pytest.approx(5 / 9, abs=0.06)
    # on loss alone the sizes play no part: a tie goes to the first drawn, so each wins 1/3
    assert np.mean(picks([], None) == 2) == pytest.approx(1 / 3, abs=0.06)


def fake_centres(n: int, seed: int = 0):
    cfg = config.load(None, TINY)
    problem = build(cfg)
    enc, dec = problem.fresh_stacks(n)
    g = torch.Generator().manual_seed(seed)
    enc.params.copy_(torch.randn(enc.params.shape, generator=g))
    dec.params.copy_(torch.randn(dec.params.shape, generator=g))
    return enc, dec


def test_the_archive_keeps_the_non_dominated_pairs_of_every_generation():
    enc, dec = fake_centres(4)
    archive = front.Front()
    calls = []

    def centres():
        calls.append(1)
        return enc, dec

    assert archive.update(0, np.array([0.3, 0.2, 0.25, 0.1]), np.array([0.5, 0.6, 0.7, 0.9]), centres) == 3
    assert sorted(map(tuple, archive.values())) == [(0.1, 0.9), (0.2, 0.6), (0.3, 0.5)]
    # nothing new: no point enters and the centres are not fetched
    assert archive.update(1, np.array([0.3, 0.2, 0.25, 0.1]), np.array([0.5, 0.6, 0.7, 0.9]), centres) == 0
    assert len(calls) == 1
    # a smaller, better pair replaces the two it dominates
    assert archive.update(2, np.array([0.15, 1.0, 1.0, 1.0]), np.array([0.55, 1.0, 1.0, 1.0]), centres) == 1
    assert sorted(map(tuple, archive.values())) == [(0.1, 0.9), (0.15, 0.55), (0.3, 0.5)]
    points = archive.points()
    assert [p.kept_fraction for p, _ in points] == [0.5, 0.55, 0.9]
    new = [pair for p, pair in points if p.generation == 2][0]
    assert torch.equal(new["encoder"]["params"], enc.params[0]) and torch.equal(new["decoder"]["mask"], dec.mask[0])
    # the pairs are copies: later training does not change them
    enc.params.add_(1.0)
    assert not torch.equal(new["encoder"]["params"], enc.params[0])


def test_the_archive_is_truncated_by_crowding_and_keeps_its_ends(monkeypatch):
    monkeypatch.setattr(front, "MAX_POINTS", 5)
    enc, dec = fake_centres(12)
    kept = np.linspace(0.1, 0.9, 12)
    archive = front.Front()
    archive.update(0, 1.0 - kept, kept, lambda: (enc, dec))
    values = archive.values()
    assert len(archive) == 5
    assert values[:, 1].min() == pytest.approx(0.1) and values[:, 1].max() == pytest.approx(0.9)


def test_the_archive_round_trips_through_a_checkpoint():
    enc, dec = fake_centres(4)
    archive = front.Front()
    archive.update(3, np.array([0.3, 0.2, 0.25, 0.1]), np.array([0.5, 0.6, 0.7, 0.9]), lambda: (enc, dec))
    again = front.Front.from_dict(archive.to_dict())
    assert np.array_equal(again.values(), archive.values())
    for (p, pair), (q, other) in zip(archive.points(), again.points()):
        assert p == q and torch.equal(pair["encoder"]["params"], other["encoder"]["params"])


def test_each_cell_prunes_towards_its_own_rung():
    cfg = config.load(None, TINY + FRONT + ["grid.cells=5", "prune.amount=1.0", "prune.target_kept=0.1",
                                           "selection.largest_kept=0.6"])
    problem = build(cfg)
    enc, dec = problem.fresh_stacks(5)
    cells = np.arange(5)
    v = vary_cells(enc, dec, cells, cells, cells, np.full(5, 1e-3), Pruning(1.0, progress=1.0), 0,
                   CellData(problem.train, cfg), make_toolbox(cfg).mutate, cfg.prune.operator)
    kept = np.asarray(stack_kept_fractions(v.encoders, v.decoders).kept)  # live: what the rungs hold
    ladder = front.kept_ladder(cfg, 5)
    assert np.all(np.diff(kept) > 0), kept
    assert np.allclose(kept, ladder, atol=0.05), (kept, ladder)
    assert np.all(kept >= ladder - 0.01), (kept, ladder)  # never below its rung (a one-step cut is bisected)


@pytest.fixture(scope="module")
def front_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("front") / "run"
    overrides = TINY + FRONT + ["run.generations=8", "grid.cells=5", "prune.schedule=gradual",
                                "prune.target_kept=0.1", "selection.largest_kept=0.6",
                                # inputs kept, as in the front preset: on this tiny problem a pair
                                # whose inputs died can dominate every larger one, leaving a front of one
                                "prune.keep_inputs=true"]
    assert main(["run", "--quiet", "--out", str(run_dir), *sets(overrides)]) == 0
    return run_dir, json.loads((run_dir / "summary.json").read_text())


def test_a_front_run_writes_its_front(front_run):
    run_dir, summary = front_run
    points = summary["front"]
    assert len(points) >= 2
    kept = [p["kept_fraction"] for p in points]
    validation = [p["validation_loss"] for p in points]
    assert kept == sorted(kept)
    # non-dominated: as the size grows, the validation loss falls
    assert all(b < a for a, b in zip(validation, validation[1:]))
    assert all(0 <= p["generation"] < 8 and 0 <= p["cell"] < 5 and p["test_loss"] > 0 for p in points)
    assert (run_dir / "plots" / "front.png").stat().st_size > 0
    saved = torch.load(run_dir / "front.pt", weights_only=True)
    assert len(saved["encoders"]) == len(saved["decoders"]) == len(points)
    logbook = (run_dir / "logbook.csv").read_text().splitlines()
    assert "front_points" in logbook[0].split(",")


def test_report_prints_the_front(front_run, capsys):
    run_dir, summary = front_run
    assert main(["report", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert f"front: {len(summary['front'])} pairs" in out


def test_export_front_writes_every_point_loadable_by_plain_torch(front_run, tmp_path, capsys):
    run_dir, summary = front_run
    out = tmp_path / "model.pt"
    assert main(["export", str(run_dir), "--which", "front", "--out", str(out)]) == 0
    capsys.readouterr()
    files = sorted(tmp_path.glob("model-front*.pt"), key=lambda p: int(p.stem.split("front")[1]))
    assert len(files) == len(summary["front"])
    saved = torch.load(run_dir / "front.pt", weights_only=True)
    x = torch.rand(7, saved["encoders"][0]["0.weight"].shape[1])
    for path, enc in zip(files, saved["encoders"]):
        model = torch.jit.load(str(path))
        assert model(x).shape == x.shape


def test_export_front_of_a_one_objective_run_is_a_clear_error(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["run", "--quiet", "--out", str(run_dir), *sets(TINY)]) == 0
    capsys.readouterr()
    assert main(["export", str(run_dir), "--which", "front"]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "front.pt" in err


def test_a_front_run_with_asynchronous_updates_completes_with_a_front(tmp_path, capsys):
    """One cell at a time: selection reads each pair's size at the start of the generation."""
    overrides = TINY + FRONT + ["run.update=asynchronous", "run.generations=4", "prune.schedule=gradual",
                                "prune.target_kept=0.2"]
    assert main(["run", "--quiet", "--out", str(tmp_path / "run"), *sets(overrides)]) == 0
    capsys.readouterr()
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["front"] and min(p["kept_fraction"] for p in summary["front"]) < 0.5
