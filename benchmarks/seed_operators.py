"""The table of the seed papers' operators (docs/operators.md, "The seed papers' operators side by side") from a
finished `coevo bench --preset seeds` directory.

    .venv/bin/coevo bench --preset seeds --jobs 2 --out bench-runs/seeds
    .venv/bin/python benchmarks/seed_operators.py bench-runs/seeds

Per operator and mode: best-pair test L1 and live kept fraction as median [Q1-Q3] over the seeds,
the compact fraction (the dense model an export ships), and the paired Wilcoxon p of the test
loss against `none` of the same mode (matched seeds), Holm-corrected over every operator and
both modes. Writes ``benchmarks/results/seed_operators.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from coevo.bench.report import holm, read_rows, wilcoxon_p

RESULTS = Path(__file__).resolve().parent / "results"
ORDER = ["none", "random", "variance", "conjunctive", "flipout", "snip", "snap", "merge", "early_bird",
         "magnitude (scope=layer)", "magnitude (scope=global)", "random (unit=neuron)"]


def name_of(row: dict) -> str:
    """The operator and the selector settings that set it apart (magnitude per layer vs global)."""
    params = [f"{k.split('.')[-1]}={v}" for k, v in sorted(row.get("settings", {}).items())
              if k.startswith("prune.params.") and v is not None]
    return row["operator"] + (f" ({', '.join(params)})" if params else "")


def first_events(bench_dir: Path, rows: list[dict], event: str) -> list[int]:
    """Per trial, the generation ``event`` first happened (summary.json ``EVENT_generation``)."""
    found = []
    for row in rows:
        summary = bench_dir / row["run_dir"] / "summary.json"
        if summary.exists():
            found.append(int(json.loads(summary.read_text()).get(f"{event}_generation", -1)))
    return found


def _iqr(values: list[float], digits: int) -> str:
    q1, q2, q3 = np.percentile(values, [25, 50, 75])
    return f"{q2:.{digits}f} [{q1:.{digits}f}-{q3:.{digits}f}]"


def table(rows: list[dict]) -> tuple[str, list[dict]]:
    by: dict[tuple[str, str], dict[int, dict]] = {}
    for row in rows:
        by.setdefault((row["mode"], name_of(row)), {})[row["seed"]] = row
    modes = [m for m in ("coevolution", "canonical") if any(k[0] == m for k in by)]
    cells, tests = [], []
    for mode in modes:
        none = by.get((mode, "none"), {})
        for op in ORDER:
            trials = by.get((mode, op))
            if not trials:
                continue
            seeds = sorted(set(trials) & set(none))
            p = None
            if op != "none" and len(seeds) >= 2:
                p = wilcoxon_p([trials[s]["test_loss"] for s in seeds], [none[s]["test_loss"] for s in seeds])
                tests.append(len(cells))
            cells.append({"mode": mode, "operator": op, "n": len(trials), "p": p,
                          "test_loss": [r["test_loss"] for r in trials.values()],
                          "kept": [r["kept_fraction"] for r in trials.values()],
                          "compact": [r["compact_fraction"] for r in trials.values()],
                          "seconds_per_generation": [r["seconds_per_generation"] for r in trials.values()]})
    for i, adjusted in zip(tests, holm([cells[i]["p"] for i in tests])):
        cells[i]["p_holm"] = adjusted
    lines = ["| mode | operator | n | test L1 | kept (live) | compact | p vs none (Holm) |", "|---|---|---|---|---|---|---|"]
    for c in cells:
        p = "" if c["p"] is None else f"{c['p']:.3f} ({c['p_holm']:.2f})"
        lines.append(f"| {c['mode']} | `{c['operator']}` | {c['n']} | {_iqr(c['test_loss'], 4)} | {_iqr(c['kept'], 3)} "
                     f"| {np.median(c['compact']):.3f} | {p} |")
    return "\n".join(lines), cells


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bench_dir", type=Path)
    args = parser.parse_args(argv)
    rows_path = args.bench_dir / "rows.jsonl"
    if not rows_path.exists():
        print(f"error: {args.bench_dir} has no rows.jsonl; run `coevo bench --preset seeds --out DIR` first",
              file=sys.stderr)
        return 2
    rows = read_rows(rows_path)
    text, cells = table(rows)
    for mode in ("coevolution", "canonical"):
        tickets = first_events(args.bench_dir, [r for r in rows if r["mode"] == mode and r["operator"] == "early_bird"],
                               "early_bird")
        if tickets:
            text += f"\n\n`early_bird` in {mode}: first ticket at generation {', '.join(map(str, tickets))} (one per seed)."
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "seed_operators.md").write_text(f"From {args.bench_dir} (`coevo bench --preset seeds`).\n\n{text}\n")
    (RESULTS / "seed_operators.json").write_text(json.dumps(cells, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
