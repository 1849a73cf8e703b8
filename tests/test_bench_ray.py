"""`coevo bench --executor ray`: the same rows as the local executor, a worker killed mid-sweep
costs one retry of its trial and no row, a SIGKILLed driver leaves no Ray process behind, and a
missing Ray or an unreachable address is one line and exit 2. Runs on one local Ray with 2 CPUs."""

from __future__ import annotations

import importlib.util
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from coevo import bench
from coevo.bench import report as bench_report
from coevo.bench import spec as bench_spec
from coevo.cli import main
from coevo.rundir import lock
from coevo.rundir.reaper import descendants
from procs import still_running, tagged, tagged_env, wait_for
from test_bench import TINY_SPEC, write_spec

TIMING = {"seconds_per_generation", "wall_seconds"}


def comparable(out: Path) -> list[dict]:
    """The rows, in trial order, without the timing fields."""
    rows = bench_report.read_rows(out / bench_report.ROWS)
    return sorted(({k: v for k, v in r.items() if k not in TIMING} for r in rows),
                  key=lambda r: (r["combination_index"], r["seed"]))


def assert_same_rows(got: list[dict], want: list[dict]) -> None:
    """Equal rows, floats up to their last float32 bits: a process's SIMD code may sum a loss in
    another order than another's (tests/test_ray.py says where), so trials reproduce to ~1e-8."""
    assert [r.keys() for r in got] == [r.keys() for r in want]
    for a, b in zip(got, want):
        for key in a:
            if isinstance(a[key], float):
                assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-9), key
            else:
                assert a[key] == b[key], key


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def local_rows(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("local") / "bench"
    outcome = bench.run(bench_spec.parse(TINY_SPEC), out, jobs=1, quiet=True)
    assert outcome.ran == 4 and not outcome.failed
    return comparable(out)


@pytest.mark.ray
def test_ray_executor_gives_the_local_executors_rows(local_ray, local_rows, tmp_path, capsys):
    spec = write_spec(tmp_path)
    out = tmp_path / "bench"
    assert main(["bench", str(spec), "--out", str(out), "--executor", "ray", "--quiet"]) == 0
    assert "4 trials run, 0 already done, 0 failed" in capsys.readouterr()[0]
    assert_same_rows(comparable(out), local_rows)
    assert (out / "report.md").exists() and not (out / lock.LOCK_FILE).exists()
    assert local_ray.is_initialized()  # a Ray the executor did not start is left running


@pytest.mark.ray
def test_a_ray_worker_killed_mid_sweep_costs_one_retry_and_no_row(local_ray, local_rows, tmp_path):
    """One trial's first worker is SIGKILLed by the test after its first checkpoint (while it
    holds the trial's lock). Ray runs the task again on another worker, which takes the lock the
    kernel released, resumes from that checkpoint and finishes: every row, as the local one."""
    spec = bench_spec.parse(TINY_SPEC)
    victim = str(spec.expand()[3].run_dir)
    attempts, pid_file = tmp_path / "attempts", tmp_path / "victim.pid"
    attempts.mkdir()

    def task(config: dict, run_dir: str) -> dict:
        import os
        import time

        from coevo import bench as bench_module
        from coevo.rundir import checkpoint

        name = run_dir.replace("/", "_")
        with open(attempts / name, "a") as fh:
            fh.write(f"{os.getpid()}\n")
        first = len((attempts / name).read_text().split()) == 1
        save = checkpoint.save
        if run_dir.endswith(victim) and first:
            def save_then_wait(*args, **kwargs):
                path = save(*args, **kwargs)
                pid_file.write_text(str(os.getpid()))
                time.sleep(120)  # the test kills this worker here
                return path
            checkpoint.save = save_then_wait
        try:
            return bench_module.execute_trial(config, run_dir)
        finally:
            checkpoint.save = save

    killed = []

    def killer() -> None:
        pid = int(wait_for(lambda: pid_file.exists() and pid_file.read_text(), 120, "the victim's pid"))
        assert lock.holder_of(tmp_path / "bench" / victim).startswith(f"pid {pid} ")
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    outcome = bench.run(spec, tmp_path / "bench", quiet=True, executor=bench.RayExecutor(task=task))
    thread.join(30)
    assert killed, "the victim was never killed"
    assert outcome.ran == 4 and not outcome.failed
    tries = {p.name: p.read_text().split() for p in attempts.iterdir()}
    assert sorted(map(len, tries.values())) == [1, 1, 1, 2]
    retried = next(v for v in tries.values() if len(v) == 2)
    assert int(retried[0]) == killed[0] and retried[1] != retried[0]
    assert_same_rows(comparable(tmp_path / "bench"), local_rows)


@pytest.mark.ray
def test_a_sigkilled_ray_bench_leaves_no_ray_process(tmp_path):
    """The driver starts its own local Ray (GCS, raylet, workers): SIGKILL it mid-sweep, and
    within seconds none of them lives on (Ray ties GCS, raylet and workers to the driver;
    coevo.rundir.reaper the agents, which would otherwise linger for up to a minute)."""
    pytest.importorskip("ray")
    slow = TINY_SPEC.replace("trials = 2", "trials = 1").replace("generations = 2", "generations = 2000")
    spec = write_spec(tmp_path, slow)
    out = tmp_path / "out"
    driver = subprocess.Popen([sys.executable, "-m", "coevo", "bench", str(spec), "--out", str(out), "--executor",
                               "ray", "--jobs", "2", "--quiet"], env=tagged_env("sigkill-ray"),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    trials = [out / t.run_dir for t in bench_spec.parse(slow).expand()]
    try:
        wait_for(lambda: all((t / "logbook.csv").exists() for t in trials), 180, "both trials to start")
        time.sleep(1.5)  # the watchdog notes the driver's processes every second
        # what the driver started: GCS, raylet, its agents and workers, the watchdog (the agents
        # rename themselves, which may blank their environment: found through the tree)
        tree = descendants(driver.pid)
        names = {(Path("/proc") / str(pid) / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
                 for pid in tree}
        assert {"ray::DashboardAgent", "ray::RuntimeEnvAgent"} <= names and len(tree) >= 6, names
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
    wait_for(lambda: not still_running(tree) and not tagged("sigkill-ray"), 15,
             "every process of the killed bench to exit")
    for trial in trials:
        with lock.hold(trial):
            pass


def test_missing_ray_and_unreachable_address_are_one_line_exit_2(tmp_path, monkeypatch, capsys):
    spec = write_spec(tmp_path)
    out = tmp_path / "out"
    code = main(["bench", str(spec), "--out", str(out), "--ray-address", "auto"])
    _, err = capsys.readouterr()
    assert code == 2 and err == "coevo: error: --ray-address needs --executor ray\n"
    if importlib.util.find_spec("ray") is not None:
        with socket.socket() as sock:  # a port nobody listens on: the connection is refused
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        code = main(["bench", str(spec), "--out", str(out), "--executor", "ray", "--ray-address", f"127.0.0.1:{port}"])
        _, err = capsys.readouterr()
        assert code == 2 and err.count("\n") == 1 and f"--ray-address 127.0.0.1:{port}: cannot reach it" in err
        assert not out.exists()
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    code = main(["bench", str(spec), "--out", str(out), "--executor", "ray"])
    _, err = capsys.readouterr()
    assert code == 2 and err.count("\n") == 1
    assert "--executor ray needs Ray" in err and "pip install 'coevo[ray]'" in err
    assert not out.exists()
