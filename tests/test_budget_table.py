"""benchmarks/budget.py: where a run's budget went, against the one-hot-code estimate."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import budget
from coevo.cli import main


def test_the_one_hot_estimate_counts_a_bias_and_the_minority_clusters_of_each_bit():
    # 4 clusters, 3 bits: bit 0 is 1 everywhere (a bias), bit 1 is 0 in one cluster (+1), bit 2 in three (+1: 4-3)
    centroids = np.array([[1, 0, 0], [1, 1, 0], [1, 1, 0], [1, 1, 1]], dtype=np.float32)
    need, at_floor = budget.one_hot_estimate(centroids, 0.1, 5)
    assert need == 5 and at_floor == pytest.approx(0.1)
    _, short = budget.one_hot_estimate(centroids, 0.1, 3)  # two (bit, cluster) pairs left out
    assert short == pytest.approx(0.1 + 2 * 0.8 / 12)


def test_a_run_directory_is_read_layer_by_layer(tmp_path, tiny_overrides, capsys):
    run_dir = tmp_path / "run"
    sets = [x for o in tiny_overrides for x in ("--set", o)]
    assert main(["run", "--quiet", "--out", str(run_dir), *sets]) == 0
    capsys.readouterr()
    assert budget.main([str(run_dir), "--out", str(tmp_path / "out")]) == 0
    row = budget.inspect(run_dir)
    assert [l["layer"] for l in row["layers"]] == ["encoder 0", "encoder 2", "decoder 0", "decoder 2"]
    assert row["output_layer"] == row["layers"][-1]["weights"] + row["layers"][-1]["biases"]
    assert row["layers"][0]["entries"] == 40 * 8 + 8
    assert (tmp_path / "out" / "budget.md").read_text().startswith("| run | seed |")
    with pytest.raises(SystemExit, match="not a finished run directory"):
        budget.main([str(tmp_path), "--out", str(tmp_path / "out")])
