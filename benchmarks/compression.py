"""The compression table (README, "Compression"): coevolution at its defaults against the plain
baseline inside coevo at kept fractions 0.45, 0.20, 0.10 and 0.05, from a finished
`coevo bench --preset compression` directory.

    .venv/bin/coevo bench --preset compression --jobs 2 --out runs/compression
    .venv/bin/python benchmarks/compression.py runs/compression

Per kept fraction: each side's best-pair test L1 and live kept fraction as median [Q1-Q3] over
the seeds; the paired difference (coevolution - baseline, same seed: same data, byte for byte);
the paired A12 (the share of seeds where coevolution's loss is higher: below 0.5 it wins) and the
Wilcoxon signed-rank p (refused, naming the seed, where a seed's two runs had different data configs); for coevolution also the mean test L1 over its cells; wall seconds and
gradient steps per run. Writes ``benchmarks/results/compression.{md,json,png}``.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

from coevo import config as config_module
from coevo import data
from coevo.bench.report import attach_data, median_iqr, paired_comparison, read_rows, write_table
from coevo.errors import UserError

RESULTS = Path(__file__).resolve().parent / "results"
SIDES = ("coevo", "baseline", "baseline-reset")   # baseline-reset: the baseline with coevo's exploration mutation


def side_of(row: dict) -> str:
    """The side of a combination, from its label ("baseline-reset-0.10" -> "baseline-reset")."""
    return row["label"].rsplit("-", 1)[0]


def target_of(row: dict) -> str:
    """The kept fraction a combination aims at, from its label ("coevo-0.10" -> "0.10")."""
    return row["label"].rsplit("-", 1)[1]


def gradient_steps(bench: Path, row: dict) -> int:
    """Mini-batch steps of one run over all its cells: cells x generations x batches per epoch."""
    cfg = config_module.load(bench / row["run_dir"] / "config.toml")
    batches = math.ceil(data.load(cfg.data, cfg.run.seed).train.shape[0] / cfg.train.batch_size)
    cells = 1 if cfg.run.mode == "canonical" else (cfg.grid.cells if cfg.grid.topology == "ring"
                                                   else cfg.grid.shape[0] * cfg.grid.shape[1])
    return cells * cfg.run.generations * batches


def summarize(bench: Path) -> list[dict]:
    rows = attach_data(read_rows(bench / "rows.jsonl"), bench)
    if not rows:
        sys.exit(f"{bench}/rows.jsonl has no rows: run `coevo bench --preset compression --out {bench}` first")
    by = {}
    for row in rows:
        side = side_of(row)
        if side in SIDES:
            by.setdefault((target_of(row), side), {})[row["seed"]] = row
    out = []
    for target in sorted({t for t, _ in by}, key=float, reverse=True):
        coevo, base = by.get((target, "coevo"), {}), by.get((target, "baseline"), {})
        base_reset = by.get((target, "baseline-reset"), {})
        seeds = sorted(set(coevo) & set(base))
        entry = {"target": float(target), "seeds": seeds,
                 "floor": next(iter((coevo or base).values())).get("test_loss_floor")}
        for side, group in (("coevo", coevo), ("baseline", base), ("baseline_reset", base_reset)):
            runs = [group[s] for s in seeds if s in group] or list(group.values())
            if not runs:
                continue
            entry[side] = {
                "n": len(runs),
                "test_loss": median_iqr([r["test_loss"] for r in runs]),
                "test_loss_mean": median_iqr([r["test_loss_mean"] for r in runs]),
                "kept_fraction": median_iqr([r["kept_fraction"] for r in runs]),
                "wall_seconds": float(np.median([r["wall_seconds"] for r in runs])),
                "gradient_steps": gradient_steps(bench, runs[0]),
            }
        try:  # the table pairs by seed: refused where a seed's two runs had different data
            entry.update(paired_comparison(coevo, base))
            if base_reset:
                entry["against_baseline_reset"] = paired_comparison(coevo, base_reset)
        except UserError as exc:
            sys.exit(f"{bench}, kept {target}: {exc}")
        out.append(entry)
    return out


def kept_label(target: float) -> str:
    """0.10 as "0.10", 0.065 as "0.065": two decimals unless the target has more."""
    return f"{target:.2f}" if round(target, 2) == target else f"{target:g}"


def markdown(table: list[dict]) -> str:
    def q(v: list[float], digits: int = 4) -> str:
        return f"{v[0]:.{digits}f} [{v[1]:.{digits}f}-{v[2]:.{digits}f}]"

    lines = ["| kept target | coevo test L1 | coevo kept | cells' mean | baseline test L1 | baseline kept "
             "| difference | A12 | p | wall s coevo / baseline | gradient steps coevo / baseline |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for e in table:
        c, b = e.get("coevo"), e.get("baseline")
        if not c or not b:
            continue
        lines.append(f"| {kept_label(e['target'])} | {q(c['test_loss'])} | {q(c['kept_fraction'], 3)} "
                     f"| {c['test_loss_mean'][0]:.4f} | {q(b['test_loss'])} | {q(b['kept_fraction'], 3)} "
                     f"| {e['difference']:+.4f} | {e['a12']:.2f} | {e['wilcoxon_p']:.3f} "
                     f"| {c['wall_seconds']:.0f} / {b['wall_seconds']:.0f} "
                     f"| {c['gradient_steps']:,} / {b['gradient_steps']:,} |")
        br, vs = e.get("baseline_reset"), e.get("against_baseline_reset")
        if br and vs:
            lines.append(f"| {kept_label(e['target'])}, baseline with reset 0.01 | {q(c['test_loss'])} | {q(c['kept_fraction'], 3)} "
                         f"| {c['test_loss_mean'][0]:.4f} | {q(br['test_loss'])} | {q(br['kept_fraction'], 3)} "
                         f"| {vs['difference']:+.4f} | {vs['a12']:.2f} | {vs['wilcoxon_p']:.3f} "
                         f"| {c['wall_seconds']:.0f} / {br['wall_seconds']:.0f} "
                         f"| {c['gradient_steps']:,} / {br['gradient_steps']:,} |")
    n = max((len(e["seeds"]) for e in table), default=0)
    lines += ["", f"Median [Q1-Q3] over {n} seeds; difference, A12 (paired: the share of seeds where "
              "coevolution's test L1 is higher) and the Wilcoxon signed-rank p pair each seed's runs."]
    return "\n".join(lines)


def plot(table: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for side, colour in (("coevo", "tab:blue"), ("baseline", "tab:orange")):
        pts = [(e[side]["kept_fraction"][0], e[side]["test_loss"]) for e in table if side in e]
        if not pts:
            continue
        kept = [p[0] for p in pts]
        med = [p[1][0] for p in pts]
        err = [[p[1][0] - p[1][1] for p in pts], [p[1][2] - p[1][0] for p in pts]]
        ax.errorbar(kept, med, yerr=err, marker="o", capsize=3, color=colour,
                    label="coevolution (defaults)" if side == "coevo" else "baseline (canonical magnitude)")
    floor = next((e["floor"] for e in table if e.get("floor") is not None), None)
    if floor:
        ax.axhline(floor, color="grey", linestyle=":", label="floor")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("live kept fraction")
    ax.set_ylabel("best-pair test L1 (median, IQR)")
    ax.legend()
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bench", type=Path, help="a `coevo bench --preset compression` directory")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the table and plot go")
    args = parser.parse_args(argv)
    table = summarize(args.bench)
    write_table(args.out, "compression", markdown(table), table)
    plot(table, args.out / "compression.png")
    print(f"wrote {args.out / 'compression.md'}, .json and .png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
