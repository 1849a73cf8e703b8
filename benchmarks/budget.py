"""Where a pruned run's budget went, and what the same budget allows on the paper's problem.

For each run directory (a bench's ``trials/LABEL/seed-N``, or a ``coevo run`` directory) this
prints the alive entries of each layer of the best pair, and an estimate of the best test L1 its
output layer's entries allow. The estimate counts what a decoder with a one-hot cluster code
needs: each output bit j a bias, plus a weight from the indicator of each cluster where its
centroid bit is the minority value, min(k_j, K - k_j) with k_j the clusters where the bit is 0.
Every (bit, cluster) pair the budget leaves out costs that cluster's rows (1/K of a split) the
difference between a wrong and a right bit under noise p, (1 - 2p) / (K D) of the mean L1. A
decoder whose hidden layer learns shared codes (a unit on for a set of clusters) can beat it, so
it is a yardstick, not a proof. Writes ``benchmarks/results/budget.{md,json}``.

    .venv/bin/python benchmarks/budget.py runs/levers-3/trials/coevo-0.05/seed-* --stem budget-0.05
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tomllib
from pathlib import Path

import numpy as np
import torch

from coevo import config
from coevo.bench.report import write_table
from coevo.data import load

RESULTS = Path(__file__).resolve().parent / "results"


def one_hot_estimate(centroids: np.ndarray, noise: float, output_entries: int) -> tuple[int, float]:
    """(entries a one-hot-code output layer needs to reach the noise floor, the test L1 it
    reaches with ``output_entries``)."""
    n_clusters, n_dims = centroids.shape
    zeros = (centroids == 0).sum(axis=0)
    need = int(n_dims + np.minimum(zeros, n_clusters - zeros).sum())
    missing = max(0, need - output_entries)
    return need, noise + missing * (1 - 2 * noise) / (n_clusters * n_dims)


def inspect(run_dir: Path) -> dict:
    cfg = config.from_dict(tomllib.loads((run_dir / "config.toml").read_text()))
    if cfg.data.source != "binary_clustering":
        sys.exit(f"{run_dir}: the estimate is for the paper's problem (data.source = 'binary_clustering'), "
                 f"not {cfg.data.source!r}")
    summary = json.loads((run_dir / "summary.json").read_text())
    model = torch.load(run_dir / "best.pt", weights_only=True)
    layers = []
    for role in ("encoder", "decoder"):
        masks = {name: t.bool() for name, t in model[role].items() if name.endswith("_mask")}
        for name in sorted(m for m in masks if m.endswith("weight_mask")):
            bias = masks[name.replace("weight_mask", "bias_mask")]
            layers.append({"layer": f"{role} {name.split('.')[0]}", "weights": int(masks[name].sum()),
                           "biases": int(bias.sum()), "entries": int(masks[name].numel() + bias.numel())})
    data = load(cfg.data, cfg.run.seed)
    output = layers[-1]["weights"] + layers[-1]["biases"]
    need, estimate = one_hot_estimate(data.centroids, cfg.data.noise, output)
    return {"run": str(run_dir), "seed": cfg.run.seed, "test_loss": summary["test_loss"],
            "kept_fraction": summary["kept_fraction"], "layers": layers,
            "before_output_layer": sum(l["weights"] + l["biases"] for l in layers[:-1]),
            "output_layer": output, "floor_needs": need, "one_hot_estimate": estimate}


def markdown(rows: list[dict]) -> str:
    names = [l["layer"] for l in rows[0]["layers"]]
    head = "| run | seed | test L1 | one-hot estimate | kept | " + " | ".join(f"{n} (w+b)" for n in names) + " | output layer needs |"
    lines = [head, "|" + "---|" * (6 + len(names))]
    for r in rows:
        cells = " | ".join(f"{l['weights']}+{l['biases']}" for l in r["layers"])
        lines.append(f"| {Path(r['run']).parent.name} | {r['seed']} | {r['test_loss']:.4f} | {r['one_hot_estimate']:.4f} "
                     f"| {r['kept_fraction']:.3f} | {cells} | {r['floor_needs']} |")
    gaps = [r["test_loss"] - r["one_hot_estimate"] for r in rows]
    lines += ["", f"Median test L1 minus the estimate: {statistics.median(gaps):+.4f}. The estimate: a bias per output "
              "bit plus a weight per (bit, minority cluster) pair under a one-hot cluster code; each pair the "
              "output layer's entries leave out costs (1 - 2p) / (K D) of the mean L1."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+", help="run directories (each with config.toml, summary.json, best.pt)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--stem", default="budget", help="the files' name: STEM.md and STEM.json")
    args = parser.parse_args(argv)
    missing = [r for r in args.runs if not (r / "best.pt").exists()]
    if missing:
        sys.exit(f"{missing[0]} is not a finished run directory (no best.pt): name run directories, "
                 f"e.g. RUNS/trials/coevo-0.05/seed-*")
    rows = [inspect(r) for r in args.runs]
    write_table(args.out, args.stem, markdown(rows), rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
