"""Seconds per generation of coevo against a plain per-module implementation, measured in one run.

    .venv/bin/python benchmarks/speed.py --threads 2   # full: paper setting + scaling (~5 min)
    .venv/bin/python benchmarks/speed.py --quick       # one round, no D = 4000

Prints a table and writes ``benchmarks/results/speed.json``. Every measurement runs in its own
fresh process (spawn), so peak memory (max RSS) is per configuration and one run's caches do
not help another. Configurations are measured in interleaved rounds (plain, coevo, plain, ...;
ring, torus, ring, ...), so a slow spell of this shared machine lands on both sides of a ratio;
each ratio is the median of the per-round ratios, with their range. Per round, a figure is the
median over generations after the first.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import multiprocessing as mp
import platform
import pstats
import random
import resource
import statistics
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"

SCALING = {
    "ring10_D1000": [],
    "torus10x10_moore_D1000": ["grid.topology=torus", "grid.shape=[10, 10]", "grid.neighbourhood=moore"],
    "ring10_D4000": ["data.n_dims=4000"],
}


def _coevo(overrides: list[str], generations: int, threads: int, profile: bool) -> dict:
    """Run coevo for a few generations in this (fresh) process; per-generation timings."""
    import torch

    from coevo import config
    from coevo.evolution.loop import coevolve
    from coevo.evolution.problem import build
    from coevo.observers import LogbookRecorder

    torch.set_num_threads(threads)
    cfg = config.load(None, overrides + [f"run.generations={generations}", "run.checkpoint_every=0"])
    problem = build(cfg)
    coevolve(build(cfg.replace(run__generations=1)))  # loads (or compiles) the Numba kernels
    rec = LogbookRecorder()
    coevolve(problem, [rec])  # timed without the profiler, whose per-call cost would count
    seconds = rec.logbook.select("seconds")[1:]
    measure = rec.logbook.select("measure_seconds")[1:]
    out = {
        "seconds_per_generation": statistics.median(seconds),
        "measure_seconds": statistics.median(measure),
        "generation_without_logging": statistics.median(s - m for s, m in zip(seconds, measure)),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    profiler = cProfile.Profile() if profile else None
    if profiler:  # then the same generations again, profiled, for where the time goes
        profiler.enable()
        coevolve(build(cfg), [])
        profiler.disable()
        stats = pstats.Stats(profiler)
        total = sum(v[2] for v in stats.stats.values())  # total internal time
        def share(name: str) -> float:
            return sum(v[2] for k, v in stats.stats.items() if k[2] == name) / total
        out["share_train_kernel"] = share("_train_kernel")  # forward, backward and Adam
        out["share_pair_loss_kernel"] = share("_pair_losses_kernel")
        out["share_centre_loss_kernel"] = share("_centre_losses_kernel")
        out["share_mask_kernels"] = share("select_weights") + share("protected_entries") + share("uniform_sample")
        top = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:12]
        out["profile_top"] = [{"function": f"{k[0].split('/')[-1]}:{k[2]}", "share": round(v[2] / total, 4)}
                              for k, v in top]
    return out


def _plain(overrides: list[str], generations: int, threads: int) -> dict:
    """The plain per-module generation on the same problem and start."""
    import numpy as np
    import torch

    from benchmarks.plain import from_stack, plain_generation
    from coevo import config
    from coevo.evolution import topology
    from coevo.evolution.loop import make_toolbox, prune_probability
    from coevo.evolution.problem import build

    torch.set_num_threads(threads)
    cfg = config.load(None, overrides + [f"run.generations={max(generations, 2)}"])
    problem = build(cfg)
    neighbours = topology.neighbourhoods(cfg.grid)
    enc, dec = problem.fresh_stacks(neighbours.shape[0])
    encoders, decoders = from_stack(enc), from_stack(dec)
    lr = np.full(neighbours.shape[0], cfg.train.learning_rate)
    toolbox = make_toolbox(cfg)
    times = []
    for gen in range(generations):
        t0 = time.perf_counter()
        random.seed(f"{cfg.run.seed}:{gen}")
        encoders, decoders = plain_generation(encoders, decoders, lr, neighbours, problem.train, cfg, gen,
                                              prune_probability(cfg, gen, neighbours.shape[1]), toolbox)
        times.append(time.perf_counter() - t0)
    return {"seconds_per_generation": statistics.median(times),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _canonical(epochs: int, threads: int) -> dict:
    """Canonical mode: coevo's epoch against the plain per-module one, same process."""
    import numpy as np
    import torch

    from benchmarks.plain import from_stack, plain_train_pair
    from coevo import config
    from coevo.evolution.canonical import train_canonical
    from coevo.evolution.problem import build
    from coevo.observers import LogbookRecorder

    torch.set_num_threads(threads)
    cfg = config.load(None, ["run.mode=canonical", f"run.generations={epochs}", "run.checkpoint_every=0"])
    problem = build(cfg)
    rec = LogbookRecorder()
    train_canonical(problem, [rec])
    seconds = rec.logbook.select("seconds")[1:]
    measure = rec.logbook.select("measure_seconds")[1:]
    enc, dec = problem.fresh_stacks(1)
    (penc,), (pdec,) = from_stack(enc), from_stack(dec)
    times = []
    for epoch in range(2):
        t0 = time.perf_counter()
        order = np.random.default_rng(epoch).permutation(problem.train.shape[0])
        plain_train_pair(penc, pdec, cfg.train.learning_rate, order, problem.train, cfg)
        times.append(time.perf_counter() - t0)
    coevo_epoch = statistics.median(seconds)
    return {"coevo_seconds_per_epoch": coevo_epoch, "coevo_measure_seconds": statistics.median(measure),
            "plain_seconds_per_epoch": min(times), "speedup": min(times) / coevo_epoch,
            "speedup_without_logging": min(times) / statistics.median(s - m for s, m in zip(seconds, measure))}


