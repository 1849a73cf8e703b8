"""Run directories that cannot silently go wrong (issue 20): resume checks what it continues
against the newest checkpoint, derived files know which best pair they describe, a directory
stopped early is not a dead end, and ordinary failures are one line."""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

from coevo import runner
from coevo.cli import main
from coevo.rundir import checkpoint
from coevo.rundir import directory as rundir
from conftest import TINY

TIMING = ("seconds", "measure_seconds", "wall_seconds")
PART = TINY + ["run.generations=2"]  # later overrides win
FULL = TINY + ["run.generations=4"]


def sets(overrides: list[str]) -> list[str]:
    return [x for o in overrides for x in ("--set", o)]


def cli(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> bool:
    return err.startswith("coevo: error: ") and err.count("\n") == 1 and "Traceback" not in err


def rows(run_dir: Path) -> list[dict]:
    """The logbook's rows without the timing columns (which differ between two runs)."""
    with open(run_dir / "logbook.csv", newline="") as fh:
        return [{k: v for k, v in r.items() if k not in TIMING} for r in csv.DictReader(fh)]


def stable(run_dir: Path) -> dict:
    summary = json.loads((run_dir / "summary.json").read_text())
    return {k: v for k, v in summary.items() if k not in runner.SUMMARY_TIMING_KEYS and k != "provenance"}


def snapshot(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def full(tmp_path_factory) -> Path:
    """The uninterrupted 4-generation run every resumed one must equal."""
    out = tmp_path_factory.mktemp("full") / "run"
    assert main(["run", "--quiet", "--out", str(out), *sets(FULL)]) == 0
    return out


@pytest.fixture
def part(tmp_path, capsys) -> Path:
    """2 generations of the same run: `resume --generations 4` continues it to `full`."""
    out = tmp_path / "part"
    assert main(["run", "--quiet", "--out", str(out), *sets(PART)]) == 0
    capsys.readouterr()
    return out


def resume_to_4(run_dir: Path, capsys, *extra: str) -> tuple[int, str, str]:
    return cli(["resume", str(run_dir), "--generations", "4", "--quiet", *extra], capsys)


def rows_csv(path: Path, n_rows: int = 30, n_cols: int = 6, seed: int = 0) -> Path:
    np.savetxt(path, np.random.default_rng(seed).random((n_rows, n_cols)), delimiter=",")
    return path


# ------------------------------------------------------------- 1. resume checks what it continues

@pytest.mark.parametrize("damage", ["short", "deleted", "half_line", "garbage_header", "empty"])
def test_a_short_or_damaged_logbook_is_rebuilt_from_the_checkpoint(part, full, capsys, damage):
    log = part / "logbook.csv"
    text = log.read_bytes().decode()
    lines = text.splitlines(keepends=True)
    if damage == "short":  # `head -2 logbook.csv`: generation 1 is gone
        log.write_text(lines[0] + lines[1], newline="")
    elif damage == "deleted":
        log.unlink()
    elif damage == "half_line":  # a row of the checkpoint's generation cut mid-write
        log.write_text(text[: -len(lines[-1]) // 2], newline="")
    elif damage == "garbage_header":
        log.write_text("#!?garbage\r\n" + "".join(lines[1:]), newline="")
    else:
        log.write_bytes(b"")
    code, _, err = resume_to_4(part, capsys)
    assert code == 0, err
    assert "logbook.csv was" in err and "rebuilt its 2 rows from gen_000002.pt" in err
    assert rows(part) == rows(full)  # every generation exactly once, equal to the uninterrupted run
    assert stable(part) == stable(full)


def test_rows_past_the_checkpoint_and_a_half_written_row_are_cut_quietly(part, full, capsys):
    (part / checkpoint.CHECKPOINT_DIR / "gen_000002.pt").unlink()  # died after generation 1's row 2 was logged
    with open(part / "logbook.csv", "a", newline="") as fh:
        fh.write("2,0.49")  # and half of a third row
    code, _, err = resume_to_4(part, capsys)
    assert code == 0 and err == ""
    assert rows(part) == rows(full)


def test_a_changed_data_file_is_refused_before_anything_is_written(tmp_path, capsys):
    data = rows_csv(tmp_path / "rows.csv")
    run_dir = tmp_path / "run"
    assert main(["run", "--quiet", "--out", str(run_dir), *sets(PART + [f"data.source={data}"])]) == 0
    capsys.readouterr()
    before = snapshot(run_dir)
    rows_csv(data, seed=1)  # the same width, other values
    code, _, err = resume_to_4(run_dir, capsys)
    assert code == 2 and one_line(err)
    assert f"data file {data} is not the data the run was started on" in err and "same size, other contents" in err
    rows_csv(data, n_cols=7)  # another width: named as the data, not blamed on the operator
    code, _, err = resume_to_4(run_dir, capsys)
    assert code == 2 and one_line(err) and "not the data the run was started on" in err and "operator" not in err
    data.unlink()
    code, _, err = resume_to_4(run_dir, capsys)
    assert code == 2 and one_line(err) and "does not exist" in err and "--data NEW_PATH" in err
    assert snapshot(run_dir) == before  # nothing was written


def test_moved_data_resume_with_data_and_relative_sources_work_from_anywhere(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rows_csv(tmp_path / "rows.csv")
    full_dir, run_dir = tmp_path / "full", tmp_path / "run"
    assert main(["run", "--quiet", "--out", str(full_dir), *sets(FULL + ["data.source=rows.csv"])]) == 0
    assert main(["run", "--quiet", "--out", str(run_dir), *sets(PART + ["data.source=rows.csv"])]) == 0
    capsys.readouterr()
    assert f'source = "{tmp_path / "rows.csv"}"' in (run_dir / "config.toml").read_text()  # made absolute
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.move(tmp_path / "rows.csv", elsewhere / "moved.csv")
    monkeypatch.chdir(elsewhere)
    code, _, err = resume_to_4(run_dir, capsys)
    assert code == 2 and one_line(err) and "--data" in err
    other = rows_csv(elsewhere / "other.csv", seed=3)
    code, _, err = resume_to_4(run_dir, capsys, "--data", str(other))
    assert code == 2 and one_line(err) and "give --data the file the run was started on" in err
    code, _, err = resume_to_4(run_dir, capsys, "--data", "moved.csv")  # relative, from another directory
    assert code == 0, err
    assert f'source = "{elsewhere / "moved.csv"}"' in (run_dir / "config.toml").read_text()
    moved, full_data = stable(run_dir)["data"], stable(full_dir)["data"]
    assert rows(run_dir) == rows(full_dir) and stable(run_dir) == {
        **stable(full_dir), "schedule": stable(run_dir)["schedule"], "data": moved}
    # the same data, byte for byte, recorded at the path it now has
    assert moved["sha256"] == full_data["sha256"] and moved["splits_sha256"] == full_data["splits_sha256"]
    assert moved["path"] == str(elsewhere / "moved.csv")


def test_an_edited_config_is_refused_naming_the_key_and_nothing_is_cut(part, capsys):
    (part / checkpoint.CHECKPOINT_DIR / "gen_000002.pt").unlink()  # the logbook is longer than the checkpoint
    config = part / "config.toml"
    config.write_text(config.read_text().replace("n_dims = 40", "n_dims = 30"))
    before = snapshot(part)
    code, _, err = resume_to_4(part, capsys)
    assert code == 2 and one_line(err)
    assert "sets data.n_dims = 30, but gen_000001.pt was written with data.n_dims = 40" in err
    assert snapshot(part) == before  # the logbook was not cut
    config.write_text(config.read_text().replace("n_dims = 30", "n_dims = 40").replace("threads = 0", "threads = 1"))
    assert resume_to_4(part, capsys)[0] == 0  # a key that does not change what is computed may change


def test_a_checkpoint_from_another_run_is_refused(part, tmp_path, capsys):
    other = tmp_path / "other"
    assert main(["run", "--quiet", "--out", str(other), *sets(PART + ["model.hidden=[6]"])]) == 0
    capsys.readouterr()
    shutil.copy(other / checkpoint.CHECKPOINT_DIR / "gen_000002.pt", part / checkpoint.CHECKPOINT_DIR / "gen_000003.pt")
    code, _, err = resume_to_4(part, capsys)
    assert code == 2 and one_line(err) and "model.hidden" in err and "another run" in err
    # a checkpoint without the recorded configuration (as older coevo wrote them): the network's shape
    path, saved, _ = checkpoint.read_latest(other)
    state = checkpoint.state_from(saved, *_layouts(other), "cpu")
    for stale in (part / checkpoint.CHECKPOINT_DIR).glob("gen_*.pt"):
        stale.unlink()
    checkpoint.save(part, state, 2)
    code, _, err = resume_to_4(part, capsys)
    assert code == 2 and one_line(err) and "holds encoders of another shape" in err and "another run" in err


def _layouts(run_dir: Path):
    from coevo.evolution.problem import build

    problem = build(runner.config_of(run_dir))
    return problem.enc_layout, problem.dec_layout


# ---------------------------------------------------------------------- 2. stale derived files

def test_derived_files_of_an_earlier_best_pair_are_reported_stale(part, capsys):
    code, _, err = cli(["export", str(part)], capsys)
    assert code == 0, err
    first = json.loads((part / "summary.json").read_text())["best_pair"]
    assert rundir.read_derived(part) == {"model.pt": first}
    code, _, err = cli(["report", str(part)], capsys)
    assert code == 0 and "stale" not in err
    code, _, err = resume_to_4(part, capsys)
    assert code == 0
    assert json.loads((part / "summary.json").read_text())["best_pair"] != first
    assert "model.pt still describe the previous one" in err
    code, out, _ = cli(["report", str(part)], capsys)
    assert code == 0 and "stale: model.pt" in out
    code, _, _ = cli(["export", str(part)], capsys)
    assert code == 0 and "stale" not in cli(["report", str(part)], capsys)[1]


def test_derived_files_from_before_derived_json_are_reported_stale(part, capsys):
    assert cli(["export", str(part)], capsys)[0] == 0
    (part / rundir.DERIVED).unlink()  # as an older coevo left it
    code, _, err = resume_to_4(part, capsys)
    assert code == 0 and "model.pt still describe the previous one" in err
    assert "stale: model.pt" in cli(["report", str(part)], capsys)[1]


def test_resuming_a_finished_run_keeps_its_derived_files_current(part, capsys):
    assert cli(["export", str(part)], capsys)[0] == 0
    (part / "summary.json").unlink()
    code, _, err = cli(["resume", str(part), "--quiet"], capsys)  # same best pair
    assert code == 0 and "previous one" not in err
    assert "stale" not in cli(["report", str(part)], capsys)[1]


# -------------------------------------------------------------------- 3. dead-end directories

@pytest.fixture
def user_ops(tmp_path, monkeypatch) -> str:
    name = f"rundir_ops_{uuid.uuid4().hex[:8]}"
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / f"{name}.py").write_text(
        "import sys\n"
        "\n"
        "def boom(net, amount, rng, context):\n"
        "    raise RuntimeError('boom')\n"
        "\n"
        "def leaves(net, amount, rng, context):\n"
        "    sys.exit(0)\n"
        "\n"
        "def string_schedule(t, T, p, s):\n"
        "    return '0.5'\n"
        "\n"
        "def bool_schedule(t, T, p, s):\n"
        "    return True\n")
    monkeypatch.syspath_prepend(str(tmp_path / "plugins"))
    return name


def test_a_run_stopped_before_its_first_generation_resumes_from_generation_0(tmp_path, user_ops, capsys):
    out = tmp_path / "run"
    code, _, err = cli(["run", "--quiet", "--out", str(out),
                        *sets(TINY + [f"prune.operator={user_ops}:boom", "prune.probability=1"])], capsys)
    assert code == 2 and one_line(err) and "boom" in err
    assert [p.name for p in (out / checkpoint.CHECKPOINT_DIR).glob("gen_*.pt")] == ["gen_000000.pt"]
    code, _, err = cli(["resume", str(out), "--quiet"], capsys)
    assert code == 2 and "boom" in err and "no checkpoints" not in err  # it goes on, and meets the operator again


def test_a_directory_that_never_checkpointed_is_reused_by_run(tmp_path, user_ops, capsys):
    out = tmp_path / "run"
    never = TINY + ["run.checkpoint_every=0"]
    code, _, err = cli(["run", "--quiet", "--out", str(out),
                        *sets(never + [f"prune.operator={user_ops}:boom", "prune.probability=1"])], capsys)
    assert code == 2
    code, _, err = cli(["run", "--quiet", "--out", str(out), *sets(never)], capsys)
    assert code == 0, err  # the directory is reused
    assert json.loads((out / "summary.json").read_text())["generations"] == 3
    assert rows_of(out) == list(range(3))
    (out / "summary.json").unlink()
    assert not runner.never_checkpointed(out)  # a run directory with a best pair is never reused
    (out / "precious.txt").write_text("not coevo's")  # a finished run, or a foreign file: never reused
    code, _, err = cli(["run", "--quiet", "--out", str(out), *sets(never)], capsys)
    assert code == 2 and "not empty" in err and (out / "precious.txt").exists()


def test_resume_runs_a_directory_that_never_checkpointed_from_generation_0(tmp_path, user_ops, capsys):
    out = tmp_path / "run"
    never = TINY + ["run.checkpoint_every=0"]
    code, _, err = cli(["run", "--quiet", "--out", str(out),
                        *sets(never + [f"prune.operator={user_ops}:boom", "prune.probability=1"])], capsys)
    assert code == 2
    config = out / "config.toml"
    config.write_text(config.read_text().replace(f'"{user_ops}:boom"', '"random"'))  # the user fixes it
    code, _, err = cli(["resume", str(out), "--quiet"], capsys)
    assert code == 0 and "has no checkpoint yet" in err and "running it from generation 0" in err
    assert rows_of(out) == list(range(3))


def rows_of(run_dir: Path) -> list[int]:
    return [int(r["generation"]) for r in rows(run_dir)]


@pytest.mark.parametrize("every, fragment", [
    (0, "interrupted before the first checkpoint; no generation is kept: `coevo resume"),
    (1, "interrupted; the checkpoint of generation 2 is kept: `coevo resume"),
])
def test_ctrl_c_says_what_is_kept(tmp_path, capsys, monkeypatch, every, fragment):
    from coevo.observers import Observer

    class CtrlC(Observer):
        def on_generation(self, row, state):
            if state.generation == 2:
                raise KeyboardInterrupt

    real = runner._observers
    monkeypatch.setattr(runner, "_observers", lambda config, run_dir, user: real(config, run_dir, [CtrlC()]))
    code, _, err = cli(["run", "--quiet", "--out", str(tmp_path / "run"),
                        *sets(TINY + [f"run.checkpoint_every={every}"])], capsys)
    assert code == 130 and err == f"coevo: {err[7:]}" and fragment in err and err.count("\n") == 1


# ------------------------------------------------------- 4. ordinary failures are one line

def test_a_full_disk_is_one_line_and_leaves_no_temporary_file(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    real = os.fsync
    calls = []

    def fsync(fd):
        calls.append(fd)
        if len(calls) == 3:  # config.toml, generation 0's checkpoint, then the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd)

    monkeypatch.setattr(checkpoint.os, "fsync", fsync)
    code, _, err = cli(["run", "--quiet", "--out", str(out), *sets(TINY)], capsys)
    assert code == 2 and one_line(err) and "No space left on device" in err and "coevo resume" in err
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]
    monkeypatch.setattr(checkpoint.os, "fsync", real)
    assert cli(["resume", str(out), "--quiet"], capsys)[0] == 0  # and the run goes on once there is space


@pytest.mark.parametrize("where", ["file_parent", "proc", "read_only"])
def test_an_output_directory_that_cannot_be_made_is_one_line(tmp_path, capsys, where):
    if where == "file_parent":
        (tmp_path / "afile.txt").write_text("x")
        out = tmp_path / "afile.txt" / "sub"
    elif where == "proc":
        out = Path("/proc/nope")
    else:
        if os.geteuid() == 0:
            pytest.skip("root writes into a read-only directory")
        (tmp_path / "ro").mkdir()
        (tmp_path / "ro").chmod(0o555)
        out = tmp_path / "ro" / "run"
    code, _, err = cli(["run", "--quiet", "--out", str(out), *sets(TINY)], capsys)
    assert code == 2 and one_line(err) and str(out).split("/sub")[0] in err


def test_damaged_summary_and_best_pt_are_one_line(part, capsys):
    summary = part / "summary.json"
    summary.write_bytes(summary.read_bytes()[:40])
    for command in ("report", "export", "analyze"):
        code, _, err = cli([command, str(part)], capsys)
        assert code == 2 and one_line(err) and "summary.json is damaged" in err and "coevo resume" in err
    assert cli(["resume", str(part), "--quiet"], capsys)[0] == 0  # which writes it again
    best = part / "best.pt"
    best.write_bytes(best.read_bytes()[:100])
    for command in ("export", "analyze"):
        code, _, err = cli([command, str(part)], capsys)
        assert code == 2 and one_line(err) and "best.pt (saved by the run) is damaged" in err


def test_analyze_on_too_few_rows_is_one_line(tmp_path, capsys):
    pytest.importorskip("skdim")
    data = rows_csv(tmp_path / "three.csv", n_rows=3)
    out = tmp_path / "run"
    code, _, err = cli(["run", "--quiet", "--out", str(out), *sets(PART + [f"data.source={data}"])], capsys)
    assert code == 0, err
    code, _, err = cli(["analyze", str(out)], capsys)
    assert code == 2 and one_line(err) and "at least 3 training rows" in err


def test_a_closed_pipe_is_quiet():
    proc = subprocess.run(f"'{sys.executable}' -m coevo operators | head -2", shell=True, capture_output=True,
                          text=True)
    assert proc.stdout.count("\n") == 2 and proc.stderr == ""


# --------------------------------------------------- 5. user code: SystemExit, file and line

def test_sys_exit_in_a_user_operator_is_an_error(tmp_path, user_ops, capsys):
    out = tmp_path / "run"
    code, _, err = cli(["run", "--quiet", "--out", str(out),
                        *sets(TINY + [f"prune.operator={user_ops}:leaves", "prune.probability=1"])], capsys)
    assert code == 2 and one_line(err) and f"{user_ops}.py:7" in err
    assert f"pruning operator '{user_ops}:leaves' raised SystemExit: 0" in err  # the plug-in's error, named
    assert not (out / "summary.json").exists()


def test_a_user_operators_error_names_its_file_and_line_and_debug_shows_the_traceback(tmp_path, user_ops, capsys,
                                                                                      monkeypatch):
    args = sets(TINY + [f"prune.operator={user_ops}:boom", "prune.probability=1"])
    code, _, err = cli(["run", "--quiet", "--out", str(tmp_path / "a"), *args], capsys)
    assert code == 2 and one_line(err) and f"{user_ops}.py:4 in boom" in err
    code, _, err = cli(["--debug", "run", "--quiet", "--out", str(tmp_path / "b"), *args], capsys)
    assert code == 2 and "Traceback" in err and f'{user_ops}.py", line 4, in boom' in err
    assert err.rstrip().splitlines()[-1].startswith("coevo: error: ")
    monkeypatch.setenv("COEVO_DEBUG", "1")
    code, _, err = cli(["run", "--quiet", "--out", str(tmp_path / "c"), *args], capsys)
    assert code == 2 and "Traceback" in err


# ------------------------------------------------------------------- 6. memory, schedules, lr

def test_a_run_that_cannot_fit_in_memory_is_refused_before_loading(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(rundir, "available_memory", lambda: 10_000_000)
    monkeypatch.setattr("coevo.data.load", lambda *a, **k: pytest.fail("the data were loaded"))
    out = tmp_path / "run"
    code, _, err = cli(["run", "--quiet", "--out", str(out), *sets(TINY + ["data.n_dims=100000"])], capsys)
    assert code == 2 and one_line(err) and "needs about" in err and "GB is available" in err
    assert not out.exists()
    monkeypatch.setenv("COEVO_SKIP_MEMORY_CHECK", "1")
    rundir.check_memory(runner.config_module.load(None, TINY + ["data.n_dims=100000"]))


def test_the_memory_estimate_reads_a_files_shape_without_loading_it(tmp_path):
    np.save(tmp_path / "rows.npy", np.zeros((7, 5), np.float32))
    rows_csv(tmp_path / "rows.csv", n_rows=9, n_cols=4)
    load = runner.config_module.load
    assert rundir.data_shape(load(None, [f"data.source={tmp_path / 'rows.npy'}"])) == (7, 5)
    assert rundir.data_shape(load(None, [f"data.source={tmp_path / 'rows.csv'}"])) == (9, 4)
    estimate, what = rundir.memory_estimate(load(None, ["data.n_dims=1000"]))
    assert 1e6 < estimate < 1e9 and "10 cell(s)" in what


@pytest.mark.parametrize("attr, shown", [("string_schedule", "'0.5' (str)"), ("bool_schedule", "True (bool)")])
def test_a_schedule_must_return_a_number(tmp_path, user_ops, capsys, attr, shown):
    code, _, err = cli(["run", "--quiet", "--out", str(tmp_path / "run"),
                        *sets(TINY + [f"prune.schedule={user_ops}:{attr}"])], capsys)
    assert code == 2 and one_line(err) and shown in err and not (tmp_path / "run").exists()


def test_a_learning_rate_outside_its_clip_range_is_refused(tmp_path, capsys):
    code, _, err = cli(["run", "--quiet", "--out", str(tmp_path / "run"),
                        *sets(TINY + ["train.lr_max=0.0001"])], capsys)
    assert code == 2 and one_line(err) and "train.learning_rate = 0.001 is outside" in err


def test_a_checkpoint_without_the_logbook_cuts_a_complete_file_and_refuses_a_short_one(part, capsys):
    """Checkpoints written before they held the logbook: the old behaviour where it is safe."""
    path, saved, _ = checkpoint.read_latest(part)
    state = checkpoint.state_from(saved, *_layouts(part), "cpu")
    text = (part / "logbook.csv").read_bytes()
    for stale in (part / checkpoint.CHECKPOINT_DIR).glob("gen_*.pt"):
        stale.unlink()
    state.generation = 1
    checkpoint.save(part, state, 1)  # no logbook, no meta
    assert rundir.restore_logbook(part / "logbook.csv", None, 1, "gen_000001.pt") is None
    assert (part / "logbook.csv").read_bytes() == b"".join(text.splitlines(keepends=True)[:2])
    (part / "logbook.csv").write_bytes(text.splitlines(keepends=True)[0])
    code, _, err = resume_to_4(part, capsys)
    assert code == 2 and one_line(err) and "does not hold the 1 complete rows" in err


def test_resume_removes_temporary_files_of_killed_writers(part, capsys):
    (part / "summary.json").unlink()
    stale = [part / ".summary.json.tmp999999", part / "plots" / ".loss.png.tmp999999",
             part / checkpoint.CHECKPOINT_DIR / ".gen_000003.pt.tmp999999"]
    for path in stale:
        path.write_bytes(b"half")
    assert cli(["resume", str(part), "--quiet"], capsys)[0] == 0
    assert not any(path.exists() for path in stale)


# ------------------------------------------------------- issue 32: what killed writers and odd names leave

def test_a_full_disk_names_the_file_it_could_not_write(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    real = os.fsync
    calls = []

    def fsync(fd):
        calls.append(fd)
        if len(calls) == 2:  # config.toml, then generation 0's checkpoint finds the disk full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd)

    monkeypatch.setattr(checkpoint.os, "fsync", fsync)
    code, _, err = cli(["run", "--quiet", "--out", str(out), *sets(TINY)], capsys)
    assert code == 2 and one_line(err)
    assert f"No space left on device ({out / 'checkpoints' / 'gen_000000.pt'})" in err


def test_a_directory_named_like_a_checkpoint_is_skipped(part, capsys):
    (part / "checkpoints" / "gen_000025.pt").mkdir()
    code, out, err = resume_to_4(part, capsys)
    assert code == 0, err
    assert json.loads((part / "summary.json").read_text())["generations"] == 4
    assert (part / "checkpoints" / "gen_000025.pt").is_dir()  # not the run's to remove


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize("command", ["export", "analyze"])
def test_export_and_analyze_remove_the_temporary_files_of_dead_writers(part, capsys, command):
    (part / "plots").mkdir(exist_ok=True)
    dead = [part / f".model.pt.tmp{dead_pid()}", part / "plots" / f".latent_pca.png.tmp{dead_pid()}"]
    live = part / f".summary.json.tmp{os.getppid()}"  # a live process's (a run's) write: left alone
    for path in dead + [live]:
        path.write_bytes(b"half")
    code, _, err = cli([command, str(part)], capsys)
    assert code == 0, err
    assert not any(p.exists() for p in dead) and live.read_bytes() == b"half"
