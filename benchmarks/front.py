"""One multi-objective run against four single-target runs (issue 21): from a finished
`coevo bench --preset front` directory and a `coevo bench --preset compression` directory (the
same seeds, hence the same data, byte for byte).

    .venv/bin/coevo bench --preset front --jobs 2 --out runs/front
    .venv/bin/python benchmarks/front.py runs/front runs/compression

For each kept fraction f of the compression table (0.45, 0.20, 0.10, 0.05): the front's point
with the lowest validation loss at or below f (chosen as a user would, without the test split),
and that point's test L1, against the single-target coevolution run at f and the baseline at f; median [Q1-Q3] over the seeds, the ratio of medians, and on how many seeds the
front is within 10% of the single-target run. Also each front's size and span, and wall seconds:
one front run against the four single-target runs it replaces. Writes
``benchmarks/results/front.{md,json,png}``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from coevo.bench.report import median_iqr, read_rows, write_table

RESULTS = Path(__file__).resolve().parent / "results"
FRACTIONS = (0.45, 0.20, 0.10, 0.05)
WITHIN = 0.10


def fronts(bench: Path) -> dict[int, dict]:
    """Seed -> {"points": the run's front, "wall_seconds": its wall time}."""
    rows = read_rows(bench / "rows.jsonl")
    if not rows:
        sys.exit(f"{bench}/rows.jsonl has no rows: run `coevo bench --preset front --out {bench}` first")
    out = {}
    for row in rows:
        summary = json.loads((bench / row["run_dir"] / "summary.json").read_text())
        if "front" not in summary:
            sys.exit(f"{bench / row['run_dir']} has no front: is {bench} a `--preset front` sweep?")
        out[int(row["seed"])] = {"points": summary["front"], "wall_seconds": float(row["wall_seconds"]),
                                 "floor": summary.get("test_loss_floor")}
    return out


def single_target(bench: Path) -> dict[tuple[str, float], dict[int, dict]]:
    """(side, kept fraction) -> seed -> row, from a compression sweep ("coevo-0.10", "baseline-0.10";
    "baseline-reset-0.10" is the side "baseline-reset", which the front table does not use)."""
    out: dict = {}
    for row in read_rows(bench / "rows.jsonl"):
        side, _, fraction = row["label"].rpartition("-")
        out.setdefault((side, round(float(fraction), 4)), {})[int(row["seed"])] = row
    return out


def best_at_or_below(points: list[dict], fraction: float) -> float | None:
    """The test loss of the point with the lowest validation loss among those at or below
    ``fraction`` (None if there is none). Choosing by test loss would pick the point on the very
    numbers it reports: the minimum of noisy test losses is optimistic."""
    eligible = [p for p in points if p["kept_fraction"] <= fraction]
    if not eligible:
        return None
    return min(eligible, key=lambda p: p["validation_loss"])["test_loss"]


def summarize(front_dir: Path, compression_dir: Path) -> dict:
    runs = fronts(front_dir)
    single = single_target(compression_dir)
    seeds = sorted(runs)
    table = []
    for f in FRACTIONS:
        coevo = single.get(("coevo", round(f, 4)), {})
        base = single.get(("baseline", round(f, 4)), {})
        front_loss = {s: best_at_or_below(runs[s]["points"], f) for s in seeds}
        paired = [s for s in seeds if front_loss[s] is not None and s in coevo]
        within = sum(front_loss[s] <= (1 + WITHIN) * coevo[s]["test_loss"] for s in paired)
        entry = {
            "kept": f,
            "front": median_iqr([v for v in front_loss.values() if v is not None]),
            "front_seeds": sum(v is not None for v in front_loss.values()),
            "single_target": median_iqr([coevo[s]["test_loss"] for s in seeds if s in coevo]),
            "baseline": median_iqr([base[s]["test_loss"] for s in seeds if s in base]),
            "within_10pct": within,
            "paired_seeds": len(paired),
        }
        if entry["front"] and entry["single_target"]:
            entry["ratio"] = entry["front"][0] / entry["single_target"][0]
        table.append(entry)
    sizes = [len(runs[s]["points"]) for s in seeds]
    spans = [(min(p["kept_fraction"] for p in runs[s]["points"]), max(p["kept_fraction"] for p in runs[s]["points"]))
             for s in seeds]
    single_wall = [sum(single[("coevo", round(f, 4))][s]["wall_seconds"] for f in FRACTIONS
                       if s in single.get(("coevo", round(f, 4)), {})) for s in seeds]
    return {"seeds": seeds, "table": table, "points": median_iqr(sizes), "smallest": median_iqr([a for a, _ in spans]),
            "largest": median_iqr([b for _, b in spans]), "points_per_seed": sizes, "spans": spans,
            "wall_seconds_front": float(np.median([runs[s]["wall_seconds"] for s in seeds])),
            "wall_seconds_single_targets": float(np.median(single_wall)),
            "floor": next(iter(runs.values()))["floor"]}


def markdown(result: dict) -> str:
    def q(v: list[float] | None) -> str:
        return "-" if v is None else f"{v[0]:.4f} [{v[1]:.4f}-{v[2]:.4f}]"

    lines = ["| kept at most | front: test L1 of its best-validation point | single-target run | ratio | within 10% "
             "| baseline |",
             "|---|---|---|---|---|---|"]
    for e in result["table"]:
        ratio = f"{e['ratio']:.3f}" if "ratio" in e else "-"
        lines.append(f"| {e['kept']:.2f} | {q(e['front'])} ({e['front_seeds']} seeds with a point) "
                     f"| {q(e['single_target'])} | {ratio} | {e['within_10pct']}/{e['paired_seeds']} "
                     f"| {q(e['baseline'])} |")
    n = len(result["seeds"])
    lines += ["", f"Median [Q1-Q3] over seeds {result['seeds']} ({n}). The front's column: per seed, the point "
              f"with the lowest validation loss at or below the kept fraction: its test L1. Front: "
              f"{result['points'][0]:.0f} points (per seed {result['points_per_seed']}), smallest kept "
              f"{result['smallest'][0]:.3f}, largest {result['largest'][0]:.3f}. Wall seconds (median): one front "
              f"run {result['wall_seconds_front']:.0f}, the four single-target runs it replaces "
              f"{result['wall_seconds_single_targets']:.0f}."]
    return "\n".join(lines)


def plot(front_dir: Path, result: dict, single: dict, path: Path) -> None:
    from coevo.report import subplots

    runs = fronts(front_dir)
    fig, ax = subplots(figsize=(7, 4.5))
    for i, (seed, run) in enumerate(sorted(runs.items())):
        pts = run["points"]
        ax.plot([p["kept_fraction"] for p in pts], [p["test_loss"] for p in pts], ".-", alpha=0.6,
                color="tab:blue", label="front, one per seed" if i == 0 else None)
    for side, colour, label in (("single_target", "tab:green", "single-target coevolution (median)"),
                                ("baseline", "tab:orange", "baseline (median)")):
        xs = [e["kept"] for e in result["table"] if e[side]]
        ys = [e[side][0] for e in result["table"] if e[side]]
        ax.plot(xs, ys, "s", color=colour, markersize=7, label=label)
    if result.get("floor"):
        ax.axhline(result["floor"], color="grey", linestyle=":", label="floor")
    ax.set(xscale="log", yscale="log", xlabel="live kept fraction", ylabel="test L1",
           title="One multi-objective run's front against single-target runs")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("front", type=Path, help="a `coevo bench --preset front` directory")
    parser.add_argument("compression", type=Path, help="a `coevo bench --preset compression` directory")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the table and plot go")
    args = parser.parse_args(argv)
    result = summarize(args.front, args.compression)
    write_table(args.out, "front", markdown(result), result)
    plot(args.front, result, single_target(args.compression), args.out / "front.png")
    print(f"wrote {args.out / 'front.md'}, .json and .png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