def _in_fresh_process(fn, *args) -> dict:
    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(fn, args)


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


def _rounds(ratios: list[float]) -> dict:
    return {"median": _median(ratios), "min": min(ratios), "max": max(ratios), "per_round": ratios}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one round, fewer generations, skip D = 4000")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in each process (default 1)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of every measurement (default 3)")
    parser.add_argument("--out", type=Path, default=RESULTS / "speed.json")
    args = parser.parse_args()
    gens, plain_gens, rounds = (4, 1, 1) if args.quick else (8, 2, args.rounds)

    t_start = time.time()
    results: dict = {"machine": platform.processor() or platform.machine(), "python": sys.version.split()[0],
                     "threads": args.threads, "generations_timed": gens - 1, "rounds": rounds}
    print(f"paper setting (10-cell ring, D = 1000, batch 5, random pruning + exponential), threads={args.threads}, "
          f"{rounds} interleaved round(s)")
    coevo_runs, plain_runs = [], []
    for r in range(rounds):
        plain_runs.append(_in_fresh_process(_plain, [], plain_gens, args.threads))
        coevo_runs.append(_in_fresh_process(_coevo, [], gens, args.threads, r == 0))
    coevo, plain = dict(coevo_runs[0]), dict(plain_runs[0])
    for key in ("seconds_per_generation", "measure_seconds", "generation_without_logging"):
        coevo[key] = _median([c[key] for c in coevo_runs])
    plain["seconds_per_generation"] = _median([p["seconds_per_generation"] for p in plain_runs])
    speedup = _rounds([p["seconds_per_generation"] / c["seconds_per_generation"] for p, c in zip(plain_runs, coevo_runs)])
    bare = _rounds([p["seconds_per_generation"] / c["generation_without_logging"] for p, c in zip(plain_runs, coevo_runs)])
    results["paper"] = {"coevo": coevo, "plain": plain, "speedup": speedup["median"], "speedup_rounds": speedup,
                        "speedup_without_logging": bare["median"], "speedup_without_logging_rounds": bare}
    print(f"  plain per-module   {plain['seconds_per_generation']:8.3f} s/gen")
    print(f"  coevo              {coevo['seconds_per_generation']:8.3f} s/gen  "
          f"(of which logbook evaluation {coevo['measure_seconds']:.3f} s)")
    print(f"  speed-up           {speedup['median']:8.1f}x  (rounds {speedup['min']:.1f}-{speedup['max']:.1f}x; "
          f"{bare['median']:.1f}x without the logbook evaluation)")
    print(f"  Numba kernels' share: training {coevo['share_train_kernel']:.1%}, pair losses "
          f"{coevo['share_pair_loss_kernel']:.1%}, logbook losses {coevo['share_centre_loss_kernel']:.1%}, "
          f"mask kernels {coevo['share_mask_kernels']:.2%}")

    canon = _in_fresh_process(_canonical, gens, args.threads)
    results["canonical"] = canon
    print(f"canonical (one autoencoder): plain {canon['plain_seconds_per_epoch']:.3f} s/epoch, coevo "
          f"{canon['coevo_seconds_per_epoch']:.3f} s/epoch ({canon['speedup']:.1f}x; "
          f"{canon['speedup_without_logging']:.1f}x without the logbook evaluation)")

    names = [n for n in SCALING if not (args.quick and "D4000" in n)]
    runs: dict[str, list[dict]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names:
            runs[name].append(_in_fresh_process(_coevo, SCALING[name], gens, args.threads, False))
    print("scaling (coevo, s/gen, ratio to the 10-cell ring [range over rounds], peak RSS):")
    scaling = {}
    for name in names:
        ratio = _rounds([x["seconds_per_generation"] / b["seconds_per_generation"]
                         for x, b in zip(runs[name], runs["ring10_D1000"])])
        scaling[name] = {"seconds_per_generation": _median([x["seconds_per_generation"] for x in runs[name]]),
                         "measure_seconds": _median([x["measure_seconds"] for x in runs[name]]),
                         "ratio_to_ring10": ratio["median"], "ratio_rounds": ratio,
                         "peak_rss_mib": max(x["peak_rss_mib"] for x in runs[name])}
        print(f"  {name:<24} {scaling[name]['seconds_per_generation']:8.3f} s/gen  x{ratio['median']:5.2f} "
              f"[{ratio['min']:.2f}-{ratio['max']:.2f}]  {scaling[name]['peak_rss_mib']:7.0f} MiB")
    results["scaling"] = scaling
    results["wall_seconds"] = time.time() - t_start
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    main()
