"""Seconds per generation with the ray engine on 1, 2 and 4 workers against the local engine.

    .venv/bin/python benchmarks/ray_scaling.py                  # 10x10 torus, paper network, D = 1000
    .venv/bin/python benchmarks/ray_scaling.py --generations 2  # quicker

A 10x10 torus with a von Neumann neighbourhood of radius 1 (s = 5) and the paper's network
(61,670 parameters per pair at D = 1000). Each configuration runs in its own fresh process
(spawn); the ray ones start their own local Ray, with one torch thread per worker and in the
driver. Figures are medians over generations after the first (which starts the workers and
loads the Numba kernels). Besides seconds per generation, each row splits the generation into the
engine's calls (evaluate + vary, shipping included), the logbook's measure (validation losses and
kept fractions of every centre: in the driver before the ray engine kept its centres on the
workers, on the workers since) and the rest, and gives the driver's own share: its wall seconds
outside ``ray.get`` (waiting and deserialising results are inside) and its process's CPU seconds
per generation. Bytes per generation, counted as numpy arrays' bytes (not references, scalars or
pickle framing): what ``ray.get`` returns to the driver (a wrapper, for any engine); for the
engine with resident centres its own ``traffic`` counter (driver to workers, worker to worker,
copies kept in the object store); for the engine before it, the arrays it packed for the workers.
Prints a table and writes ``benchmarks/results/ray_scaling.json`` (``--out`` elsewhere). The
machine is small and may be shared: read ratios, and compare versions in the same session.
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

    def __getattr__(self, name):  # start, load, measure, centres, close, traffic: the engine's own
        return getattr(self.engine, name)

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


class DriverClock:
    """Wraps ``ray.get`` in this (the driver's) process: how long the driver blocks waiting on
    workers, and the bytes of the numpy arrays (plus strings/bytes) that come back to it.
    ``snapshot`` after each generation gives per-generation deltas, with the driver's CPU time."""

    def __init__(self) -> None:
        self.wait = 0.0
        self.back = 0

    def install(self) -> None:
        import ray

        get = ray.get

        def timed_get(refs, *args, **kwargs):
            t0 = time.perf_counter()
            try:
                out = get(refs, *args, **kwargs)
            finally:
                self.wait += time.perf_counter() - t0
            self.back += _nbytes(out)
            return out

        ray.get = timed_get  # the engine calls ray.get through the module: this one from now on


def _nbytes(value) -> int:
    """Bytes of the arrays (and byte strings) in a result: what the driver receives, less pickle framing."""
    import numpy as np

    if isinstance(value, np.ndarray):
        return value.nbytes
    if isinstance(value, (bytes, bytearray)):
        return len(value)
    if isinstance(value, dict):
        return sum(_nbytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_nbytes(v) for v in value)
    if hasattr(value, "__dataclass_fields__"):
        return sum(_nbytes(getattr(value, f)) for f in value.__dataclass_fields__)
    return 0


class GenerationClock:
    """An observer: per generation, the wall seconds (between consecutive generations' ends), the
    driver's CPU seconds (process time: its Python thread plus Ray's and BLAS's threads in this
    process), the seconds blocked in ``ray.get`` and the bytes received through it."""

    def __init__(self, clock: DriverClock) -> None:
        self.clock = clock
        self.rows: list[dict] = []
        self._last = None

    def on_start(self, config, state) -> None:
        self._last = (time.perf_counter(), time.process_time(), self.clock.wait, self.clock.back)

    def on_generation(self, row, state) -> None:
        now = (time.perf_counter(), time.process_time(), self.clock.wait, self.clock.back)
        wall, cpu, wait, back = (a - b for a, b in zip(now, self._last))
        self.rows.append({"wall": wall, "cpu": cpu, "wait": wait, "back": back})
        self._last = now


def _measure(engine_name: str, workers: int, threads: int, generations: int) -> dict:
    """Run a few generations in this (fresh) process; per-generation timings and bytes shipped."""
    import numpy as np

    from coevo import config
    from coevo.engines import LocalEngine
    from coevo.evolution.loop import coevolve
    from coevo.evolution.problem import build
    from coevo.observers import LogbookRecorder

    overrides = GRID + [f"run.generations={generations}", "run.checkpoint_every=0", f"run.threads={threads}"]
    problem = build(config.load(None, overrides))
    shipped = [0]
    clock = DriverClock()
    if engine_name == "ray":
        from coevo.engines import ray_engine

        clock.install()
        if not hasattr(ray_engine, "Traffic"):  # the engine before it counted its own traffic
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
    gens = GenerationClock(clock)
    coevolve(problem, [rec, gens], engine=engine)
    total = time.perf_counter() - t0
    seconds = rec.logbook.select("seconds")[1:]
    measure = rec.logbook.select("measure_seconds")[1:]
    engine_s = engine.seconds[1:]
    timed = gens.rows[1:]
    traffic = getattr(inner, "traffic", None)
    mib = 2**20
    if traffic is not None:  # the engine's own per-generation counters (generations after the first)
        per_gen = traffic.per_generation(skip=1)
        out_mib, between_mib, kept_mib = (per_gen[k] / mib for k in ("to_workers", "between_workers", "kept"))
    else:
        out_mib = shipped[0] / generations / mib if engine_name == "ray" else 0.0
        between_mib = kept_mib = 0.0
    return {
        "seconds_per_generation": statistics.median(seconds),
        "engine_seconds": statistics.median(engine_s),
        "measure_seconds": statistics.median(measure),
        "other_driver_seconds": statistics.median(s - e - m for s, e, m in zip(seconds, engine_s, measure)),
        "driver_busy_seconds": statistics.median(r["wall"] - r["wait"] for r in timed),
        "driver_cpu_seconds": statistics.median(r["cpu"] for r in timed),
        "driver_wait_seconds": statistics.median(r["wait"] for r in timed),
        "first_generation_seconds": rec.logbook.select("seconds")[0],
        "start_and_close_seconds": total - sum(rec.logbook.select("seconds")),
        "mib_to_workers_per_generation": out_mib,
        "mib_between_workers_per_generation": between_mib,
        "mib_from_workers_per_generation": statistics.median(r["back"] for r in timed) / mib,
        "mib_kept_in_object_store_per_generation": kept_mib,
        "generations_timed": len(seconds),
        "torch_threads": threads,
        "load_average_1min_at_end": os.getloadavg()[0],
        "numpy": np.__version__,
    }


def _child(queue, *args) -> None:
    try:
        queue.put(_measure(*args))
    except BaseException as exc:
        queue.put({"error": f"{type(exc).__name__}: {exc}"})
        raise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generations", type=int, default=3, help="generations per configuration (>= 2)")
    parser.add_argument("--only", nargs="*", choices=list(CONFIGS), help="run only these configurations")
    parser.add_argument("--out", type=Path, default=RESULTS / "ray_scaling.json", help="where to write the JSON")
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
        if "error" in rows[name]:
            raise SystemExit(f"{name}: {rows[name]['error']}")
        print(f"{name:<18} {rows[name]['seconds_per_generation']:7.2f} s/generation", flush=True)
    base = rows.get(BASE) or next(iter(rows.values()))
    print()
    print(f"{'configuration':<18} {'s/gen':>7} {'speed-up':>9} {'engine':>7} {'measure':>8} {'busy':>6} "
          f"{'cpu':>6} {'MiB out':>8} {'MiB w-w':>8} {'MiB back':>9} {'load':>5}")
    for name, r in rows.items():
        speedup = base["seconds_per_generation"] / r["seconds_per_generation"]
        print(f"{name:<18} {r['seconds_per_generation']:7.2f} {speedup:8.2f}x {r['engine_seconds']:7.2f} "
              f"{r['measure_seconds']:8.2f} {r['driver_busy_seconds']:6.2f} {r['driver_cpu_seconds']:6.2f} "
              f"{r['mib_to_workers_per_generation']:8.1f} {r['mib_between_workers_per_generation']:8.1f} "
              f"{r['mib_from_workers_per_generation']:9.1f} {r['load_average_1min_at_end']:5.1f}")
    print(f"(speed-up against {BASE!r}; engine: evaluate + vary, shipping included; measure: the logbook's "
          f"validation pass; busy: the driver's wall seconds outside ray.get; cpu: the driver process's CPU "
          f"seconds; MiB out: arrays the driver sends, w-w: arrays one worker sends another, back: arrays "
          f"ray.get returns to the driver; load: 1-minute load average of the machine)")
    RESULTS.mkdir(exist_ok=True)
    out = {
        "setting": "10x10 torus, von Neumann r=1 (s=5), paper network, D=1000, 1000 training rows, batch 5",
        "generations": args.generations,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "load_average_at_end": os.getloadavg()},
        "results": rows,
    }
    path = args.out
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
