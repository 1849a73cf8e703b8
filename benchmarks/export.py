"""What `coevo export` saves: parameters, file size and inference time, masked against compact.

For each run directory given, it compacts the best pair (:mod:`coevo.export`) and reports the
parameters and layer widths before and after, the TorchScript file size of the masked dense pair
and of the compact model, and the median time of one forward pass (reconstruction) on a batch of
uniform random rows: the masked pair (plain torch modules, pruned entries as zeros), the compact
model (the same modules, fewer neurons), and the compact TorchScript file loaded back with
``torch.jit.load``, and the masked pair again as a control. They are timed in turn, each going
first in its round, one torch thread, and each reports its fastest call: on a shared machine
the medians swing by 2x between identical models, the minimum much less. The speed-up is
masked / compact.

Writes ``benchmarks/results/export.json`` and ``.md``.

    .venv/bin/python benchmarks/export.py runs/A runs/B --label "defaults" --label "variance 0.1"
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from coevo import export

RESULTS = Path(__file__).resolve().parent / "results"


def _dense(enc_state: dict, dec_state: dict) -> export.Compact:
    """The masked pair with nothing removed, as a Compact (for its file size)."""
    enc = export.network_layers(enc_state, "relu")
    dec = export.network_layers(dec_state, "sigmoid")
    layers = [export.DenseLayer((w * wm).astype(np.float32), (b * bm).astype(np.float32), act)
              for w, b, wm, bm, act in enc + dec]
    widths = [layers[0].weight.shape[1]] + [l.weight.shape[0] for l in layers]
    kept = [np.arange(n) for n in widths]
    return export.Compact(layers[: len(enc)], layers[len(enc):], kept, kept[len(enc)])


def measure(run_dir: Path, batch: int, repeats: int) -> dict:
    saved = torch.load(run_dir / "best.pt", weights_only=True)
    enc_state, dec_state = saved["encoder"], saved["decoder"]
    summary = json.loads((run_dir / "summary.json").read_text())
    model = export.compact_pair(enc_state, dec_state)
    enc, dec = export.masked_pair(enc_state, dec_state)
    comp = export.CompactAutoencoder(model)
    payload = export.torchscript_bytes(model)
    loaded = torch.jit.load(io.BytesIO(payload))
    x = torch.rand(batch, model.widths[0], generator=torch.Generator().manual_seed(0))
    diff = export.max_difference((enc, dec), model, x)
    fns = {"masked": lambda v: dec(enc(v)), "compact": comp, "torchscript": loaded,
           "masked_again": lambda v: dec(enc(v))}  # a control: how far apart two identical models time
    times: dict[str, list[float]] = {k: [] for k in fns}
    with torch.no_grad():
        for fn in fns.values():
            fn(x), fn(x)
        names = list(fns)
        for i in range(repeats):
            for name in names[i % len(names):] + names[: i % len(names)]:  # each goes first in turn
                fn = fns[name]
                t0 = time.perf_counter()
                fn(x)
                times[name].append(time.perf_counter() - t0)
    med = {k: float(np.median(v)) for k, v in times.items()}
    best = {k: float(np.min(v)) for k, v in times.items()}
    n_before = sum(p.numel() for p in list(enc.parameters()) + list(dec.parameters()))
    return {
        "run_dir": str(run_dir), "operator": summary["operator"], "kept_fraction": summary["kept_fraction"],
        "compact_fraction": summary["compact_fraction"], "test_loss": summary["test_loss"],
        "parameters_before": n_before, "parameters_after": model.parameters,
        "widths_before": _dense(enc_state, dec_state).widths, "widths_after": model.widths,
        "bytes_masked": len(export.torchscript_bytes(_dense(enc_state, dec_state))), "bytes_compact": len(payload),
        "max_difference": diff, "batch": batch, "repeats": repeats,
        "ms_masked": best["masked"] * 1e3, "ms_compact": best["compact"] * 1e3,
        "ms_torchscript": best["torchscript"] * 1e3, "ms_masked_again": best["masked_again"] * 1e3,
        "speedup": best["masked"] / best["compact"],
        "median_ms": {k: v * 1e3 for k, v in med.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", type=Path, nargs="+")
    parser.add_argument("--label", action="append", default=[], help="a name per run directory, in order")
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    labels = args.label + [str(p) for p in args.run_dirs[len(args.label):]]
    rows = []
    for label, run_dir in zip(labels, args.run_dirs):
        row = {"label": label, **measure(run_dir, args.batch, args.repeats)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    lines = [f"Batch of {args.batch} rows, one torch thread, fastest of {args.repeats} calls taken in turn "
             f"(torch {torch.__version__}); \"masked again\" times the masked pair twice, the noise floor.", "",
             "| run | kept (live) | parameters before -> after | widths after | TorchScript bytes masked -> compact "
             "| ms masked | ms masked again | ms compact | ms compact (loaded TorchScript) | speed-up |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['label']} | {r['kept_fraction']:.3f} | {r['parameters_before']:,} -> {r['parameters_after']:,} "
                     f"| {'-'.join(map(str, r['widths_after']))} | {r['bytes_masked']:,} -> {r['bytes_compact']:,} "
                     f"| {r['ms_masked']:.2f} | {r['ms_masked_again']:.2f} | {r['ms_compact']:.2f} | {r['ms_torchscript']:.2f} | {r['speedup']:.2f}x |")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "export.json").write_text(json.dumps({"batch": args.batch, "repeats": args.repeats,
                                                      "torch": torch.__version__, "rows": rows}, indent=2) + "\n")
    (RESULTS / "export.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
