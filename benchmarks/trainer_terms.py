"""What the seed methods' training terms cost: seconds per generation at the default setting with
and without FlipOut's flip counting and gradient noise and Early-Bird's scale penalty.

    .venv/bin/python benchmarks/trainer_terms.py --rounds 2 --generations 15

Every configuration runs in its own fresh process, in interleaved rounds (a slow spell of this
shared machine lands on every configuration); each figure is reported as a ratio to the plain
run of the same round, median over rounds. Writes ``benchmarks/results/trainer_terms.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from speed import _coevo, _in_fresh_process

RESULTS = Path(__file__).resolve().parent / "results"
NO_PRUNING = ["prune.probability=0"]  # the operators' own work is not what is measured here

CONFIGS = {
    "plain (random operator)": [],
    "flip counting (flipout)": ["prune.operator=flipout"],
    "flips + gradient noise 1.0": ["prune.operator=flipout", "train.gradient_noise=1.0"],
    "scale penalty (early_bird)": ["prune.operator=early_bird", "train.scale_l1=1e-5", "train.scale_l1_latent=1e-4"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--generations", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    seconds: dict[str, list[float]] = {name: [] for name in CONFIGS}
    for round_ in range(args.rounds):
        for name, overrides in CONFIGS.items():
            result = _in_fresh_process(_coevo, overrides + NO_PRUNING, args.generations, args.threads, False)
            seconds[name].append(result["generation_without_logging"])
            print(f"round {round_ + 1}: {name}: {seconds[name][-1]:.3f} s/generation", flush=True)
    base = seconds["plain (random operator)"]
    rows = {name: {"seconds_per_generation": statistics.median(values),
                   "ratio": statistics.median(v / b for v, b in zip(values, base))}
            for name, values in seconds.items()}
    lines = ["| training | s / generation (no logging) | x plain, same round |", "|---|---|---|"]
    lines += [f"| {name} | {r['seconds_per_generation']:.3f} | {r['ratio']:.2f} |" for name, r in rows.items()]
    text = "\n".join(lines)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "trainer_terms.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2) + "\n")
    (RESULTS / "trainer_terms.md").write_text(f"threads {args.threads}, {args.generations} generations, "
                                             f"{args.rounds} rounds\n\n{text}\n")


if __name__ == "__main__":
    main()
