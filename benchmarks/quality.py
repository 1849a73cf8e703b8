"""What a user gets from a run: loss and kept fraction over seeds, for a sweep of settings.

Runs a ``coevo bench`` spec (a preset shipped in ``coevo/bench/presets`` or a file), then summarises
its rows as median [Q1-Q3] over seeds of what the quality goal is judged by:

- ``test_loss``: the best pair's (lowest validation loss) test loss;
- ``test_loss_mean``: the mean over every cell's centre of its test loss;
- ``train_loss_mean``: the mean over cells of the training loss (the paper's figure);
- ``kept_fraction``: the best pair's alive entries on a live path (``mask_kept`` and
  ``compact`` beside it);
- ``seconds_per_generation``.

Writes ``benchmarks/results/quality-<name>.json`` (every row and the medians) and ``.md`` (the
table docs/results.md shows). Re-running resumes the sweep (finished trials are kept).

    .venv/bin/python benchmarks/quality.py --preset levers --jobs 2
    .venv/bin/python benchmarks/quality.py --preset reproduce --jobs 2
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from coevo import bench
from coevo.bench import spec as bench_spec

RESULTS = Path(__file__).resolve().parent / "results"
MEASURES = (("test_loss", "best-pair test L1", 4), ("test_loss_mean", "mean test L1 over cells", 4),
            ("train_loss_mean", "mean train L1 over cells", 4), ("kept_fraction", "kept (live)", 3),
            ("mask_kept_fraction", "kept (masks)", 3), ("compact_fraction", "compact", 3),
            ("seconds_per_generation", "s / generation", 3))


def iqr(values: list[float], digits: int) -> str:
    q1, med, q3 = np.percentile(values, [25, 50, 75])
    return f"{med:.{digits}f} [{q1:.{digits}f}-{q3:.{digits}f}]"


def summarise(rows: list[dict], spec: bench_spec.Spec) -> tuple[list[dict], str]:
    """Per combination (in spec order): n and median [IQR] of every measure; and a Markdown table."""
    table = []
    lines = ["| combination | mode | n | " + " | ".join(label for _, label, _ in MEASURES) + " |",
             "|---|---|---|" + "---|" * len(MEASURES)]
    for combination in spec.combinations:
        mine = [r for r in rows if r["combination"] == combination.id]
        if not mine:
            continue
        entry = {"combination": combination.label, "id": combination.id, "mode": combination.mode, "n": len(mine)}
        cells = []
        for key, _, digits in MEASURES:
            values = [r[key] for r in mine if r.get(key) is not None]
            entry[key] = {"median": float(np.median(values)), "q1": float(np.percentile(values, 25)),
                          "q3": float(np.percentile(values, 75)), "values": values} if values else None
            cells.append(iqr(values, digits) if values else "-")
        table.append(entry)
        lines.append(f"| {combination.label} | {combination.mode} | {len(mine)} | " + " | ".join(cells) + " |")
    floor = {r.get("test_loss_floor") for r in rows} - {None}
    baseline = [r["test_loss_baseline"] for r in rows if r.get("test_loss_baseline") is not None]
    if floor or baseline:
        lines.append("")
        lines.append(f"Test L1 floor (noise rate): {', '.join(f'{f:g}' for f in sorted(floor)) or '-'}; "
                     f"baseline (each bit's training majority): {np.median(baseline):.4f}" if baseline else "")
    return table, "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", nargs="?", type=Path, help="a bench spec file (or --preset)")
    parser.add_argument("--preset", help="a bench preset shipped with coevo (e.g. levers, reproduce)")
    parser.add_argument("--jobs", type=int, default=None, help="trials at once (default: one per core)")
    parser.add_argument("--out", type=Path, help="bench directory (default: bench-runs/<name>)")
    args = parser.parse_args(argv)
    spec = bench_spec.load(args.spec, args.preset)
    out = args.out or bench.default_out(spec)
    outcome = bench.run(spec, out, args.jobs)
    print(bench.format_outcome(outcome))
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines() if line.strip()]
    table, markdown = summarise(rows, spec)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"quality-{spec.name}.json").write_text(json.dumps({"spec": spec.name, "table": table}, indent=1) + "\n")
    (RESULTS / f"quality-{spec.name}.md").write_text(markdown)
    print(markdown)
    print(f"written: {RESULTS / f'quality-{spec.name}.md'} and .json")
    return 1 if outcome.failed else 0


if __name__ == "__main__":
    sys.exit(main())
