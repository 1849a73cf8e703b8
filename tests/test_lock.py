"""One writer per directory, and workers that die with their driver: a run or trial directory
held by a live process is not written by a second one, a SIGKILLed holder leaves no stale lock,
and a SIGKILLed `coevo bench --jobs 2` leaves no live worker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from coevo import bench
from coevo.bench import report as bench_report
from coevo.bench import spec as bench_spec
from coevo.cli import main
from coevo.rundir import lock
from conftest import TINY
from procs import alive, children, tagged_env, wait_for
from test_bench import TINY_SPEC, write_spec

HOLDER = """
import sys, time
from coevo.rundir import lock
with lock.hold(sys.argv[1]):
    print("held", flush=True)
    time.sleep(120)
"""


def sets(overrides: list[str]) -> list[str]:
    return [x for o in overrides for x in ("--set", o)]


@pytest.fixture
def holder():
    """Start another process that holds a directory's lock until killed (SIGKILL)."""
    started = []

    def start(directory: Path) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(directory)], stdout=subprocess.PIPE, text=True)
        started.append(proc)
        wait_for(lambda: lock.holder_of(directory) == f"pid {proc.pid} on {os.uname().nodename}", 60,
                 "the holder to take the lock")
        return proc

    yield start
    for proc in started:
        proc.kill()
        proc.wait(timeout=30)


def test_a_run_directory_held_by_a_live_writer_is_not_written(tmp_path, holder, capsys):
    run_dir = tmp_path / "run"
    proc = holder(run_dir)
    code = main(["run", "--quiet", "--out", str(run_dir), *sets(TINY)])
    _, err = capsys.readouterr()
    assert code == 2 and err.count("\n") == 1
    assert f"{run_dir} is being written by another live process (pid {proc.pid} on" in err
    assert [p.name for p in run_dir.iterdir()] == [lock.LOCK_FILE]  # nothing written
    # a trial waits a bounded time for the writer, then fails and writes nothing
    with pytest.raises(lock.DirectoryLocked, match=f"pid {proc.pid} .*waited"):
        old, bench.TRIAL_LOCK_WAIT_S = bench.TRIAL_LOCK_WAIT_S, 1.0
        try:
            bench.execute_trial(bench_spec.parse(TINY_SPEC).expand()[0].config(), str(run_dir))
        finally:
            bench.TRIAL_LOCK_WAIT_S = old
    assert [p.name for p in run_dir.iterdir()] == [lock.LOCK_FILE]
    # the holder is SIGKILLed: the kernel drops its lock, the stale file does not block
    proc.kill()
    proc.wait(timeout=30)
    assert main(["run", "--quiet", "--out", str(run_dir), *sets(TINY)]) == 0
    capsys.readouterr()
    assert (run_dir / "summary.json").exists() and not (run_dir / lock.LOCK_FILE).exists()
    # resume takes the lock too
    proc = holder(run_dir)
    code = main(["resume", "--quiet", str(run_dir), "--generations", "4"])
    _, err = capsys.readouterr()
    assert code == 2 and f"pid {proc.pid}" in err and err.count("\n") == 1
    assert json.loads((run_dir / "summary.json").read_text())["generations"] == 3


def test_coevo_run_with_the_ray_engine_has_one_writer_too(tmp_path, holder, capsys):
    pytest.importorskip("ray")
    run_dir = tmp_path / "run"
    proc = holder(run_dir)
    code = main(["run", "--quiet", "--out", str(run_dir), *sets(TINY + ["run.engine=ray"])])
    _, err = capsys.readouterr()
    assert code == 2 and err.count("\n") == 1 and f"pid {proc.pid}" in err
    assert [p.name for p in run_dir.iterdir()] == [lock.LOCK_FILE]


def test_locks_nest_in_one_thread_and_exclude_other_threads(tmp_path):
    with lock.hold(tmp_path / "d") as d:
        with lock.hold(d):
            assert lock.held(d)
        assert lock.held(d)
        errors = []
        thread = threading.Thread(target=lambda: errors.append(pytest.raises(lock.DirectoryLocked,
                                                                             lambda: lock.hold(d).__enter__())))
        thread.start()
        thread.join(30)
        assert errors and "another thread" in str(errors[0].value)
    assert not lock.held(d) and lock.is_empty(d)


def test_a_bench_directory_has_one_driver_and_a_locked_trial_is_reported(tmp_path, holder, capsys, monkeypatch):
    spec = write_spec(tmp_path, TINY_SPEC.replace("trials = 2", "trials = 1"))
    out = tmp_path / "out"
    proc = holder(out)
    code = main(["bench", str(spec), "--out", str(out), "--jobs", "1", "--quiet"])
    _, err = capsys.readouterr()
    assert code == 2 and err.count("\n") == 1 and f"pid {proc.pid}" in err
    assert [p.name for p in out.iterdir()] == [lock.LOCK_FILE]
    proc.kill()
    proc.wait(timeout=30)

    # one trial's directory is held by a live writer: that trial fails, the other one runs
    monkeypatch.setenv("COEVO_TRIAL_LOCK_WAIT_S", "1.0")  # trials run in spawned workers: they read it there
    out = tmp_path / "out2"
    trials = bench.prepare(bench_spec.parse(spec.read_text()), out)  # a bench directory with its spec
    proc = holder(out / trials[1].run_dir)
    code = main(["bench", str(spec), "--out", str(out), "--jobs", "1", "--quiet"])
    stdout, stderr = capsys.readouterr()
    assert code == 2 and "1 trials run, 0 already done, 1 failed" in stdout + stderr
    assert f"{out / trials[1].run_dir} is being written by another live process (pid {proc.pid}" in stderr
    assert [r["seed"] for r in bench_report.read_rows(out / bench_report.ROWS)] == [trials[0].seed]
    assert [p.name for p in (out / trials[1].run_dir).iterdir()] == [lock.LOCK_FILE]
    proc.kill()
    proc.wait(timeout=30)
    assert main(["bench", str(spec), "--out", str(out), "--jobs", "1", "--quiet"]) == 0
    assert "1 trials run, 1 already done, 0 failed" in capsys.readouterr()[0]
    assert not (out / lock.LOCK_FILE).exists()


SLOW_SPEC = TINY_SPEC.replace("trials = 2", "trials = 1").replace("generations = 2", "generations = 2000")


def test_a_sigkilled_bench_leaves_no_live_worker(tmp_path):
    """`coevo bench --jobs 2` killed with SIGKILL mid-sweep: its two pool workers exit within
    seconds (parent-death signal), and a re-run can take over their trial directories at once."""
    spec = write_spec(tmp_path, SLOW_SPEC)
    out = tmp_path / "out"
    driver = subprocess.Popen([sys.executable, "-m", "coevo", "bench", str(spec), "--out", str(out), "--jobs", "2",
                               "--quiet"], env=tagged_env("sigkill-local"), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        trials = [out / t.run_dir for t in bench_spec.parse(SLOW_SPEC).expand()]
        # both trials are running: each has written its logbook
        wait_for(lambda: all((t / "logbook.csv").exists() for t in trials), 120, "both trials to start")
        holders = {int(lock.holder_of(t).split()[1]) for t in trials}
        workers = [pid for pid in children(driver.pid) if pid in holders]
        assert len(workers) == 2, (holders, children(driver.pid))
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
    wait_for(lambda: not any(alive(pid) for pid in workers), 10, f"workers {workers} to exit after their driver")
    for trial in trials:  # no live writer is left: a second one gets the directory at once
        with lock.hold(trial):
            pass
