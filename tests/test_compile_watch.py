"""A first run's Numba compile is announced on stderr and kept out of the generations' seconds."""

from __future__ import annotations

import numba

from coevo.training import compile_watch


def test_a_compile_is_announced_once_and_timed(monkeypatch, capsys):
    monkeypatch.setattr(compile_watch._WATCH, "announced", False)
    before = compile_watch.seconds()

    @numba.njit  # no cache: compiled here, whatever the machine's cache holds
    def twice(x):
        return 2 * x

    assert twice(3) == 6
    assert twice(4.0) == 8.0  # a second signature compiles again, without a second message
    assert compile_watch.seconds() > before
    err = capsys.readouterr().err
    assert err.count(compile_watch.MESSAGE) == 1
    settled = compile_watch.seconds()
    assert twice(5) == 10 and compile_watch.seconds() == settled  # a compiled call is not a compile


def test_a_generation_without_compiles_loses_nothing(tiny_overrides, tmp_path, capsys):
    import json

    from coevo.cli import main

    assert main(["run", "--out", str(tmp_path / "run"), *[x for o in tiny_overrides for x in ("--set", o)]]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert 0 < summary["seconds_per_generation"] < summary["wall_seconds"]


def test_after_the_warm_up_a_default_run_compiles_nothing():
    """make install runs coevo.training.warmup, so the first real run loads every kernel it needs."""
    import subprocess
    import sys

    from coevo.training import warmup

    warmup.warm()
    # a new process: what it needs comes from Numba's cache on disk, not from this process
    out = subprocess.run([sys.executable, "-c", "from coevo.training import warmup; print(warmup.warm())"],
                         capture_output=True, text=True, check=True)
    assert float(out.stdout.strip()) == 0.0, out.stderr
