"""Compile coevo's Numba kernels ahead of the first run (``make install`` calls this).

Numba compiles a kernel on its first call and caches the machine code (``cache=True``) beside
the source, so only the first run on a machine pays for it. Running a tiny coevolution and a
tiny canonical run here, at install time, compiles the kernels a default run uses: the
training and loss kernels, and the pruning selector's. Their types do not depend on the sizes,
so the tiny runs compile exactly what a full run needs. Other operators' kernels compile on
their first use. ``python -m coevo.training.warmup`` prints what it compiled and how long it took.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

TINY = {"run__generations": 2, "run__checkpoint_every": 0, "data__n_dims": 40, "data__n_clusters": 3,
        "data__rows_per_cluster": 10, "model__hidden": (8,), "model__latent": 3, "grid__cells": 4}


def warm() -> float:
    """Run the tiny runs; returns the seconds spent compiling (0 when the cache was warm)."""
    from coevo import runner
    from coevo.config import Config
    from coevo.training import compile_watch

    before = compile_watch.seconds()
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("coevolution", "canonical"):
            runner.start(Config().replace(run__mode=mode, **TINY), out=Path(tmp) / mode, quiet=True)
    return compile_watch.seconds() - before


def main() -> int:
    t0 = time.perf_counter()
    compiled = warm()
    print(f"coevo: kernels compiled and cached in {compiled:.1f} s (warm-up {time.perf_counter() - t0:.1f} s)",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
