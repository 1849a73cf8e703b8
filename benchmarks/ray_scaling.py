"""Seconds per generation with the ray engine on 1, 2 and 4 workers against the local engine.

    .venv/bin/python benchmarks/ray_scaling.py                  # 10x10 torus, paper network, D = 1000
    .venv/bin/python benchmarks/ray_scaling.py --generations 2  # quicker

A 10x10 torus with a von Neumann neighbourhood of radius 1 (s = 5) and the paper's network
(61,670 parameters per pair at D = 1000). Each configuration runs in its own fresh process
(spawn); the ray ones start their own local Ray, with one torch thread per worker and in the
driver. Figures are medians over generations after the first (which starts the workers and
loads the Numba kernels). Besides seconds per generation, each row splits the generation into the engine's
calls (evaluate + vary, shipping included), the driver's logging measure (losses of every
centre on the validation split) and the rest (selection, bookkeeping), and
counts the bytes the driver ships to workers and gets back. Prints a table and writes
``benchmarks/results/ray_scaling.json``. The machine is small and may be shared: read ratios.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import statistics
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
GRID = ["grid.topology=torus", "grid.shape=[10, 10]", "grid.neighbourhood=von_neumann", "grid.radius=1"]
CONFIGS = {  # name: (engine, workers, torch threads of the driver and of each worker)
    "local, 1 thread": ("local", 0, 1),
    "local, 2 threads": ("local", 0, 2),
    "ray, 1 worker": ("ray", 1, 1),
    "ray, 2 workers": ("ray", 2, 1),
    "ray, 4 workers": ("ray", 4, 1),
}
BASE = "local, 1 thread"


class Timed:
    """An engine wrapper that records how long each generation waits on evaluate and vary."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.seconds: list[float] = []

    def start(self, shared, neighbours) -> None:
        self.engine.start(shared, neighbours)

    def evaluate(self, *args):
        t0 = time.perf_counter()
        out = self.engine.evaluate(*args)
        self.seconds.append(time.perf_counter() - t0)
        return out

    def vary(self, *args):
        t0 = time.perf_counter()
        out = self.engine.vary(*args)
        self.seconds[-1] += time.perf_counter() - t0
        return out

    def close(self) -> None:
        self.engine.close()


def _measure(engine_name: str, workers: int, threads: int, generations: int) -> dict:
    """Run a few generations in this (fresh) process; per-generation timings and bytes shipped."""
    import numpy as np

    from coevo import config
    from coevo.engines import LocalEngine
    from coevo.evolve import coevolve
    from coevo.observers import LogbookRecorder
    from coevo.problem import build

    overrides = GRID + [f"run.generations={generations}", "run.checkpoint_every=0", f"run.threads={threads}"]
    problem = build(config.load(None, overrides))
    shipped = [0]
    if engine_name == "ray":
        from coevo.engines import ray_engine

        pack = ray_engine.stack_arrays

        def counting(stack, rows, fields=ray_engine.FIELDS):
            arrays = pack(stack, rows, fields)
            shipped[0] += sum(a.nbytes for a in arrays.values())
            return arrays

        ray_engine.stack_arrays = counting  # the driver's side only: workers run their own copy
        t0 = time.perf_counter()
        inner = ray_engine.RayEngine("", workers)
    else:
        t0 = time.perf_counter()
        inner = LocalEngine()
    engine = Timed(inner)
    rec = LogbookRecorder()
    coevolve(problem, [rec], engine=engine)
    total = time.perf_counter() - t0
    seconds = rec.logbook.select("seconds")[1:]
    measure = rec.logbook.select("measure_seconds")[1:]
    engine_s = engine.seconds[1:]
    # vary sends back every cell's new pair: parameters, mask, two moments (4 + 1 + 4 + 4 bytes each), two steps
    cells = problem.config.grid.shape[0] * problem.config.grid.shape[1]
    back = cells * ((problem.enc_layout.size + problem.dec_layout.size) * 13 + 16)
    return {
        "seconds_per_generation": statistics.median(seconds),
        "engine_seconds": statistics.median(engine_s),
        "measure_seconds": statistics.median(measure),
        "other_driver_seconds": statistics.median(s - e - m for s, e, m in zip(seconds, engine_s, measure)),
        "first_generation_seconds": rec.logbook.select("seconds")[0],
        "start_and_close_seconds": total - sum(rec.logbook.select("seconds")),
        "mib_to_workers_per_generation": shipped[0] / generations / 2**20 if engine_name == "ray" else 0.0,
        "mib_from_workers_per_generation": back / 2**20 if engine_name == "ray" else 0.0,
        "generations_timed": len(seconds),
        "torch_threads": threads,
        "load_average_1min_at_end": os.getloadavg()[0],
        "numpy": np.__version__,
    }


def _child(queue, *args) -> None:
    queue.put(_measure(*args))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generations", type=int, default=3, help="generations per configuration (>= 2)")
    parser.add_argument("--only", nargs="*", choices=list(CONFIGS), help="run only these configurations")
    args = parser.parse_args()
    ctx = mp.get_context("spawn")
    rows = {}
    for name in args.only or CONFIGS:
        engine, workers, threads = CONFIGS[name]
        queue = ctx.Queue()
        proc = ctx.Process(target=_child, args=(queue, engine, workers, threads, args.generations))
        proc.start()
        rows[name] = queue.get()
        proc.join()
        print(f"{name:<18} {rows[name]['seconds_per_generation']:7.2f} s/generation", flush=True)
    base = rows.get(BASE) or next(iter(rows.values()))
    print()
    print(f"{'configuration':<18} {'s/gen':>7} {'speed-up':>9} {'engine':>7} {'measure':>8} {'other':>6} "
          f"{'MiB out':>8} {'MiB back':>9} {'load':>5}")
    for name, r in rows.items():
        speedup = base["seconds_per_generation"] / r["seconds_per_generation"]
        print(f"{name:<18} {r['seconds_per_generation']:7.2f} {speedup:8.2f}x {r['engine_seconds']:7.2f} "
              f"{r['measure_seconds']:8.2f} {r['other_driver_seconds']:6.2f} "
              f"{r['mib_to_workers_per_generation']:8.1f} {r['mib_from_workers_per_generation']:9.1f} "
              f"{r['load_average_1min_at_end']:5.1f}")
    print(f"(speed-up against {BASE!r}; engine: evaluate + vary, shipping included; measure: the driver's "
          f"logging losses; load: 1-minute load average of the machine)")
    RESULTS.mkdir(exist_ok=True)
    out = {
        "setting": "10x10 torus, von Neumann r=1 (s=5), paper network, D=1000, 1000 training rows, batch 5",
        "generations": args.generations,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "load_average_at_end": os.getloadavg()},
        "results": rows,
    }
    path = RESULTS / "ray_scaling.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
