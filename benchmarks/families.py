"""Which model family wins at which size (issue 30's quality table): the MLP and the conv family
on digits, each as coevolution, isolated cells and the plain baseline, at each kept fraction,
from a finished `coevo bench benchmarks/specs/families-digits.toml` directory.

    .venv/bin/coevo bench benchmarks/specs/families-digits.toml --jobs 2 --out runs/families-digits
    .venv/bin/python benchmarks/families.py runs/families-digits

Per family and kept fraction: each side's best-pair test L1 (the pair its run chose by validation
loss) and live kept fraction, median [Q1-Q3] over the seeds; coevolution against each control of
its own family, and the conv family against the MLP (same side, same kept), paired by seed (the
data byte-identical: refused otherwise): the median difference and the Wilcoxon signed-rank p;
seconds per generation. Writes ``benchmarks/results/families.{md,json}``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from coevo.bench.report import attach_data, median_iqr, paired_comparison, read_rows, write_table
from coevo.errors import UserError

RESULTS = Path(__file__).resolve().parent / "results"
SIDES = ("coevo", "isolated", "baseline")
FAMILIES = ("mlp", "conv")


def _fmt(stat: list[float] | None, digits: int = 4) -> str:
    if stat is None:
        return "-"
    med, q1, q3 = stat
    return f"{med:.{digits}f} [{q1:.{digits}f}-{q3:.{digits}f}]"


def _vs(pair: dict) -> str:
    if not pair:
        return "-"
    return f"{pair['difference']:+.4f} (p {pair['wilcoxon_p']:.3f})"


def build(bench: Path) -> tuple[str, dict]:
    rows = attach_data(read_rows(bench / "rows.jsonl"), bench)
    runs: dict[tuple[str, str, str], dict[int, dict]] = {}
    for row in rows:
        side, family, kept = row["combination"].split("-")
        runs.setdefault((side, family, kept), {})[int(row["seed"])] = row
    if not runs:
        raise UserError(f"{bench}/rows.jsonl holds no finished trials")
    kepts = sorted({k for _, _, k in runs}, key=float, reverse=True)
    seeds = sorted({s for r in runs.values() for s in r})
    lines = ["| family | kept | coevolution | isolated cells | baseline | coevo - isolated | coevo - baseline "
             "| live kept (coevo) | s / generation (coevo) |", "|---|---|---|---|---|---|---|---|---|"]
    data: dict = {"seeds": seeds, "cells": {}}
    for family in FAMILIES:
        for kept in kepts:
            got = {side: runs.get((side, family, kept), {}) for side in SIDES}
            stats = {side: median_iqr([r["test_loss"] for r in got[side].values()]) for side in SIDES}
            vs = {c: paired_comparison(got["coevo"], got[c]) if got["coevo"] and got[c] else {}
                  for c in ("isolated", "baseline")}
            live = median_iqr([r["kept_fraction"] for r in got["coevo"].values()])
            speed = median_iqr([r["seconds_per_generation"] for r in got["coevo"].values()])
            lines.append(f"| {family} | {kept} | {_fmt(stats['coevo'])} | {_fmt(stats['isolated'])} | "
                         f"{_fmt(stats['baseline'])} | {_vs(vs['isolated'])} | {_vs(vs['baseline'])} | "
                         f"{_fmt(live, 3)} | {speed[0]:.2f} |" if speed else
                         f"| {family} | {kept} | - | - | - | - | - | - | - |")
            data["cells"][f"{family}-{kept}"] = {"test_loss": stats, "vs": vs, "kept": live, "seconds": speed}
    lines += ["", "| side | kept | conv - mlp (test L1, paired by seed) |", "|---|---|---|"]
    for side in SIDES:
        for kept in kepts:
            a, b = runs.get((side, "conv", kept), {}), runs.get((side, "mlp", kept), {})
            pair = paired_comparison(a, b) if a and b else {}
            data["cells"][f"conv-vs-mlp-{side}-{kept}"] = pair
            lines.append(f"| {side} | {kept} | {_vs(pair)} |")
    lines += ["", f"Median [Q1-Q3] over held-out seeds {seeds} ({len(seeds)}): best-pair test L1 on digits "
              f"(the pair each run chose by validation loss). Differences: median over seeds of the paired "
              f"difference, Wilcoxon signed-rank p (5 seeds: the smallest two-sided p is 0.0625)."]
    return "\n".join(lines), data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bench", type=Path, help="a finished bench directory of families-digits.toml")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    try:
        text, data = build(args.bench)
    except UserError as exc:
        print(f"families.py: error: {exc}", file=sys.stderr)
        return 2
    write_table(args.out, "families", text, data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
