"""What the pruning core costs: one pair's mutation per operator setting, and a whole generation at
the defaults against another source tree (the code before a change), measured in one run.

    .venv/bin/python benchmarks/pruning_speed.py                          # mutations only (~1 min)
    .venv/bin/python benchmarks/pruning_speed.py --baseline-src /tmp/old  # + generations, old vs new

``--baseline-src`` names a directory holding an older ``coevo`` package with its operators at
``coevo/operators`` (``git worktree add /tmp/w REV; mkdir /tmp/old; cp -r /tmp/w/coevo /tmp/old/;
cp -r /tmp/w/operators /tmp/old/coevo/``). Generations run in fresh processes, alternately old and
new, so a slow spell of this shared machine lands on both sides; the ratio is the median of the
per-round ratios. Prints a table and writes ``benchmarks/results/pruning_speed.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent

SETTINGS = [
    ("random", {}),
    ("random", {"unit": "neuron"}),
    ("magnitude", {}),
    ("magnitude", {"scope": "global"}),
    ("magnitude", {"unit": "neuron"}),
    ("magnitude", {"scope": "global", "unit": "neuron"}),
    ("snip", {}),
    ("snap", {}),
]

GENERATION = """
import json, statistics, sys, torch
from coevo import config
from coevo.evolution.loop import coevolve
from coevo.evolution.problem import build
from coevo.observers import LogbookRecorder
torch.set_num_threads(int(sys.argv[2]))
cfg = config.load(None, ["run.generations=" + sys.argv[1], "run.checkpoint_every=0", "prune.probability=1.0",
                         "prune.schedule=fixed", "prune.target_kept=0"])
coevolve(build(cfg.replace(run__generations=1)))  # loads (or compiles) the kernels
rec = LogbookRecorder()
coevolve(build(cfg), [rec])
print(json.dumps(statistics.median(rec.logbook.select("seconds")[1:])))
"""


def mutation_seconds(repeats: int) -> list[dict]:
    """Median seconds to prune one pair (encoder and decoder, D = 1000, half the weights alive)."""
    import numpy as np
    import torch

    from coevo import config, operators
    from coevo.evolution.context import pair_context
    from coevo.evolution.problem import build
    from coevo.genome import Decoder, Encoder

    torch.set_num_threads(1)
    cfg = config.load(None, [])
    problem = build(cfg)
    enc, dec = problem.fresh_stacks(1)
    rng = np.random.default_rng(0)
    for stack in (enc, dec):
        stack.mask &= torch.as_tensor(rng.random(stack.mask.shape) < 0.5)
        stack.apply_masks()
    rows = []
    for name, params in SETTINGS:
        op = operators.registry.get(name, params)
        times = []
        for r in range(repeats + 2):
            context = pair_context(enc, dec, 0, 0, cfg.prune, cfg.model.loss, lambda: problem.train[:100])
            nets = [enc.network(0, Encoder), dec.network(0, Decoder)]
            if name in ("snip", "snap"):
                context.gradients(nets[0])  # the backward pass is the context's cost, not the selector's
            start = time.perf_counter()
            for net in nets:
                op(net, 0.1, np.random.default_rng(r), context)
            times.append(time.perf_counter() - start)
        rows.append({"operator": name, "settings": params, "seconds_per_pair": statistics.median(times[2:])})
    return rows


def generation_seconds(src: str | None, generations: int, threads: int) -> float:
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = src
    out = subprocess.run([sys.executable, "-c", GENERATION, str(generations), str(threads)], env=env, cwd="/",
                         capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-src", help="a directory holding the older coevo package")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--generations", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    result: dict = {"mutations": mutation_seconds(args.repeats)}
    print(f"{'operator':<12} {'settings':<38} ms per pair (D = 1000, amount 0.1)")
    base = result["mutations"][0]["seconds_per_pair"]
    for row in result["mutations"]:
        print(f"{row['operator']:<12} {json.dumps(row['settings']):<38} {1e3 * row['seconds_per_pair']:7.2f}"
              f"   ({row['seconds_per_pair'] / base:.1f}x random)")
    if args.baseline_src:
        new_src = str(ROOT)
        old, new = [], []
        for r in range(args.rounds):
            pair = [(args.baseline_src, old), (new_src, new)]
            for src, into in (pair if r % 2 == 0 else pair[::-1]):
                into.append(generation_seconds(src, args.generations, args.threads))
        ratios = [n / o for n, o in zip(new, old)]
        result["generations"] = {"baseline_src": args.baseline_src, "threads": args.threads,
                                 "setting": "defaults, random pruning every pair every generation (p 1, no target)",
                                 "old_seconds": old, "new_seconds": new, "ratio_median": statistics.median(ratios),
                                 "ratio_range": [min(ratios), max(ratios)]}
        print(f"generation at the defaults, every pair pruned, {args.threads} threads: old "
              f"{statistics.median(old):.3f} s, new {statistics.median(new):.3f} s, new/old "
              f"{statistics.median(ratios):.3f} (range {min(ratios):.3f}-{max(ratios):.3f})")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "pruning_speed.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
