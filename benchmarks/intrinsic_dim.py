"""Alive latent neurons against intrinsic-dimension estimators, on manifolds of known dimension.

For each d in ``--dims`` it runs coevo on ``data.source = "manifold"`` (d-dimensional, embedded
in ``--n-dims`` dimensions), with the pruning operator ``--operator`` and any ``--set`` overrides,
then ``coevo analyze``, and tabulates the latent neurons left alive (``latent_alive``: on a live
path and firing on at least 1% of test rows), scikit-dimension's TwoNN, MLE and lPCA on the
training split, and the true d. This is the question of Klazinga's thesis (does the number of
active latent neurons estimate the intrinsic dimension?), asked of coevo's operators.

D = 20 by default: a random smooth map of a d-manifold is generically an embedding when
D >= 2d + 1 = 17 for d = 8, and D stays small enough for short runs. The latent layer
(``model.latent``, 10 by default) must be wider than the largest d.

Writes ``benchmarks/results/intrinsic_dim[-NAME].json`` (the rows) and ``.md`` (the table).
Run directories go under ``--out`` (default ``bench-runs/intrinsic_dim[-NAME]``); a d whose run
already has ``analysis.json`` is not run again.

    .venv/bin/python benchmarks/intrinsic_dim.py --operator conjunctive --set prune.target_kept=0.25
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from coevo import analysis, config, runner

RESULTS = Path(__file__).resolve().parent / "results"
BASE = ["run.generations=300", "run.checkpoint_every=0", "data.n_rows=500", "train.batch_size=10"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[2, 3, 5, 8])
    parser.add_argument("--n-dims", type=int, default=20, help="ambient dimension D")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1], help="run.seed values (each draws its own manifold)")
    parser.add_argument("--operator", default="conjunctive", help="pruning operator (prune.operator)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="a coevo config override, repeatable (applied after the benchmark's base: "
                             + ", ".join(BASE) + ")")
    parser.add_argument("--name", default="", help="suffix of the result files and run directories")
    parser.add_argument("--out", type=Path, help="where the run directories go")
    args = parser.parse_args(argv)
    suffix = f"-{args.name}" if args.name else ""
    out = args.out or Path("bench-runs") / f"intrinsic_dim{suffix}"
    overrides = BASE + [f"prune.operator={args.operator}", *args.overrides]

    rows = []
    for d in args.dims:
        for seed in args.seeds:
            cfg = config.load(None, overrides + ["data.source=manifold", f"data.intrinsic_dim={d}",
                                                 f"data.n_dims={args.n_dims}", f"run.seed={seed}"])
            run_dir = out / f"d{d}-s{seed}"
            done = run_dir / "analysis.json"
            if not done.exists() or json.loads(done.read_text()).get("latent_fold_tolerance") != analysis.FOLD_TOLERANCE:
                if not (run_dir / "summary.json").exists():
                    runner.start(cfg, run_dir, quiet=True)
                analysis.analyze(run_dir)
            result = json.loads(done.read_text())
            summary = json.loads((run_dir / "summary.json").read_text())
            row = {"d": d, "D": args.n_dims, "seed": seed, "latent_alive": result["latent_alive"],
                   "latent_needed": result["latent_needed"],
                   "latent_on_path": result["latent_on_path"], "latent_width": result["latent_width"],
                   **result["id_estimates"], "test_loss": summary["test_loss"],
                   "kept_fraction": summary["kept_fraction"], "wall_seconds": round(summary["wall_seconds"], 1),
                   "run_dir": str(run_dir)}
            rows.append(row)
            print(f"d={d} seed={seed}: latent_alive {row['latent_alive']} (on a path {row['latent_on_path']}, "
                  f"needed {row['latent_needed']}), "
                  f"TwoNN {row['TwoNN']:.2f}, MLE {row['MLE']:.2f}, lPCA {row['lPCA']:.2f}, "
                  f"test L1 {row['test_loss']:.4f}, kept {row['kept_fraction']:.3f}", flush=True)

    med = lambda rs, k: float(np.median([r[k] for r in rs]))  # noqa: E731
    lines = [f"Operator `{args.operator}`, settings: `{' '.join(overrides)}`, D = {args.n_dims}, "
             f"latent width {rows[0]['latent_width']}, seeds {', '.join(map(str, args.seeds))} "
             f"(each its own manifold); estimators and loss: median over seeds.", "",
             "| true d | latent alive, per seed | latent needed (analyze, 20%) | TwoNN | MLE | lPCA "
             "| best-pair test L1 | kept |",
             "|---|---|---|---|---|---|---|---|"]
    for d in args.dims:
        rs = [r for r in rows if r["d"] == d]
        lines.append(f"| {d} | {', '.join(str(r['latent_alive']) for r in rs)} | "
                     f"{', '.join(str(r['latent_needed']) for r in rs)} | {med(rs, 'TwoNN'):.2f} | "
                     f"{med(rs, 'MLE'):.2f} | {med(rs, 'lPCA'):.2f} | {med(rs, 'test_loss'):.4f} | "
                     f"{med(rs, 'kept_fraction'):.3f} |")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"intrinsic_dim{suffix}.json").write_text(json.dumps(
        {"operator": args.operator, "overrides": overrides, "rows": rows}, indent=2) + "\n")
    (RESULTS / f"intrinsic_dim{suffix}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
