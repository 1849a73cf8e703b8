"""`coevo bench` faults: a foreign run in a trial directory, a trial whose process exits by itself,
Ctrl-C to the whole process group, and the exit code of failed trials."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from coevo.bench import report as bench_report
from coevo.cli import main
from procs import wait_for

SPEC = """
name = "faults"
trials = {trials}
generations = {generations}

[base.run]
checkpoint_every = 1
[base.data]
n_dims = 40
n_clusters = 3
rows_per_cluster = 10
[base.model]
hidden = [8]
latent = 3
[base.grid]
cells = 4
[base.prune]
schedule = "fixed"

[[combination]]
operator = "none"
"""

EXITING_OPERATOR = """
import os


def bye(net, amount, rng, context):
    os._exit(0)
"""


def write_spec(tmp_path: Path, trials: int = 1, generations: int = 1, extra: str = "") -> Path:
    path = tmp_path / "spec.toml"
    path.write_text(SPEC.format(trials=trials, generations=generations) + extra)
    return path


def rows_of(out: Path) -> list[dict]:
    return bench_report.read_rows(out / bench_report.ROWS)


def coevo(args: list[str], cwd: Path, **kwargs) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(cwd), os.environ.get("PYTHONPATH")])))
    return subprocess.Popen([sys.executable, "-m", "coevo", *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_a_foreign_run_in_a_trial_directory_is_refused_in_one_line_and_left_alone(tmp_path, capsys):
    out = tmp_path / "bench"
    assert main(["bench", str(write_spec(tmp_path, trials=1)), "--out", str(out), "--jobs", "1", "--quiet"]) == 0
    capsys.readouterr()
    combination = rows_of(out)[0]["run_dir"].rsplit("/", 1)[0]
    seed1, seed2 = out / combination / "seed-1", out / combination / "seed-2"
    rows_before = (out / bench_report.ROWS).read_bytes()

    # a finished run of seed 1 copied in as seed 2's: its config says seed 1
    shutil.copytree(seed1, seed2)
    before = snapshot(seed2)
    assert main(["bench", str(write_spec(tmp_path, trials=2)), "--out", str(out), "--jobs", "1", "--quiet"]) == 2
    _, err = capsys.readouterr()
    assert err.count("\n") == 1 and err.startswith("coevo: error: ") and "Traceback" not in err
    assert str(seed2) in err and "run.seed = 1" in err and "run.seed = 2" in err and "move it away" in err
    assert snapshot(seed2) == before and (out / bench_report.ROWS).read_bytes() == rows_before

    # its config.toml edited to say seed 2: its data (drawn with seed 1) still are not seed 2's
    config = seed2 / "config.toml"
    config.write_text(config.read_text().replace("seed = 1", "seed = 2"))
    before = snapshot(seed2)
    assert main(["bench", str(write_spec(tmp_path, trials=2)), "--out", str(out), "--jobs", "1", "--quiet"]) == 2
    _, err = capsys.readouterr()
    assert err.count("\n") == 1 and str(seed2) in err and "other data" in err and "splits_sha256" in err
    assert snapshot(seed2) == before and (out / bench_report.ROWS).read_bytes() == rows_before

    # moved away, the trial runs there, and its row carries its own run's numbers
    shutil.rmtree(seed2)
    assert main(["bench", str(write_spec(tmp_path, trials=2)), "--out", str(out), "--jobs", "1", "--quiet"]) == 0
    row = {r["seed"]: r for r in rows_of(out)}[2]
    summary = json.loads((seed2 / "summary.json").read_text())
    assert summary["seed"] == 2 and row["test_loss"] == summary["test_loss"] and summary["data"]["splits_sha256"]


def test_a_trial_whose_process_exits_by_itself_fails_in_one_line_and_the_sweep_goes_on(tmp_path):
    """A user operator that calls os._exit(0): the trial writes no summary, so it fails (exit 2,
    one line on stderr naming it), without retries, and the other trials still get their rows."""
    (tmp_path / "exiting.py").write_text(EXITING_OPERATOR)
    spec = write_spec(tmp_path, trials=1, extra='\n[[combination]]\noperator = "exiting:bye"\n'
                                                 'prune.probability = 1.0\n')
    proc = coevo(["bench", str(spec), "--out", "bench", "--jobs", "1", "--quiet"], tmp_path)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 2, (stdout, stderr)
    lines = [line for line in stderr.splitlines() if line.startswith("coevo:")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert "exiting_bye" in lines[0] and "exit code 0" in lines[0] and "summary.json" in lines[0]
    assert "1 trials run, 0 already done, 1 failed" in stdout
    assert [r["operator"] for r in rows_of(tmp_path / "bench")] == ["none"]


def test_ctrl_c_to_the_process_group_keeps_finished_rows_starts_nothing_and_exits_130(tmp_path):
    """SIGINT to the whole group, as a terminal sends it: exit 130 soon (no trial run to its end),
    every trial that wrote summary.json has its row, and re-running finishes the sweep."""
    spec = write_spec(tmp_path, trials=6, generations=30)
    proc = coevo(["bench", str(spec), "--out", "bench", "--jobs", "2", "--quiet"], tmp_path, start_new_session=True)
    rows = tmp_path / "bench" / bench_report.ROWS
    try:
        wait_for(lambda: rows.exists() and rows.read_text().count("\n") >= 1, 240, "the first row")
        os.killpg(proc.pid, signal.SIGINT)
        t0 = time.monotonic()
        stdout, stderr = proc.communicate(timeout=60)
        seconds = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    print(f"Ctrl-C to exit: {seconds:.2f} s")
    assert proc.returncode == 130, (stdout, stderr)
    assert stderr.strip().splitlines()[-1].startswith("coevo: interrupted") and "Traceback" not in stderr, stderr
    assert seconds < 20  # a generation here is well under a second; a whole trial takes longer
    finished = {p.parent.name for p in (tmp_path / "bench" / "trials").rglob("summary.json")}
    written = {f"seed-{r['seed']}" for r in rows_of(tmp_path / "bench")}
    assert finished == written and 1 <= len(written) < 6

    again = coevo(["bench", str(spec), "--out", "bench", "--jobs", "2", "--quiet"], tmp_path)
    stdout, stderr = again.communicate(timeout=300)
    assert again.returncode == 0, (stdout, stderr)
    assert f"{6 - len(written)} trials run, {len(written)} already done, 0 failed" in stdout
    assert sorted(r["seed"] for r in rows_of(tmp_path / "bench")) == [1, 2, 3, 4, 5, 6]


def test_a_trial_that_fails_in_user_code_is_one_stderr_line_and_exit_2(tmp_path, capsys, monkeypatch):
    """Exit 1 is for coevo's own bugs: a trial failed by its operator is exit 2, one line per trial."""
    (tmp_path / "raising.py").write_text("def boom(net, amount, rng, context):\n    raise ValueError('no')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
    spec = write_spec(tmp_path, trials=1, extra='\n[[combination]]\noperator = "raising:boom"\n'
                                                 'prune.probability = 1.0\n')
    code = main(["bench", str(spec), "--out", str(tmp_path / "bench"), "--jobs", "1", "--quiet"])
    stdout, stderr = capsys.readouterr()
    assert code == 2
    lines = [line for line in stderr.splitlines() if line.startswith("coevo:")]
    assert len(lines) == 1 and "raising_boom" in lines[0] and "ValueError" in lines[0] and "re-run" in lines[0]
    assert "1 trials run, 0 already done, 1 failed" in stdout
