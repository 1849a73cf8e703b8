"""The levers table (issue 19): each lever of `benchmarks/specs/levers*.toml` against the defaults'
own runs of the same seeds and data (the spec's `defaults` combination, or else the rows of a
second directory labelled `--defaults`: the compression preset's `coevo-0.10` unless told).

    .venv/bin/coevo bench benchmarks/specs/levers.toml --jobs 2 --out runs/levers
    .venv/bin/python benchmarks/levers.py runs/levers

A levers spec chooses defaults, so it is tuning (docs/benchmarking.md, "Tuning seeds and headline
seeds"): the levers are ranked by best-pair *validation* L1, and the paired difference against the
defaults (same seed, same data: refused otherwise), the paired A12 (the share of seeds where the
lever's validation loss is higher) and the Wilcoxon p are on validation loss. Test L1 is shown
beside it (median [Q1-Q3] and the paired difference), labelled, and ranks nothing; so are the live
kept fraction and the cells' mean test L1. Writes ``benchmarks/results/levers.{md,json}``
(``--stem levers-2``: ``levers-2.{md,json}``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


from coevo.bench.report import attach_data, median_iqr, paired_comparison, read_rows, write_table
from coevo.errors import UserError

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULTS = "defaults"                 # the levers spec's own unchanged combination
COMPRESSION_DEFAULTS = "coevo-0.10"   # the compression preset's run of the defaults
RANK_BY = "validation_loss"           # tuning ranks on validation; test loss is for headline tables


def summarize(levers_dir: Path, compression_dir: Path | None = None, defaults_label: str | None = None,
              only: list[str] | None = None) -> list[dict]:
    """The table: the defaults' row first, then each lever (those named in ``only``, if given),
    best median validation loss first. The defaults are the levers directory's rows labelled
    ``defaults_label`` (or "defaults"), else the second directory's labelled ``defaults_label``
    (or the compression preset's coevo-0.10)."""
    groups: dict[str, dict[int, dict]] = {}
    for row in attach_data(read_rows(levers_dir / "rows.jsonl"), levers_dir):
        groups.setdefault(row["label"], {})[int(row["seed"])] = row
    own = defaults_label if defaults_label in groups else DEFAULTS
    if own in groups:
        groups[DEFAULTS] = groups.pop(own)
    elif compression_dir is not None:
        groups[DEFAULTS] = {int(r["seed"]): r for r in attach_data(read_rows(compression_dir / "rows.jsonl"),
                                                                    compression_dir)
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
                 RANK_BY: median_iqr([runs[s][RANK_BY] for s in seeds]),
                 "test_loss": median_iqr([runs[s]["test_loss"] for s in seeds]),
                 "kept_fraction": median_iqr([runs[s]["kept_fraction"] for s in seeds]),
                 "test_loss_mean": median_iqr([runs[s]["test_loss_mean"] for s in seeds])}
        if label != DEFAULTS:
            try:  # pairs by seed: refused where a seed's two runs had different data
                entry.update(paired_comparison(runs, defaults, RANK_BY))
                entry["test"] = paired_comparison(runs, defaults, "test_loss")
            except UserError as exc:
                sys.exit(f"{levers_dir}, lever {label!r} against the defaults: {exc}")
        table.append(entry)
    levers = sorted(table[1:], key=lambda e: e[RANK_BY][0])  # stable: spec order breaks ties
    return table[:1] + levers


def markdown(table: list[dict]) -> str:
    def q(v: list[float], digits: int = 4) -> str:
        return f"{v[0]:.{digits}f} [{v[1]:.{digits}f}-{v[2]:.{digits}f}]"

    lines = ["| lever (one change from the defaults) | seeds | validation L1 (ranks) | difference | A12 | p "
             "| test L1 (not ranked on) | test difference | kept | cells' mean |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for e in table:
        diff = (f"{e['difference']:+.4f} | {e['a12']:.2f} | {e['wilcoxon_p']:.3f}" if "difference" in e else "| |")
        test_diff = f"{e['test']['difference']:+.4f}" if "test" in e else ""
        lines.append(f"| {e['lever']} | {len(e['seeds'])} | {q(e[RANK_BY])} | {diff} | {q(e['test_loss'])} "
                     f"| {test_diff} | {q(e['kept_fraction'], 3)} | {e['test_loss_mean'][0]:.4f} |")
    lines += ["", "Median [Q1-Q3]; levers ranked by median validation L1 (tuning: test L1 is shown, not used). "
              "The difference (lever - defaults), A12 (the share of seeds where the lever's validation L1 is "
              "higher) and the Wilcoxon signed-rank p are on validation L1 and pair each seed's runs; the test "
              "difference is the median per-seed difference of test L1."]
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
