"""First-run compile time (issue 22): how long a machine's first run spends compiling Numba
kernels, and what is left for the first run once the install step has run ``coevo.training.warmup``.

Each measurement is a fresh process with an empty Numba cache (``NUMBA_CACHE_DIR`` in a
temporary directory) that runs what ``coevo.training.warmup`` runs (a tiny coevolution and a tiny
canonical run, whose kernels have a full run's types) and reports ``compile_watch.seconds()``:

- ``cold``: the kernels compiled from nothing (what a first run paid before the warm-up step);
- ``after warm-up``: a second process on the same cache (what the first run pays now: nothing);
- with ``--baseline-python PYTHON`` (an interpreter whose coevo is an older version, e.g. a
  virtualenv installed from an older checkout), its cold compile in the same session, so the
  figures are a ratio on the same machine at the same load.

    .venv/bin/python benchmarks/first_run_compile.py [--baseline-python /path/to/old/.venv/bin/python] [--repeat 3]

Writes ``benchmarks/results/first_run_compile.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"

PROBE = """
import json, sys, tempfile, time
from pathlib import Path
t0 = time.perf_counter()
from coevo import runner
from coevo.config import Config
try:
    from coevo.training import compile_watch
except ImportError:  # a baseline interpreter's coevo from before the layout of issue 22
    from coevo import compile_watch
TINY = {"run__generations": 2, "run__checkpoint_every": 0, "data__n_dims": 40, "data__n_clusters": 3,
        "data__rows_per_cluster": 10, "model__hidden": (8,), "model__latent": 3, "grid__cells": 4}
with tempfile.TemporaryDirectory() as tmp:
    for mode in ("coevolution", "canonical"):
        runner.start(Config().replace(run__mode=mode, **TINY), out=Path(tmp) / mode, quiet=True)
print(json.dumps({"compile_seconds": compile_watch.seconds(), "total_seconds": time.perf_counter() - t0}))
"""


def probe(cache: Path, python: str) -> dict:
    """One fresh process of ``python`` (and its coevo) with Numba's cache in ``cache``."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache))
    out = subprocess.run([python, "-c", PROBE], env=env, cwd=tempfile.gettempdir(),
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-python", help="an interpreter whose coevo is an older version, to compare with")
    parser.add_argument("--repeat", type=int, default=1,
                        help="cold compiles per side, alternating baseline and now; the minimum is reported "
                             "(the machine's load changes between probes)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    result: dict = {"repeat": args.repeat}
    with tempfile.TemporaryDirectory() as tmp:
        colds: dict[str, list[dict]] = {"baseline_cold": [], "cold": []}
        for i in range(args.repeat):
            if args.baseline_python:
                colds["baseline_cold"].append(probe(Path(tmp) / f"baseline{i}", args.baseline_python))
                print(f"baseline, cold cache: {colds['baseline_cold'][-1]['compile_seconds']:.1f} s compiling")
            colds["cold"].append(probe(Path(tmp) / f"now{i}", sys.executable))
            print(f"now, cold cache:      {colds['cold'][-1]['compile_seconds']:.1f} s compiling (the warm-up's cost)")
        for key, runs in colds.items():
            if runs:
                result[key] = min(runs, key=lambda r: r["compile_seconds"])
                result[key + "_all"] = [r["compile_seconds"] for r in runs]
        result["after_warm_up"] = probe(Path(tmp) / "now0", sys.executable)
        print(f"now, after warm-up:   {result['after_warm_up']['compile_seconds']:.1f} s compiling "
              f"({result['after_warm_up']['total_seconds']:.1f} s for the tiny runs, imports included)")
    if "baseline_cold" in result:
        result["cold_ratio"] = result["cold"]["compile_seconds"] / result["baseline_cold"]["compile_seconds"]
        print(f"cold compile, now / baseline (minimum of {args.repeat} each): {result['cold_ratio']:.2f}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "first_run_compile.json").write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
