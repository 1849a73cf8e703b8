"""benchmarks/compression.py pairs each seed's coevolution run with the same seed's isolated-cells and baseline runs."""

from __future__ import annotations

import json

import pytest

from benchmarks import compression
from coevo import config


def fake_bench(tmp_path, losses, isolated=None):
    rows = []
    sides = [("coevo-0.10", "coevolution", losses[0]), ("baseline-0.10", "canonical", losses[1])]
    if len(losses) > 2:
        sides.append(("baseline-reset-0.10", "canonical", losses[2]))
    if isolated is not None:
        sides.append(("isolated-0.10", "coevolution", isolated))
    for label, mode, values in sides:
        for seed, loss in enumerate(values, 1):
            run_dir = f"trials/{label}/seed-{seed}"
            (tmp_path / run_dir).mkdir(parents=True)
            cfg = config.load(overrides=[f"run.mode={mode}", "run.generations=7", "data.n_dims=20",
                                         "data.n_clusters=2", "data.rows_per_cluster=10", f"run.seed={seed}"])
            (tmp_path / run_dir / "config.toml").write_text(config.dumps(cfg))
            rows.append({"label": label, "mode": mode, "seed": seed, "test_loss": loss, "test_loss_mean": loss + 0.001,
                         "kept_fraction": 0.1, "wall_seconds": 10.0 if mode == "canonical" else 100.0,
                         "test_loss_floor": 0.05, "run_dir": run_dir})
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path


def test_the_table_pairs_seeds_and_counts_gradient_steps(tmp_path):
    bench = fake_bench(tmp_path, ([0.054, 0.055, 0.060], [0.056, 0.057, 0.059]))
    (entry,) = compression.summarize(bench)
    assert entry["seeds"] == [1, 2, 3]
    vs = entry["against_baseline"]
    assert vs["difference"] == pytest.approx(-0.002)  # median of -0.002, -0.002, +0.001
    assert vs["a12"] == pytest.approx(1 / 3)  # coevolution's loss is higher on one seed of three
    # 20 training rows (2 clusters x 10) in batches of 5: 4 steps an epoch; coevolution has 10 cells
    assert entry["baseline"]["gradient_steps"] == 7 * 4
    assert entry["coevo"]["gradient_steps"] == 10 * 7 * 4
    text = compression.markdown([entry])
    assert "| 0.10 | 0.0550 [0.0545-0.0575]" in text and "-0.0020" in text


def test_the_baseline_with_the_reset_mutation_is_its_own_row_not_mixed_into_the_baseline(tmp_path):
    bench = fake_bench(tmp_path, ([0.054, 0.055, 0.060], [0.056, 0.057, 0.059], [0.050, 0.051, 0.052]))
    (entry,) = compression.summarize(bench)
    assert entry["baseline"]["test_loss"][0] == pytest.approx(0.057)  # the plain baseline's median only
    assert entry["against_baseline"]["difference"] == pytest.approx(-0.002)
    assert entry["against_baseline_reset"]["difference"] == pytest.approx(0.004)  # median of 0.004, 0.004, 0.008
    assert entry["against_baseline_reset"]["a12"] == pytest.approx(1.0)
    assert "| 0.10, baseline with reset 0.01 | 0.0550" in compression.markdown([entry])


def test_an_empty_bench_says_what_to_run(tmp_path):
    with pytest.raises(SystemExit, match="coevo bench --preset compression"):
        compression.summarize(tmp_path)


def test_kept_targets_print_with_the_digits_they_have():
    assert [compression.kept_label(t) for t in (0.45, 0.1, 0.065, 0.05)] == ["0.45", "0.10", "0.065", "0.05"]


def test_a_seed_whose_two_runs_had_different_data_is_refused_not_paired(tmp_path):
    bench = fake_bench(tmp_path, ([0.054, 0.055, 0.060], [0.056, 0.057, 0.059]))
    cfg = config.load(overrides=["run.mode=canonical", "run.generations=7", "data.n_dims=30", "data.n_clusters=2",
                                 "data.rows_per_cluster=10", "run.seed=2"])
    (bench / "trials/baseline-0.10/seed-2/config.toml").write_text(config.dumps(cfg))
    with pytest.raises(SystemExit, match=r"kept 0.10: cannot pair runs by seed: .* seed 2 \(data.n_dims: 20 against 30\)"):
        compression.summarize(bench)


def test_isolated_cells_are_a_control_of_their_own_paired_by_seed(tmp_path):
    bench = fake_bench(tmp_path, ([0.054, 0.055, 0.060], [0.056, 0.057, 0.059]), isolated=[0.058, 0.060, 0.061])
    (entry,) = compression.summarize(bench)
    assert entry["isolated"]["test_loss"][0] == pytest.approx(0.060)
    assert entry["against_isolated"]["difference"] == pytest.approx(-0.004)  # median of -0.004, -0.005, -0.001
    assert entry["against_isolated"]["a12"] == pytest.approx(0.0)
    assert entry["against_baseline"]["difference"] == pytest.approx(-0.002)  # the baseline is untouched by it
    row = next(line for line in compression.markdown([entry]).splitlines() if line.startswith("| 0.10 |"))
    cells = [c.strip() for c in row.split("|")[1:-1]]
    assert cells[1:4] == ["0.0550 [0.0545-0.0575]", "0.0600 [0.0590-0.0605]", "0.0570 [0.0565-0.0580]"]
    assert cells[4] == "-0.0040" and cells[7] == "-0.0020"


def test_the_baseline_at_4000_epochs_is_read_from_its_own_bench_and_pairs_on_its_own_seeds(tmp_path):
    main = fake_bench(tmp_path / "main", ([0.054, 0.055, 0.060], [0.056, 0.057, 0.059]))
    extra = tmp_path / "epochs"
    extra.mkdir()
    rows = []
    for seed, loss in ((1, 0.070), (2, 0.066)):  # two of the three seeds
        run_dir = f"trials/baseline-4000-epochs-0.10/seed-{seed}"
        (extra / run_dir).mkdir(parents=True)
        cfg = config.load(overrides=["run.mode=canonical", "run.generations=70", "data.n_dims=20", "data.n_clusters=2",
                                     "data.rows_per_cluster=10", f"run.seed={seed}"])
        (extra / run_dir / "config.toml").write_text(config.dumps(cfg))
        rows.append({"label": "baseline-4000-epochs-0.10", "mode": "canonical", "seed": seed, "test_loss": loss,
                     "test_loss_mean": loss, "kept_fraction": 0.1, "wall_seconds": 80.0, "test_loss_floor": 0.05,
                     "run_dir": run_dir})
    (extra / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (entry,) = compression.summarize(main, extra)
    assert entry["seeds"] == [1, 2, 3]  # the main sides keep all their seeds
    assert entry["baseline_4000_epochs"]["n"] == 2 and entry["baseline_4000_epochs"]["gradient_steps"] == 70 * 4
    assert entry["against_baseline_4000_epochs"]["difference"] == pytest.approx(-0.0135)  # -0.016, -0.011
    assert "| 0.10, baseline, 4,000 epochs | 0.0550" in compression.markdown([entry])
