"""What the seed methods' training terms cost: seconds per generation at the default setting with
and without FlipOut's flip counting and gradient noise and Early-Bird's scale penalty.

    .venv/bin/python benchmarks/trainer_terms.py --rounds 2 --generations 15
    .venv/bin/python benchmarks/trainer_terms.py --baseline /tmp/coevo-old   # + gradient noise by another checkout

Every configuration runs in its own fresh process, in interleaved rounds (a slow spell of this
shared machine lands on every configuration); each figure is reported as a ratio to the plain
run of the same round, median over rounds. ``--baseline DIR`` adds a row: gradient noise with
the ``coevo`` package found in DIR (e.g. ``git archive REV coevo | tar -x -C DIR``), to compare
two implementations in the same rounds. Writes ``benchmarks/results/trainer_terms.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from functools import partial
from pathlib import Path

from speed import _coevo, _in_fresh_process

RESULTS = Path(__file__).resolve().parent / "results"
NO_PRUNING = ["prune.probability=0"]  # the operators' own work is not what is measured here

NOISE = "flips + gradient noise 1.0"
CONFIGS = {
    "plain (random operator)": [],
    "flip counting (flipout)": ["prune.operator=flipout"],
    NOISE: ["prune.operator=flipout", "train.gradient_noise=1.0"],
    "scale penalty (early_bird)": ["prune.operator=early_bird", "train.scale_l1=1e-5", "train.scale_l1_latent=1e-4"],
}


def _coevo_from(source: str, overrides: list[str], generations: int, threads: int, profile: bool) -> dict:
    """``_coevo`` with the coevo package of the directory ``source`` (a fresh process: nothing
    imported it yet)."""
    sys.path.insert(0, source)
    import coevo

    assert coevo.__file__.startswith(source), f"coevo came from {coevo.__file__}, not {source}"
    return _coevo(overrides, generations, threads, profile)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--generations", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--baseline", type=Path, help="a directory holding another version's coevo package")
    args = parser.parse_args()
    configs = {name: (_coevo, overrides) for name, overrides in CONFIGS.items()}
    if args.baseline:
        source = str(args.baseline.resolve())
        configs[f"{NOISE}, {args.baseline.name}"] = (partial(_coevo_from, source), CONFIGS[NOISE])
    seconds: dict[str, list[float]] = {name: [] for name in configs}
    for round_ in range(args.rounds):
        for name, (run, overrides) in configs.items():
            result = _in_fresh_process(run, overrides + NO_PRUNING, args.generations, args.threads, False)
            seconds[name].append(result["generation_without_logging"])
            print(f"round {round_ + 1}: {name}: {seconds[name][-1]:.3f} s/generation", flush=True)
    base = seconds["plain (random operator)"]
    rows = {name: {"seconds_per_generation": statistics.median(values),
                   "ratio": statistics.median(v / b for v, b in zip(values, base))}
            for name, values in seconds.items()}
    lines = ["| training | s / generation (no logging) | x plain, same round |", "|---|---|---|"]
    lines += [f"| {name} | {r['seconds_per_generation']:.3f} | {r['ratio']:.2f} |" for name, r in rows.items()]
    versus = None
    if args.baseline:  # this checkout's gradient noise against the baseline's, round by round
        versus = statistics.median(a / b for a, b in zip(seconds[NOISE], seconds[f"{NOISE}, {args.baseline.name}"]))
        lines += ["", f"{NOISE}: this checkout / {args.baseline.name}, same round: {versus:.2f}"]
    text = "\n".join(lines)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "trainer_terms.json").write_text(json.dumps(
        {"args": {**vars(args), "baseline": args.baseline and str(args.baseline)}, "rows": rows,
         "noise_versus_baseline": versus}, indent=2) + "\n")
    against = f", baseline {args.baseline}" if args.baseline else ""
    (RESULTS / "trainer_terms.md").write_text(f"threads {args.threads}, {args.generations} generations, "
                                             f"{args.rounds} rounds{against}\n\n{text}\n")


if __name__ == "__main__":
    main()
