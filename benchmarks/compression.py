"""The compression table (README, "Compression"): coevolution at its defaults against its two
controls, ten isolated cells (grid.radius = 0) and the plain baseline inside coevo, at each kept
fraction, from a finished `coevo bench --preset compression` directory.

    .venv/bin/coevo bench --preset compression --jobs 2 --out runs/compression
    .venv/bin/python benchmarks/compression.py runs/compression

Per kept fraction: each side's best-pair test L1 (the pair its run chose by validation loss) and
live kept fraction as median [Q1-Q3] over the seeds; coevolution against each control, paired by
seed (same data, byte for byte): the median difference (coevolution - control), the paired A12
(the share of seeds where coevolution's loss is higher: below 0.5 it wins) and the Wilcoxon
signed-rank p (refused, naming the seed, where a seed's two runs had different data configs); for
coevolution also the mean test L1 over its cells; wall seconds and gradient steps per run.
Writes ``benchmarks/results/compression.{md,json,png}`` (``--stem`` for another name).
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
SIDES = ("coevo", "isolated", "baseline", "baseline-reset", "baseline-4000-epochs")
"""coevo: coevolution; isolated: the same cells with grid.radius = 0; baseline: one autoencoder;
baseline-reset: the baseline with coevolution's exploration mutation; baseline-4000-epochs: the
baseline trained ten times as long (benchmarks/specs/baseline-epochs.toml)."""
CONTROLS = ("isolated", "baseline", "baseline_reset", "baseline_4000_epochs")
EXTRA_ROWS = {"baseline_reset": "baseline with reset 0.01", "baseline_4000_epochs": "baseline, 4,000 epochs"}


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


def summarize(bench: Path, *more: Path) -> list[dict]:
    """The table's entries from one bench directory, plus the rows of ``more`` (other benches of
    the same data and seeds, e.g. the baseline at 4,000 epochs)."""
    rows = []
    for where in (bench, *more):
        found = attach_data(read_rows(where / "rows.jsonl"), where)
        if not found:
            sys.exit(f"{where}/rows.jsonl has no rows: run `coevo bench --preset compression --out {where}` first")
        rows += [dict(r, bench_dir=str(where)) for r in found]
    by = {}
    for row in rows:
        side = side_of(row)
        if side in SIDES:
            by.setdefault((target_of(row), side), {})[row["seed"]] = row
    out = []
    for target in sorted({t for t, _ in by}, key=float, reverse=True):
        coevo = by.get((target, "coevo"), {})
        groups = {side.replace("-", "_"): by.get((target, side), {}) for side in SIDES}
        # the three main sides on the seeds they all ran; the extra rows pair on their own seeds
        seeds = sorted(set(coevo).intersection(*[groups[n] for n in ("isolated", "baseline") if groups[n]]))
        entry = {"target": float(target), "seeds": seeds,
                 "floor": next(iter(next(g for g in groups.values() if g).values())).get("test_loss_floor")}
        for side, group in groups.items():
            runs = ([group[s] for s in seeds if s in group] if side not in EXTRA_ROWS else []) or list(group.values())
            if not runs:
                continue
            entry[side] = {
                "n": len(runs),
                "test_loss": median_iqr([r["test_loss"] for r in runs]),
                "test_loss_mean": median_iqr([r["test_loss_mean"] for r in runs]),
                "kept_fraction": median_iqr([r["kept_fraction"] for r in runs]),
                "wall_seconds": float(np.median([r["wall_seconds"] for r in runs])),
                "gradient_steps": gradient_steps(Path(runs[0].get("bench_dir", bench)), runs[0]),
            }
        try:  # the table pairs by seed: refused where a seed's two runs had different data
            for control in CONTROLS:
                if coevo and groups[control]:
                    entry[f"against_{control}"] = paired_comparison(coevo, groups[control])
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

    def versus(e: dict, control: str) -> str:
        vs = e.get(f"against_{control}")
        if not vs:
            return "| | | "
        return f"| {vs['difference']:+.4f} | {vs['a12']:.2f} | {vs['wilcoxon_p']:.3f} "

    lines = ["| kept target | coevolution | isolated cells | baseline | vs isolated: difference | A12 | p "
             "| vs baseline: difference | A12 | p | live kept coevo / isolated / baseline | wall s "
             "coevo / isolated / baseline |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for e in table:
        c = e.get("coevo")
        if not c:
            continue
        i, b = e.get("isolated"), e.get("baseline")
        kept = " / ".join(f"{x['kept_fraction'][0]:.3f}" if x else "-" for x in (c, i, b))
        wall = " / ".join(f"{x['wall_seconds']:.0f}" if x else "-" for x in (c, i, b))
        lines.append(f"| {kept_label(e['target'])} | {q(c['test_loss'])} | {q(i['test_loss']) if i else '-'} "
                     f"| {q(b['test_loss']) if b else '-'} {versus(e, 'isolated')}{versus(e, 'baseline')}"
                     f"| {kept} | {wall} |")
        for control, name in EXTRA_ROWS.items():
            br = e.get(control)
            if br and e.get(f"against_{control}"):
                lines.append(f"| {kept_label(e['target'])}, {name} | {q(c['test_loss'])} | "
                             f"| {q(br['test_loss'])} | | | {versus(e, control)}"
                             f"| {c['kept_fraction'][0]:.3f} / - / {br['kept_fraction'][0]:.3f} "
                             f"| {c['wall_seconds']:.0f} / - / {br['wall_seconds']:.0f} |")
    n = max((len(e["seeds"]) for e in table), default=0)
    seeds = sorted({s for e in table for s in e["seeds"]})
    span = f"seeds {seeds[0]}-{seeds[-1]}" if seeds else "no seeds"
    steps = next((e for e in table if e.get("coevo") and e.get("baseline")), None)
    lines += ["", f"Best-pair test L1, median [Q1-Q3] over {n} seeds ({span}); each difference (coevolution - "
              "control), A12 (the share of seeds where coevolution's test L1 is higher) and Wilcoxon signed-rank p "
              "pair each seed's runs (same data)."]
    if steps:
        lines.append(f"Gradient steps per run: coevolution and isolated cells {steps['coevo']['gradient_steps']:,}, "
                     f"the baseline {steps['baseline']['gradient_steps']:,}.")
    return "\n".join(lines)


def plot(table: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    names = {"coevo": "coevolution (defaults)", "isolated": "isolated cells (grid.radius = 0)",
             "baseline": "baseline (canonical magnitude)"}
    for side, colour in (("coevo", "tab:blue"), ("isolated", "tab:green"), ("baseline", "tab:orange")):
        pts = [(e[side]["kept_fraction"][0], e[side]["test_loss"]) for e in table if side in e]
        if not pts:
            continue
        kept = [p[0] for p in pts]
        med = [p[1][0] for p in pts]
        err = [[p[1][0] - p[1][1] for p in pts], [p[1][2] - p[1][0] for p in pts]]
        ax.errorbar(kept, med, yerr=err, marker="o", capsize=3, color=colour, label=names[side])
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
    parser.add_argument("more", type=Path, nargs="*",
                        help="other bench directories of the same data and seeds (benchmarks/specs/baseline-epochs.toml)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the table and plot go")
    parser.add_argument("--stem", default="compression", help="file name of the table and plot (default compression)")
    args = parser.parse_args(argv)
    table = summarize(args.bench, *args.more)
    write_table(args.out, args.stem, markdown(table), table)
    plot(table, args.out / f"{args.stem}.png")
    print(f"wrote {args.out / (args.stem + '.md')}, .json and .png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
