"""benchmarks/levers.py: each lever against the defaults' runs of the same seeds and data, ranked
by validation loss (tuning), with test loss beside it."""

from __future__ import annotations

import json

import pytest

from benchmarks import levers


def write_rows(path, rows):
    path.mkdir(parents=True, exist_ok=True)
    (path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def row(label, seed, loss, validation=None, **extra):
    return {"label": label, "seed": seed, "test_loss": loss, "kept_fraction": 0.1, "test_loss_mean": loss + 0.001,
            "validation_loss": loss if validation is None else validation, **extra}


def test_each_lever_is_paired_with_the_defaults_by_seed(tmp_path):
    write_rows(tmp_path / "compression", [row("coevo-0.10", s, v) for s, v in ((1, 0.055), (2, 0.056), (3, 0.060))]
               + [row("baseline-0.10", 1, 0.9)])
    write_rows(tmp_path / "levers", [row("tournament-3", s, v) for s, v in ((1, 0.054), (2, 0.058), (3, 0.059))])
    table = {e["lever"]: e for e in levers.summarize(tmp_path / "levers", tmp_path / "compression")}
    assert set(table) == {"defaults", "tournament-3"}  # the baseline's rows are not a lever
    lever = table["tournament-3"]
    assert lever["difference"] == pytest.approx(-0.001)  # median of -0.001, +0.002, -0.001
    assert lever["a12"] == pytest.approx(1 / 3)
    assert "| tournament-3 | 3 | 0.0580 [0.0560-0.0585]" in levers.markdown(list(table.values()))


def test_the_levers_own_defaults_are_preferred_to_the_compression_runs(tmp_path):
    write_rows(tmp_path / "levers", [row("defaults", s, v) for s, v in ((1, 0.050), (2, 0.051))]
               + [row("reset-0.01", s, v) for s, v in ((1, 0.052), (2, 0.053))])
    table = {e["lever"]: e for e in levers.summarize(tmp_path / "levers")}
    assert list(table) == ["defaults", "reset-0.01"]
    assert table["reset-0.01"]["difference"] == pytest.approx(0.002)
    assert table["reset-0.01"]["a12"] == pytest.approx(1.0)


def test_no_defaults_anywhere_is_a_clear_exit(tmp_path):
    write_rows(tmp_path / "levers", [row("reset-0.01", 1, 0.052)])
    with pytest.raises(SystemExit, match="no 'defaults' rows"):
        levers.summarize(tmp_path / "levers")


def test_another_kept_fraction_pairs_with_the_label_named(tmp_path):
    write_rows(tmp_path / "round3", [row("coevo-0.10", 1, 0.054), row("coevo-0.05", 1, 0.12), row("coevo-0.05", 2, 0.13)])
    write_rows(tmp_path / "round4", [row("encoder-scale-0.25", s, v) for s, v in ((1, 0.11), (2, 0.125))])
    table = {e["lever"]: e for e in levers.summarize(tmp_path / "round4", tmp_path / "round3", "coevo-0.05")}
    assert table["defaults"]["seeds"] == [1, 2]
    assert table["encoder-scale-0.25"]["difference"] == pytest.approx(-0.0075)  # median of -0.01, -0.005


def test_the_defaults_label_and_only_pick_pairs_within_one_directory(tmp_path):
    write_rows(tmp_path / "round3", [row("keep-inputs-0.05", s, v) for s, v in ((1, 0.19), (2, 0.2))]
               + [row("coevo-0.05", s, v) for s, v in ((1, 0.12), (2, 0.13))] + [row("coevo-0.45", 1, 0.052)])
    table = {e["lever"]: e for e in levers.summarize(tmp_path / "round3", None, "keep-inputs-0.05", ["coevo-0.05"])}
    assert list(table) == ["defaults", "coevo-0.05"]
    assert table["coevo-0.05"]["difference"] == pytest.approx(-0.07)
    with pytest.raises(SystemExit, match="no rows labelled 'coevo-0.5'"):
        levers.summarize(tmp_path / "round3", None, "keep-inputs-0.05", ["coevo-0.5"])


def test_levers_are_ranked_and_compared_by_validation_loss_not_test_loss(tmp_path):
    """Where validation and test disagree, the validation order wins: "val-best" has the lowest
    validation loss but the highest test loss, and comes first; the paired statistics are on
    validation loss, the test difference is only shown."""
    write_rows(tmp_path / "levers",
               [row("defaults", s, 0.060, 0.060) for s in (1, 2, 3)]
               + [row("test-best", s, 0.050 + 0.001 * s, 0.070 + 0.001 * s) for s in (1, 2, 3)]
               + [row("val-best", s, 0.080 + 0.001 * s, 0.055 + 0.001 * s) for s in (1, 2, 3)])
    table = levers.summarize(tmp_path / "levers")
    assert [e["lever"] for e in table] == ["defaults", "val-best", "test-best"]
    val_best = table[1]
    assert val_best["difference"] == pytest.approx(0.057 - 0.060)  # validation: the lever is better
    assert val_best["a12"] == 0.0  # its validation loss is below the defaults' on every seed
    assert val_best["test"]["difference"] == pytest.approx(0.082 - 0.060)  # test says the opposite, unused
    text = levers.markdown(table)
    assert "validation L1 (ranks)" in text and "test L1 (not ranked on)" in text
    lines = [line for line in text.splitlines() if line.startswith("| val-best") or line.startswith("| test-best")]
    assert lines[0].startswith("| val-best | 3 | 0.0570 [0.0565-0.0575] | -0.0030 | 0.00 |")


def test_a_lever_run_on_other_data_than_the_defaults_is_refused(tmp_path):
    write_rows(tmp_path / "levers",
               [row("defaults", s, 0.060, data={"source": "binary_clustering", "n_dims": 1000}) for s in (1, 2)]
               + [row("wider", s, 0.050, data={"source": "binary_clustering", "n_dims": 200}) for s in (1, 2)])
    with pytest.raises(SystemExit, match=r"lever 'wider'.*seed 1 \(data.n_dims: 200 against 1000\)"):
        levers.summarize(tmp_path / "levers")
