"""Seconds per generation of `coevo run`'s defaults against the defaults before issue 19 (random
pruning, exponential schedule, p = 0.5, target 0.45), measured in one run.

    .venv/bin/python benchmarks/defaults_speed.py --threads 2 --rounds 3

The new defaults prune every pair every generation for the first 75% of the run (a magnitude
ranking over the whole autoencoder, and since round 1 of the levers the exploration mutation,
prune.reset_fraction = 0.01, and since round 3 inputs that may die, prune.keep_inputs = false);
the old ones pruned a pair with a probability rising to
0.43. So each run is a whole short run (``--generations``, the ramp included) and the figure is
the mean over its generations after the first (a median would hide the pruning generations).
Every run is a fresh process (spawn); rounds interleave before/now, so a slow spell of the
shared machine lands on both sides; the ratio is the median of the per-round ratios, with their
range. Writes ``benchmarks/results/defaults_speed.json``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"

CONFIGS = {
    "before (random, exponential, p 0.5, target 0.45)": ["prune.operator=random", "prune.schedule=exponential",
                                                        "prune.probability=0.5", "prune.target_kept=0.45",
                                                        "prune.reset_fraction=0", "prune.keep_inputs=true"],
    "now (defaults: magnitude model, gradual, target 0.1, reset 0.01, inputs may die)": [],
    "now without the reset mutation": ["prune.reset_fraction=0"],
    "now with every input kept (keep_inputs, the defaults before round 3)": ["prune.keep_inputs=true"],
}


def _run(overrides: list[str], generations: int, threads: int) -> dict:
    import torch

    from coevo import config
    from coevo.evolution.loop import coevolve
    from coevo.evolution.problem import build
    from coevo.observers import LogbookRecorder

    torch.set_num_threads(threads)
    cfg = config.load(None, overrides + [f"run.generations={generations}", "run.checkpoint_every=0"])
    coevolve(build(cfg.replace(run__generations=1)))  # loads (or compiles) the Numba kernels
    rec = LogbookRecorder()
    coevolve(build(cfg), [rec])
    seconds = rec.logbook.select("seconds")[1:]
    return {"mean_seconds_per_generation": statistics.fmean(seconds),
            "median_seconds_per_generation": statistics.median(seconds),
            "kept_best_last": float(rec.logbook.select("kept_best")[-1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--generations", type=int, default=40)
    args = parser.parse_args()
    ctx = mp.get_context("spawn")
    runs: dict[str, list[dict]] = {name: [] for name in CONFIGS}
    with ctx.Pool(1, maxtasksperchild=1) as pool:
        for r in range(args.rounds):
            for name, overrides in CONFIGS.items():
                result = pool.apply(_run, (overrides, args.generations, args.threads))
                runs[name].append(result)
                print(f"round {r + 1} {name}: {result['mean_seconds_per_generation']:.3f} s/generation "
                      f"(kept {result['kept_best_last']:.3f})", flush=True)
    before, now, no_reset, inputs_kept = (runs[name] for name in CONFIGS)

    def ratios(a: list[dict], b: list[dict]) -> list[float]:
        return [x["mean_seconds_per_generation"] / y["mean_seconds_per_generation"] for x, y in zip(a, b)]

    over_before, over_no_reset, over_inputs_kept = ratios(now, before), ratios(now, no_reset), ratios(now, inputs_kept)
    summary = {
        "threads": args.threads, "generations": args.generations, "rounds": args.rounds,
        "runs": runs,
        "ratio_now_over_before": statistics.median(over_before), "ratio_range": [min(over_before), max(over_before)],
        "ratio_now_over_no_reset": statistics.median(over_no_reset),
        "ratio_no_reset_range": [min(over_no_reset), max(over_no_reset)],
        "ratio_now_over_inputs_kept": statistics.median(over_inputs_kept),
        "ratio_inputs_kept_range": [min(over_inputs_kept), max(over_inputs_kept)],
    }
    print(f"now / before: {summary['ratio_now_over_before']:.2f} (rounds {min(over_before):.2f}-{max(over_before):.2f})")
    print(f"now / without the reset mutation: {summary['ratio_now_over_no_reset']:.2f} "
          f"(rounds {min(over_no_reset):.2f}-{max(over_no_reset):.2f})")
    print(f"now / with every input kept: {summary['ratio_now_over_inputs_kept']:.2f} "
          f"(rounds {min(over_inputs_kept):.2f}-{max(over_inputs_kept):.2f})")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "defaults_speed.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"wrote {RESULTS / 'defaults_speed.json'}")


if __name__ == "__main__":
    main()
