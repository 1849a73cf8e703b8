"""The real CLI, end to end, on a tiny problem."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from coevo.cli import main
from coevo.genome import to_module
from coevo.runner import SUMMARY_TIMING_KEYS


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def sets(overrides: list[str]) -> list[str]:
    return [x for o in overrides for x in ("--set", o)]


def stable(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k not in SUMMARY_TIMING_KEYS}


def test_run_writes_the_run_directory(tmp_path, tiny_overrides, capsys):
    out = tmp_path / "run"
    code, stdout, _ = run_cli(["run", "--quiet", "--out", str(out), *sets(tiny_overrides)], capsys)
    assert code == 0 and "test_loss" in stdout
    summary = json.loads((out / "summary.json").read_text())
    for key in ("test_loss", "validation_loss", "kept_fraction", "kept_fraction_encoder", "kept_fraction_decoder",
                "generations", "seconds_per_generation", "wall_seconds", "seed", "mode", "operator", "schedule"):
        assert key in summary
    assert summary["generations"] == 3 and summary["mode"] == "coevolution"
    with open(out / "logbook.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["generation"]) for r in rows] == [0, 1, 2]
    assert float(rows[0]["train_loss_min"]) <= float(rows[0]["train_loss_median"]) <= float(rows[0]["train_loss_max"])
    assert "[run]" in (out / "config.toml").read_text() and "seed = 1" in (out / "config.toml").read_text()
    assert {p.name for p in (out / "plots").iterdir()} >= {"loss.png", "kept.png", "learning_rate.png"}

    model = torch.load(out / "best.pt", weights_only=True)
    assert set(model) >= {"encoder", "decoder"}
    for net in model.values():
        for name, tensor in net.items():
            if not name.endswith("_mask"):
                mask = net[name + "_mask"]
                assert mask.shape == tensor.shape and mask.dtype == torch.bool
                assert torch.all(tensor[~mask] == 0)
    # alive: masked in (a weight the exploration mutation zeroed is still a parameter: it trains again)
    kept = sum(int(t.sum()) for net in model.values() for n, t in net.items() if n.endswith("_mask"))
    total = sum(t.numel() for net in model.values() for n, t in net.items() if n.endswith("_mask"))
    assert kept / total == pytest.approx(summary["kept_fraction"])
    # the saved pair rebuilds as plain torch modules and reproduces the reported validation loss scale
    encoder, decoder = to_module(model["encoder"]), to_module(model["decoder"], output="sigmoid")
    x = torch.rand(4, 40)
    assert decoder(encoder(x)).shape == (4, 40)

    code, stdout, _ = run_cli(["report", str(out)], capsys)
    assert code == 0 and "kept_fraction" in stdout


def test_same_seed_same_summary(tmp_path, tiny_overrides, capsys):
    summaries = []
    for name in ("a", "b"):
        assert run_cli(["run", "--quiet", "--out", str(tmp_path / name), *sets(tiny_overrides)], capsys)[0] == 0
        summaries.append(stable(json.loads((tmp_path / name / "summary.json").read_text())))
    assert summaries[0] == summaries[1]
    run_cli(["run", "--quiet", "--out", str(tmp_path / "c"), *sets(tiny_overrides + ["run.seed=2"])], capsys)
    assert stable(json.loads((tmp_path / "c" / "summary.json").read_text())) != summaries[0]


def test_resume_extends_a_run_exactly(tmp_path, tiny_overrides, capsys):
    """2 generations then `resume --generations 4` equals 4 straight (the fixed schedule ignores T)."""
    full, part = tmp_path / "full", tmp_path / "part"
    assert run_cli(["run", "--quiet", "--out", str(full), *sets(tiny_overrides + ["run.generations=4"])],
                   capsys)[0] == 0
    assert run_cli(["run", "--quiet", "--out", str(part), *sets(tiny_overrides + ["run.generations=2"])],
                   capsys)[0] == 0
    assert run_cli(["resume", str(part), "--generations", "4", "--quiet"], capsys)[0] == 0
    a = json.loads((full / "summary.json").read_text())
    b = json.loads((part / "summary.json").read_text())
    assert stable(a) == stable(b)
    with open(part / "logbook.csv") as fh:
        assert [int(r["generation"]) for r in csv.DictReader(fh)] == [0, 1, 2, 3]


def test_resume_after_losing_the_last_generations(tmp_path, tiny_overrides, capsys):
    """Kill-free version of a crash: drop the newest checkpoint and resume."""
    full, crashed = tmp_path / "full", tmp_path / "crashed"
    args = sets(tiny_overrides + ["run.generations=4"])
    assert run_cli(["run", "--quiet", "--out", str(full), *args], capsys)[0] == 0
    assert run_cli(["run", "--quiet", "--out", str(crashed), *args], capsys)[0] == 0
    checkpoints = sorted((crashed / "checkpoints").glob("gen_*.pt"))
    checkpoints[-1].unlink()  # as if the run died after generation 3 started
    (crashed / "summary.json").unlink()
    assert run_cli(["resume", str(crashed), "--quiet"], capsys)[0] == 0
    assert stable(json.loads((crashed / "summary.json").read_text())) == stable(
        json.loads((full / "summary.json").read_text()))
    with open(crashed / "logbook.csv") as fh:
        assert [int(r["generation"]) for r in csv.DictReader(fh)] == [0, 1, 2, 3]


def test_canonical_and_torus_modes_run(tmp_path, tiny_overrides, capsys):
    canon = tmp_path / "canon"
    code, _, _ = run_cli(["run", "--quiet", "--out", str(canon),
                          *sets(tiny_overrides + ["run.mode=canonical", "train.lr_decay=true"])], capsys)
    assert code == 0
    assert json.loads((canon / "summary.json").read_text())["mode"] == "canonical"
    torus = tmp_path / "torus"
    code, _, _ = run_cli(["run", "--quiet", "--out", str(torus),
                          *sets(tiny_overrides + ["grid.topology=torus", "grid.shape=[3, 3]",
                                                  "grid.neighbourhood=moore", "selection.solution_concept=mean",
                                                  "prune.operator=none"])], capsys)
    assert code == 0
    summary = json.loads((torus / "summary.json").read_text())
    assert summary["cells"] == 9 and summary["kept_fraction"] == 1.0


@pytest.mark.parametrize("extra, fragment", [
    (["--set", "run.nokey=1"], "unknown key run.nokey"),
    (["--set", "grid.cells=0"], "grid.cells must be >= 1"),
    (["--set", "prune.operator=magic"], "prune.operator = 'magic' is unknown; known operators:"),
    (["--set", "prune.schedule=sometimes"], "known schedules:"),
    (["--set", "run.mode=fast"], "run.mode"),
    (["--set", "data.source=/nonexistent/rows.npy"], "does not exist"),
    (["--config", "/nonexistent/c.toml"], "does not exist"),
])
def test_user_mistakes_exit_2_and_create_nothing(tmp_path, tiny_overrides, capsys, extra, fragment):
    out = tmp_path / "refused"
    code, _, err = run_cli(["run", "--quiet", "--out", str(out), *sets(tiny_overrides), *extra], capsys)
    assert code == 2
    assert err.startswith("coevo: error: ") and err.count("\n") == 1
    assert fragment in err
    assert not out.exists()


def test_set_with_a_space_instead_of_equals_names_the_fix(tmp_path, capsys):
    out = tmp_path / "refused"
    code, _, err = run_cli(["run", "--quiet", "--out", str(out), "--set", "run.generations", "5"], capsys)
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("coevo: error: ") and "KEY=VALUE" in err and "--set run.generations=5" in err
    assert not out.exists()
    code, _, err = run_cli(["run", "--print-config", "--set", 'selection.objectives', '["loss", "kept"]'], capsys)
    assert code == 2 and """--set 'selection.objectives=["loss", "kept"]'""" in err

def test_bad_data_values_are_refused(tmp_path, tiny_overrides, capsys):
    rows = np.random.default_rng(0).random((30, 5))
    rows[3, 2] = np.nan
    np.save(tmp_path / "nan.npy", rows)
    code, _, err = run_cli(["run", "--quiet", "--out", str(tmp_path / "r"),
                            *sets(tiny_overrides + [f"data.source={tmp_path / 'nan.npy'}"])], capsys)
    assert code == 2 and "NaN" in err


def test_existing_run_directory_is_left_alone(tmp_path, tiny_overrides, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    code, _, err = run_cli(["run", "--quiet", "--out", str(out), *sets(tiny_overrides)], capsys)
    assert code == 2 and "already exists" in err
    assert [p.name for p in out.iterdir()] == ["precious.txt"]


def test_console_script_exit_code_and_no_traceback(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[run\n")
    proc = subprocess.run([sys.executable, "-m", "coevo", "run", "--config", str(bad), "--out", str(tmp_path / "x")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "is not valid TOML" in proc.stderr
    assert not (tmp_path / "x").exists()


def test_a_folder_named_coevo_in_the_working_directory_does_not_break_a_run(tmp_path, tiny_overrides):
    # `python -m coevo` puts the working directory first on sys.path: with an editable install,
    # `import coevo` then gives the empty folder, while coevo's submodules load from the checkout
    (tmp_path / "coevo").mkdir()
    proc = subprocess.run([sys.executable, "-m", "coevo", "run", "--quiet", "--out", "r", *sets(tiny_overrides)],
                          cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    from importlib import metadata

    assert summary["provenance"]["coevo"] == metadata.version("coevo")
    version = subprocess.run([sys.executable, "-m", "coevo", "--version"], cwd=tmp_path, capture_output=True,
                             text=True)
    assert version.returncode == 0 and version.stdout.strip() == f"coevo {metadata.version('coevo')}"

def test_a_run_worse_than_the_majority_baseline_warns(tmp_path, tiny_overrides, capsys):
    # a learning rate of 1e-9 leaves the sigmoid outputs near 0.5: L1 about 0.5, the baseline about 0.27
    out = tmp_path / "run"
    code, stdout, _ = run_cli(["run", "--quiet", "--out", str(out),
                               *sets(tiny_overrides + ["train.learning_rate=1e-9", "train.lr_sigma=0"])], capsys)
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test_loss"] > summary["test_loss_baseline"]
    assert len(summary["warnings"]) == 1 and "no better than the baseline" in summary["warnings"][0]
    assert f"warning: {summary['warnings'][0]}" in stdout.splitlines()
    code, stdout, _ = run_cli(["report", str(out)], capsys)
    assert code == 0 and "warning: " in stdout


def test_the_summary_warns_only_below_the_baseline_and_prints_no_none():
    from coevo.report import format_summary, quality_warnings

    assert quality_warnings({"test_loss": 0.05, "test_loss_baseline": 0.27}) == []
    assert quality_warnings({"test_loss": 0.33, "test_loss_baseline": 0.27}) != []
    text = format_summary({"test_loss": 0.05, "test_loss_floor": None, "test_loss_baseline": 0.27})
    assert "None" not in text and "warning" not in text
    assert any(line.split() == ["test_loss_floor", "n/a"] for line in text.splitlines())
    old = format_summary({"test_loss": 0.4, "test_loss_baseline": 0.27})  # a summary.json from before warnings
    assert "warning: the best pair's test loss 0.4 is no better than the baseline 0.27" in old

def test_operators_lists_builtins(capsys):
    code, out, _ = run_cli(["operators"], capsys)
    assert code == 0
    for name in ("random", "none", "fixed", "exponential", "final_n", "prune_after", "population"):
        assert f"  {name} " in out or f"  {name}\n" in out


def test_save_centres_writes_the_ensemble(tmp_path, tiny_overrides, capsys):
    out = tmp_path / "run"
    assert run_cli(["run", "--quiet", "--out", str(out), *sets(tiny_overrides + ["run.save_centres=true"])],
                   capsys)[0] == 0
    centres = torch.load(out / "centres.pt", weights_only=True)
    assert len(centres["encoders"]) == len(centres["decoders"]) == 4
    best = json.loads((out / "summary.json").read_text())["best_cell"]
    model = torch.load(out / "best.pt", weights_only=True)
    assert torch.equal(centres["encoders"][best]["0.weight"], model["encoder"]["0.weight"])
    assert int(torch.argmin(centres["validation_loss"])) == best


def test_version_prints_coevos_version(capsys):
    from importlib import metadata

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"coevo {metadata.version('coevo')}"


def test_print_config_prints_the_resolved_toml_and_writes_nothing(tmp_path, tiny_overrides, capsys, monkeypatch):
    import tomllib

    from coevo import config

    monkeypatch.chdir(tmp_path)
    file = tmp_path / "c.toml"
    file.write_text('[run]\nmode = "canonical"\nseed = 5\n')
    args = ["--config", str(file), *sets(tiny_overrides + ["run.seed=9"])]
    code, out, err = run_cli(["run", "--print-config", "--out", "would-be", *args], capsys)
    assert code == 0 and err == ""
    assert config.from_dict(tomllib.loads(out)) == config.load(file, tiny_overrides + ["run.seed=9"])
    assert 'mode = "canonical"' in out and "seed = 9" in out
    assert [p.name for p in tmp_path.iterdir()] == ["c.toml"]  # no run directory, no runs/
    code, _, err = run_cli(["run", "--print-config", *sets(["run.mode=fast"])], capsys)
    assert code == 2 and "run.mode" in err


def test_report_on_a_missing_directory_says_so(tmp_path, capsys):
    code, _, err = run_cli(["report", str(tmp_path / "nope")], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "does not exist" in err and "resume" not in err
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(["report", str(tmp_path / "empty")], capsys)
    assert code == 2 and "is not a coevo run directory" in err and "resume" not in err


def test_missing_tensorboard_exits_2_naming_the_extra(tmp_path, tiny_overrides, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as without the package
    out = tmp_path / "run"
    code, _, err = run_cli(["run", "--quiet", "--out", str(out), *sets(tiny_overrides + ["run.tensorboard=true"])],
                           capsys)
    assert code == 2 and err.count("\n") == 1 and "pip install coevo[tensorboard]" in err
    assert not out.exists()
