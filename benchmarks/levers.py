"""The levers table (issue 19): each lever of `benchmarks/specs/levers*.toml` against the defaults'
own runs of the same seeds and data (the spec's `defaults` combination, or else the rows of a
second directory labelled `--defaults`: the compression preset's `coevo-0.10` unless told).

    .venv/bin/coevo bench benchmarks/specs/levers.toml --jobs 2 --out runs/levers
    .venv/bin/python benchmarks/levers.py runs/levers

Per lever: best-pair test L1, live kept fraction and the cells' mean test L1 as median [Q1-Q3]
over the seeds, the paired difference against the defaults (same seed), the paired A12 (the share
of seeds where the lever's loss is higher) and the Wilcoxon p. Writes
``benchmarks/results/levers.{md,json}`` (``--stem levers-2``: ``levers-2.{md,json}``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


from coevo.bench.report import median_iqr, paired_comparison, read_rows, write_table

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULTS = "defaults"                 # the levers spec's own unchanged combination
COMPRESSION_DEFAULTS = "coevo-0.10"   # the compression preset's run of the defaults


def summarize(levers_dir: Path, compression_dir: Path | None = None, defaults_label: str | None = None,
              only: list[str] | None = None) -> list[dict]:
    """The table: the defaults' row first, then each lever (those named in ``only``, if given).
    The defaults are the levers directory's rows labelled ``defaults_label`` (or "defaults"), else
    the second directory's labelled ``defaults_label`` (or the compression preset's coevo-0.10)."""
    groups: dict[str, dict[int, dict]] = {}
    for row in read_rows(levers_dir / "rows.jsonl"):
        groups.setdefault(row["label"], {})[int(row["seed"])] = row
    own = defaults_label if defaults_label in groups else DEFAULTS
    if own in groups:
        groups[DEFAULTS] = groups.pop(own)
    elif compression_dir is not None:
        groups[DEFAULTS] = {int(r["seed"]): r for r in read_rows(compression_dir / "rows.jsonl")
                            if r["label"] == (defaults_label or COMPRESSION_DEFAULTS)}
    if only is not None:
        unknown = sorted(set(only) - set(groups))
        if unknown:
            sys.exit(f"{levers_dir} has no rows labelled {unknown[0]!r}; its labels: {', '.join(sorted(groups))}")
        groups = {label: runs for label, runs in groups.items() if label in only or label == DEFAULTS}
    if not groups.get(DEFAULTS):
        sys.exit(f"{levers_dir} has no '{DEFAULTS}' rows: run the levers spec with its defaults combination, "
                 "or name a `coevo bench --preset compression` directory second")
    defaults = groups.pop(DEFAULTS)
    groups = {DEFAULTS: defaults, **groups}
    table = []
    for label, runs in groups.items():
        seeds = sorted(runs)
        entry = {"lever": label, "seeds": seeds,
                 "test_loss": median_iqr([runs[s]["test_loss"] for s in seeds]),
                 "kept_fraction": median_iqr([runs[s]["kept_fraction"] for s in seeds]),
                 "test_loss_mean": median_iqr([runs[s]["test_loss_mean"] for s in seeds])}
        if label != DEFAULTS:
            entry.update(paired_comparison(runs, defaults))
        table.append(entry)
    return table


def markdown(table: list[dict]) -> str:
    def q(v: list[float], digits: int = 4) -> str:
        return f"{v[0]:.{digits}f} [{v[1]:.{digits}f}-{v[2]:.{digits}f}]"

    lines = ["| lever (one change from the defaults) | seeds | test L1 | kept | cells' mean | difference | A12 | p |",
             "|---|---|---|---|---|---|---|---|"]
    for e in table:
        diff = (f"{e['difference']:+.4f} | {e['a12']:.2f} | {e['wilcoxon_p']:.3f}" if "difference" in e else "| |")
        lines.append(f"| {e['lever']} | {len(e['seeds'])} | {q(e['test_loss'])} | {q(e['kept_fraction'], 3)} "
                     f"| {e['test_loss_mean'][0]:.4f} | {diff} |")
    lines += ["", "Median [Q1-Q3]; the difference (lever - defaults), A12 (the share of seeds where the lever's "
              "test L1 is higher) and the Wilcoxon signed-rank p pair each seed's runs."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("levers", type=Path, help="a `coevo bench benchmarks/specs/levers.toml` directory")
    parser.add_argument("compression", type=Path, nargs="?",
                        help="a `coevo bench --preset compression` directory, if the levers ran without their defaults")
    parser.add_argument("--defaults", default=None,
                        help="the label of the defaults' runs, in the levers directory or else the second one "
                             "(default: 'defaults', else the compression preset's coevo-0.10)")
    parser.add_argument("--only", nargs="+", default=None, help="the levers to report (default: every other label)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--stem", default="levers", help="the files' name: STEM.md and STEM.json (levers-2 for round 2)")
    args = parser.parse_args(argv)
    table = summarize(args.levers, args.compression, args.defaults, args.only)
    write_table(args.out, args.stem, markdown(table), table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
