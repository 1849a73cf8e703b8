"""The functional torch path (``coevo.training.functional``): its speed and memory, measured in one run.

    .venv/bin/python -m coevo.training.warmup           # Numba's cache, once (section 2 compares with it)
    .venv/bin/python benchmarks/functional.py           # all four sections (~15 min on 2 busy cores)
    .venv/bin/python benchmarks/functional.py --quick   # fewer repeats, section 3 at 10 generations
    .venv/bin/python benchmarks/functional.py --sections 1,4

1. The vmapped population step against a per-module loop: the conv family on (1, 8, 8) digits,
   10 pairs, batch 5 and 32, ms per mini-batch step: ``F.train_epoch`` (one vmapped forward, one
   autograd backward of the summed losses, two StackedAdam steps) and a literal
   ``vmap(grad(loss))`` + StackedAdam step, against 10 ordinary ``nn.Module`` pairs each doing
   forward, backward and a ``torch.optim.Adam`` step. The sides are interleaved in every repeat
   (their order alternating) and each ratio is the median of the per-repeat ratios; at 1 and 2
   torch threads. Plus where a vmapped step's time goes (forward, backward, Adam, the rest).
2. ``run.backend=torch`` against ``run.backend=numba`` on the paper's MLP (binary clustering,
   D = 1000, hidden [30], latent 10, 10-cell ring, batch 5): seconds per generation of a short
   run, the first generations dropped, same seed, the two backends interleaved round by round;
   plus a cProfile of one torch run (which functions the generation's time is spent in).
3. A 100-generation conv run on digits, 10-cell ring (the command below): wall seconds after the
   first generation, at ``run.threads=1`` and at torch's default threads; a setting run for fewer
   generations is extrapolated to 100 (and says so). Plus a cProfile of a few conv generations.
4. Peak memory (max RSS of the run's process: ``getrusage(RUSAGE_CHILDREN)`` in a fresh parent)
   of 3-generation runs: conv on digits on a 10-cell ring and a 10 x 10 torus, the MLP paper default.

Writes ``benchmarks/results/functional.{md,json}`` (``--out`` for another stem); the machine's
cores, its load average and the torch threads of every figure are stated.
"""

from __future__ import annotations

import argparse
import cProfile
import csv
import json
import math
import multiprocessing as mp
import os
import platform
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
COEVO = [sys.executable, "-m", "coevo.cli"]

CONV = ["model.family=conv", "data.source=digits", "grid.cells=10", "prune.target_kept=0.2"]
TORUS = ["grid.topology=torus", "grid.shape=[10, 10]"]
BETAS = (0.5, 0.999)  # the config's defaults
LR = 1e-3
BCE = 0.05  # train.bce_weight's default: the training loss is l1 + 0.05 * bce on both sides


def _median(values) -> float:
    return float(statistics.median(values))


def _spread(values: list[float]) -> dict:
    return {"median": _median(values), "min": min(values), "max": max(values), "per_repeat": values}


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# ------------------------------------------------------------------ 1. the vmapped step


def _digits_train():
    from coevo import config
    from coevo.evolution.problem import build

    return build(config.load(None, CONV)).train  # (1079, 64) in [0, 1]


def _conv_stacks(n: int, seed: int):
    from coevo.population import Stack
    from coevo.model import ModelRef, init_rows
    from coevo.model.graph import trace

    ref = ModelRef("conv", (1, 8, 8), 10, ())
    el, dl = trace(ref)
    el.model.template()
    e, d = init_rows(ref, (el, dl), n, seed)
    return ref, el, dl, e, d


def _module_pairs(ref, el, dl, e, d):
    """Ordinary modules holding the same initial parameters as the rows (each its own copy)."""
    import torch

    from coevo.model import build_pair
    from coevo.model.graph import parameters_of

    pairs = []
    for k in range(e.shape[0]):
        enc, dec = build_pair(ref)
        with torch.no_grad():
            for net, layout, row in ((enc, el, e[k]), (dec, dl, d[k])):
                for name, value in parameters_of(layout, torch.as_tensor(row)).items():
                    net.get_parameter(name).copy_(value)
        params = list(enc.parameters()) + list(dec.parameters())
        pairs.append((enc, dec, torch.optim.Adam(params, lr=LR, betas=BETAS)))
    return pairs


def _bce(out, x):
    o = out.clamp(1e-7, 1 - 1e-7)
    return -(x * o.log() + (1 - x) * (1 - o).log()).mean()


def _time_loop(pairs, data, orders, batch: int) -> float:
    """Each pair its own epoch over its rows: forward, backward, torch.optim.Adam; seconds."""
    t0 = time.perf_counter()
    for k, (enc, dec, opt) in enumerate(pairs):
        for rows in orders[k].split(batch):
            x = data[rows].view(-1, 1, 8, 8)
            out = dec(enc(x))
            loss = (out - x).abs().mean() + BCE * _bce(out, x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return time.perf_counter() - t0


def _time_epoch(enc, dec, data, orders, batch: int) -> float:
    import numpy as np

    from coevo.training import functional as F

    t0 = time.perf_counter()
    F.train_epoch(enc, dec, data, orders, np.full(len(enc), LR), batch, "l1", *BETAS, bce_weight=BCE)
    return time.perf_counter() - t0


def _vmap_grad(el, dl):
    from torch.func import grad, vmap

    from coevo.training import functional as F

    def loss(e, d, x):
        out = F.reconstruct(el, dl, e, d, x)
        return F.loss_value(out, x, "l1") + BCE * F._bce(out, x)

    return vmap(grad(loss, argnums=(0, 1)))


def _time_vmap_grad(fn, enc, dec, data, orders, batch: int) -> float:
    """The literal form: one vmap(grad(loss)) call per mini-batch, then the two StackedAdam steps."""
    import numpy as np
    import torch

    from coevo.training.adam import StackedAdam

    n, width = len(enc), data.shape[1]
    lr = np.full(n, LR)
    opts = (StackedAdam(enc, lr, *BETAS), StackedAdam(dec, lr, *BETAS))
    t0 = time.perf_counter()
    for rows in orders.split(batch, dim=1):
        x = torch.index_select(data, 0, rows.reshape(-1)).view(n, -1, width)
        g_enc, g_dec = fn(enc.params, dec.params, x)
        opts[0].step_rows(g_enc.contiguous())
        opts[1].step_rows(g_dec.contiguous())
    return time.perf_counter() - t0


def _breakdown(enc, dec, data, orders, batch: int) -> dict:
    """train_epoch's loop, timed part by part (the same calls, in its order): ms per step."""
    import numpy as np
    import torch
    from torch.func import vmap

    from coevo.training import functional as F
    from coevo.training.adam import StackedAdam

    el, dl = enc.layout, dec.layout
    el.model.template(), dl.model.template()  # built before any vmap, as train_epoch does
    n, width = len(enc), data.shape[1]

    def objective(e, d, x):
        out = F.reconstruct(el, dl, e, d, x)
        value = F.loss_value(out, x, "l1")
        return value + BCE * F._bce(out, x), value

    losses = vmap(objective)
    lr = np.full(n, LR)
    opts = (StackedAdam(enc, lr, *BETAS), StackedAdam(dec, lr, *BETAS))
    loss_sum = torch.zeros(n, dtype=torch.float64)
    parts = {"batch_and_leaves": 0.0, "vmapped_forward": 0.0, "backward": 0.0, "stacked_adam": 0.0, "bookkeeping": 0.0}
    steps = 0
    clock = time.perf_counter
    for rows in orders.split(batch, dim=1):
        t0 = clock()
        x = torch.index_select(data, 0, rows.reshape(-1)).view(n, -1, width)
        e, d = enc.params.detach().requires_grad_(True), dec.params.detach().requires_grad_(True)
        t1 = clock()
        trained, value = losses(e, d, x)
        t2 = clock()
        g_enc, g_dec = torch.autograd.grad(trained.sum(), (e, d))
        t3 = clock()
        loss_sum += value.detach().double() * rows.shape[1]
        t4 = clock()
        opts[0].step_rows(g_enc.contiguous())
        opts[1].step_rows(g_dec.contiguous())
        t5 = clock()
        for key, dt in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t5 - t4, t4 - t3)):
            parts[key] += dt
        steps += 1
    total = sum(parts.values())
    return {"ms_per_step": {k: 1e3 * v / steps for k, v in parts.items()},
            "share": {k: v / total for k, v in parts.items()}}


def _adam_breakdown(stack, repeats: int = 200) -> dict:
    """One StackedAdam.step_rows, its pieces: the float64 bias terms on numpy (and the
    device round trip of the step counts) against the masked update's torch ops; us per call."""
    import numpy as np
    import torch

    from coevo.training import adam

    rows = torch.randn_like(stack.params) * 1e-3
    lr = np.full(len(stack), LR)
    opt = adam.StackedAdam(stack, lr, *BETAS)
    clock = time.perf_counter
    t0 = clock()
    for _ in range(repeats):
        opt.step_rows(rows.clone())
    t1 = clock()
    for _ in range(repeats):
        ss, ib = adam.bias_terms(stack.steps.cpu().numpy(), lr, *BETAS)
        torch.as_tensor(ss), torch.as_tensor(ib)
    t2 = clock()
    for _ in range(repeats):
        rows.clone()
    t3 = clock()
    whole, bias, clone = (t1 - t0) / repeats, (t2 - t1) / repeats, (t3 - t2) / repeats
    return {"step_rows_us": 1e6 * (whole - clone), "bias_terms_us": 1e6 * bias,
            "masked_update_us": 1e6 * (whole - clone - bias)}


def section_step(args) -> dict:
    import torch

    torch.set_flush_denormal(True)  # as coevo's build() does, for both sides
    data = _digits_train()
    out: dict = {"family": "conv (1, 8, 8): Conv2d 1-8-16, Linear 64-10 / Linear 10-64, ConvT 16-8-1",
                 "pairs": 10, "loss": f"l1 + {BCE} * bce", "adam": {"lr": LR, "betas": BETAS},
                 "repeats": args.repeats, "steps_per_timing": args.steps, "by_threads": {}}
    ref, el, dl, e, d = _conv_stacks(10, 1)
    out["parameters_per_pair"] = int(e.shape[1] + d.shape[1])
    fn = _vmap_grad(el, dl)
    from coevo.population import Stack

    for threads in args.step_threads:
        torch.set_num_threads(threads)
        # several threads on this shared 2-core machine run 10-50x slower per step: fewer of them
        steps, repeats = (args.steps, args.repeats) if threads == 1 else (max(4, args.steps // 4),
                                                                           max(3, args.repeats // 2))
        per_batch = {}
        for batch in (5, 32):
            rows = steps * batch
            gen = torch.Generator().manual_seed(batch)
            orders = torch.stack([torch.randperm(data.shape[0], generator=gen)[:rows] for _ in range(10)])
            pairs = _module_pairs(ref, el, dl, e, d)
            enc, dec = Stack.fresh(el, e), Stack.fresh(dl, d)
            # one untimed pass each: allocator, vmap's first trace, Adam's state
            _time_epoch(enc, dec, data, orders, batch), _time_loop(pairs, data, orders, batch)
            _time_vmap_grad(fn, enc, dec, data, orders, batch)
            t_epoch, t_vg, t_loop = [], [], []
            for r in range(repeats):
                sides = [("epoch", lambda: _time_epoch(enc, dec, data, orders, batch)),
                         ("vmap_grad", lambda: _time_vmap_grad(fn, enc, dec, data, orders, batch)),
                         ("loop", lambda: _time_loop(pairs, data, orders, batch))]
                got = {}
                for name, run in (sides if r % 2 == 0 else sides[::-1]):
                    got[name] = run()
                t_epoch.append(got["epoch"]), t_vg.append(got["vmap_grad"]), t_loop.append(got["loop"])
            ms = lambda ts: [1e3 * t / steps for t in ts]  # noqa: E731
            res = {"steps_per_timing": steps, "repeats": repeats,
                "train_epoch_ms_per_step": _spread(ms(t_epoch)),
                "vmap_grad_ms_per_step": _spread(ms(t_vg)),
                "module_loop_ms_per_step": _spread(ms(t_loop)),
                "ratio_loop_over_train_epoch": _spread([l / v for l, v in zip(t_loop, t_epoch)]),
                "ratio_loop_over_vmap_grad": _spread([l / v for l, v in zip(t_loop, t_vg)]),
            }
            if threads == args.step_threads[0]:
                res["breakdown"] = _breakdown(enc, dec, data, orders, batch)
            per_batch[str(batch)] = res
            print(f"  threads {threads}, batch {batch:2d}: train_epoch {res['train_epoch_ms_per_step']['median']:6.2f} "
                  f"ms/step, vmap(grad) {res['vmap_grad_ms_per_step']['median']:6.2f}, module loop "
                  f"{res['module_loop_ms_per_step']['median']:6.2f}  -> loop/train_epoch "
                  f"{res['ratio_loop_over_train_epoch']['median']:.2f}x "
                  f"[{res['ratio_loop_over_train_epoch']['min']:.2f}-{res['ratio_loop_over_train_epoch']['max']:.2f}], "
                  f"loop/vmap(grad) {res['ratio_loop_over_vmap_grad']['median']:.2f}x", flush=True)
        out["by_threads"][str(threads)] = per_batch
    torch.set_num_threads(args.step_threads[0])
    enc = Stack.fresh(el, e)
    out["stacked_adam_encoder_10_rows"] = _adam_breakdown(enc)
    return out


# ------------------------------------------------------------------ runs of the CLI


def _run(overrides: list[str], out_dir: Path) -> dict:
    """``coevo run`` in a fresh parent that reports its child's max RSS (RUSAGE_CHILDREN)."""
    wrapper = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
               "rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode; "
               "print(rc, time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    cmd = COEVO + ["run", "--quiet", "--out", str(out_dir)] + [a for o in overrides for a in ("--set", o)]
    done = subprocess.run([sys.executable, "-c", wrapper, *cmd], cwd=ROOT, capture_output=True, text=True)
    try:
        rc, wall, rss = done.stdout.split()
    except ValueError:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}") from None
    if int(rc) != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {rc}:\n{done.stderr[-3000:]}")
    with open(out_dir / "logbook.csv") as f:
        rows = list(csv.DictReader(f))
    summary = json.loads((out_dir / "summary.json").read_text())
    return {"seconds": [float(r["seconds"]) for r in rows], "wall": [float(r["wall_seconds"]) for r in rows],
            "process_wall_seconds": float(wall), "peak_rss_mib": int(rss) / 1024,
            "seconds_per_generation": summary.get("seconds_per_generation"), "test_loss": summary.get("test_loss"),
            "kept_fraction": summary.get("kept_fraction")}


def _fresh_dir(tmp: Path, name: str) -> Path:
    path = tmp / name
    n = 0
    while path.exists():
        n += 1
        path = tmp / f"{name}-{n}"
    return path


def _profiled(overrides: list[str], generations: int, threads: int) -> dict:
    """One run in this (fresh) process under cProfile: the share of the generations' time in
    coevo's pieces (cumulative, so nested pieces overlap) and the top functions by own time."""
    import torch

    from coevo import config
    from coevo.evolution.loop import coevolve
    from coevo.evolution.problem import build

    torch.set_num_threads(threads)
    cfg = config.load(None, overrides + [f"run.generations={generations}", "run.checkpoint_every=0",
                                         f"run.threads={threads}"])
    coevolve(build(cfg.replace(run__generations=1)))  # imports, Numba's cache, first traces
    problem = build(cfg)
    profiler = cProfile.Profile()
    profiler.enable()
    coevolve(problem)
    profiler.disable()
    stats = pstats.Stats(profiler).stats
    total = max(v[3] for k, v in stats.items() if k[2] == "coevolve")

    def cum(name: str, file: str = "") -> float:
        return sum(v[3] for k, v in stats.items() if k[2] == name and file in k[0]) / total

    def own(name: str) -> float:  # a builtin's name reads "<method 'run_backward' of ...>"
        return sum(v[2] for k, v in stats.items() if name in k[2]) / total

    shares = {
        "functional.train_epoch": cum("train_epoch", "functional.py"),
        "  vmapped forward (objective)": cum("objective", "functional.py"),
        "  autograd backward (run_backward)": own("'run_backward'"),
        "  StackedAdam.step_rows": cum("step_rows", "adam.py"),
        "  rest of train_epoch (batches, vmap's wrappers, loss sums)": (
            cum("train_epoch", "functional.py") - cum("objective", "functional.py") - own("'run_backward'")
            - cum("step_rows", "adam.py")),
        "functional.pair_losses": cum("pair_losses", "functional.py"),
        "functional.centre_losses (logbook)": cum("centre_losses", "functional.py"),
        "pruning operator (apply_operator)": cum("apply_operator", "loop.py"),
        "  functional.pair_gradients": cum("pair_gradients", "functional.py"),
        "  functional.pair_activations": cum("pair_activations", "functional.py"),
        "numba train kernel": cum("_train_kernel"),
        "numba pair-loss kernel": cum("_pair_losses_kernel"),
    }
    shares = {k: round(v, 4) for k, v in shares.items() if v > 0}
    top = sorted(stats.items(), key=lambda kv: kv[1][2], reverse=True)[:12]
    return {"generations": generations, "threads": threads, "profiled_seconds": total, "shares": shares,
            "top_own_time": [{"function": f"{k[0].split('/')[-1]}:{k[1]}:{k[2]}", "share": round(v[2] / total, 4)}
                             for k, v in top]}


def _in_fresh_process(fn, *args):
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)


# ------------------------------------------------------------------ 2. torch against numba


def section_backends(args, tmp: Path) -> dict:
    base = [f"run.generations={args.generations}", f"run.threads={args.mlp_threads}", "run.checkpoint_every=0"]
    runs: dict[str, list[dict]] = {"numba": [], "torch": []}
    for r in range(args.rounds):
        order = ("numba", "torch") if r % 2 == 0 else ("torch", "numba")
        for backend in order:
            got = _run(base + [f"run.backend={backend}"], _fresh_dir(tmp, f"mlp-{backend}"))
            got["timed"] = got["seconds"][args.warmup:]
            got["median_timed"] = _median(got["timed"])
            runs[backend].append(got)
            print(f"  round {r + 1} {backend:5s}: {got['median_timed']:.3f} s/gen (generations {args.warmup + 1}-"
                  f"{args.generations}: {', '.join(f'{s:.2f}' for s in got['timed'])})", flush=True)
    ratios = [t["median_timed"] / n["median_timed"] for t, n in zip(runs["torch"], runs["numba"])]
    same = all(abs(t["test_loss"] - n["test_loss"]) < 1e-3 for t, n in zip(runs["torch"], runs["numba"]))
    out = {"setting": "paper MLP: binary clustering, D 1000, hidden [30], latent 10, 10-cell ring, batch 5, seed 1",
           "generations": args.generations, "dropped_first": args.warmup, "rounds": args.rounds,
           "threads": args.mlp_threads,
           "numba_seconds_per_generation": _median([x["median_timed"] for x in runs["numba"]]),
           "torch_seconds_per_generation": _median([x["median_timed"] for x in runs["torch"]]),
           "ratio_torch_over_numba": _spread(ratios), "goal": "<= 4", "test_loss_close": same,
           "runs": {k: [{kk: vv for kk, vv in x.items() if kk != "wall"} for x in v] for k, v in runs.items()}}
    out["goal_met"] = out["ratio_torch_over_numba"]["median"] <= 4
    print(f"  torch / numba: {out['ratio_torch_over_numba']['median']:.2f}x "
          f"[{min(ratios):.2f}-{max(ratios):.2f}] (goal <= 4x: {'met' if out['goal_met'] else 'not met'})", flush=True)
    if args.profile:
        out["profile_torch"] = _in_fresh_process(_profiled, ["run.backend=torch"], args.profile_generations,
                                                 args.mlp_threads)
        out["profile_numba"] = _in_fresh_process(_profiled, ["run.backend=numba"], args.profile_generations,
                                                 args.mlp_threads)
        for name in ("torch", "numba"):
            shares = out[f"profile_{name}"]["shares"]
            print(f"  profile {name}: " + ", ".join(f"{k.strip()} {v:.0%}" for k, v in shares.items()), flush=True)
    return out


# ------------------------------------------------------------------ 3. the 100-generation conv run


def section_conv_run(args, tmp: Path) -> dict:
    out: dict = {"command": "coevo run " + " ".join(f"--set {o}" for o in CONV + ["run.generations=100"]),
                 "goal_seconds": 180, "target_generations": 100, "settings": []}
    for threads, generations in args.conv:
        extra = [f"run.generations={generations}"] + ([f"run.threads={threads}"] if threads else [])
        got = _run(CONV + extra, _fresh_dir(tmp, f"conv-t{threads}"))
        after_first = got["wall"][-1] - got["wall"][0]  # the logbook's generations 2..G
        per = after_first / (generations - 1)
        estimate = per * 99
        row = {"threads": threads or "torch default", "torch_default_threads": threads == 0,
               "generations_run": generations, "extrapolated": generations < 100,
               "first_generation_seconds": got["seconds"][0], "seconds_after_first": after_first,
               "seconds_per_generation_after_first": per, "seconds_after_first_for_100": estimate,
               "median_generation_seconds": _median(got["seconds"][1:]),
               "process_wall_seconds": got["process_wall_seconds"],
               "process_wall_minus_first_generation": got["process_wall_seconds"] - got["seconds"][0],
               "test_loss": got["test_loss"], "kept_fraction": got["kept_fraction"],
               "peak_rss_mib": got["peak_rss_mib"], "goal_met": estimate <= 180, "load_after": _load()}
        out["settings"].append(row)
        how = f"extrapolated from {generations} generations" if generations < 100 else "measured"
        print(f"  threads {row['threads']}: {estimate:7.1f} s after the first generation for 100 ({how}; "
              f"{per:.2f} s/gen, first {got['seconds'][0]:.2f} s; process wall {got['process_wall_seconds']:.1f} s) "
              f"goal <= 180 s: {'met' if row['goal_met'] else 'not met'}", flush=True)
    if args.profile:
        out["profile"] = _in_fresh_process(_profiled, CONV, args.profile_generations, 1)
        print("  profile conv: " + ", ".join(f"{k.strip()} {v:.0%}" for k, v in out["profile"]["shares"].items()),
              flush=True)
    return out


# ------------------------------------------------------------------ 4. peak memory


MEMORY = {
    "conv digits, 10-cell ring": CONV,
    "conv digits, 10 x 10 torus": CONV + TORUS,
    "mlp paper default (auto: numba)": [],
    "mlp paper default, run.backend=torch": ["run.backend=torch"],
}


def section_memory(args, tmp: Path) -> dict:
    out: dict = {"generations": 3, "threads": 1, "runs": {}}
    for name, overrides in MEMORY.items():
        got = _run(overrides + ["run.generations=3", "run.threads=1"], _fresh_dir(tmp, "mem"))
        out["runs"][name] = {"peak_rss_mib": got["peak_rss_mib"], "seconds": got["seconds"],
                             "process_wall_seconds": got["process_wall_seconds"]}
        print(f"  {name:<38} {got['peak_rss_mib']:7.0f} MiB  ({', '.join(f'{s:.1f}' for s in got['seconds'])} s "
              f"per generation)", flush=True)
    return out


# ------------------------------------------------------------------ report


def _fmt(s: dict, digits: int = 2) -> str:
    return f"{s['median']:.{digits}f} [{s['min']:.{digits}f}-{s['max']:.{digits}f}]"


def markdown(r: dict) -> str:
    m = r["machine"]
    lines = ["# The functional torch path: speed and memory", "",
             f"`benchmarks/functional.py{' ' + ' '.join(r['argv']) if r['argv'] else ''}`, commit {r['commit']}, "
             f"{r['date']}. Machine: {m['processor']}, {m['cores']} cores (affinity {m['affinity']}), shared with "
             f"other work (load average {m['load_start']} at the start, {m['load_end']} at the end); torch "
             f"{m['torch']} (default intra-op threads {m['torch_default_threads']}), Python {m['python']}. "
             f"Figures are medians [min-max] over repeats; every ratio is the median of per-repeat ratios "
             f"measured side by side.", ""]
    if "step" in r:
        s = r["step"]
        lines += ["## 1. Vmapped population step vs a per-module loop", "",
                  f"conv family on (1, 8, 8) digits, {s['pairs']} pairs ({s['parameters_per_pair']} parameters "
                  f"each), loss {s['loss']}, Adam lr {LR} betas {list(BETAS)}; {s['steps_per_timing']} mini-batch "
                  f"steps per timing, {s['repeats']} interleaved repeats at 1 thread (fewer at more threads: "
                  f"see the table). `train_epoch`: `F.train_epoch` (a vmapped "
                  "forward, one autograd backward of the summed losses, the masked StackedAdam step); "
                  "`vmap(grad)`: one `torch.func.vmap(grad(loss))` call per step + StackedAdam; module loop: 10 "
                  "`nn.Module` pairs, each forward, backward, `torch.optim.Adam.step` (no masks). Goal: loop / "
                  "train_epoch >= 5x.", "",
                  "| threads | batch | steps x repeats | train_epoch ms/step | vmap(grad) ms/step | module loop ms/step | "
                  "loop / train_epoch | loop / vmap(grad) | goal >= 5x |", "|---|---|---|---|---|---|---|---|---|"]
        for threads, per in s["by_threads"].items():
            for batch, x in per.items():
                best = x["ratio_loop_over_train_epoch"]["median"]  # the path coevo runs
                lines.append(f"| {threads} | {batch} | {x['steps_per_timing']} x {x['repeats']} | "
                             f"{_fmt(x['train_epoch_ms_per_step'])} | "
                             f"{_fmt(x['vmap_grad_ms_per_step'])} | {_fmt(x['module_loop_ms_per_step'])} | "
                             f"{_fmt(x['ratio_loop_over_train_epoch'])}x | {_fmt(x['ratio_loop_over_vmap_grad'])}x | "
                             f"{'met' if best >= 5 else 'not met'} |")
        first = next(iter(s["by_threads"]))
        lines += ["", f"Where a `train_epoch` step's time goes ({first} thread(s), train_epoch's own loop re-timed "
                  "part by part, ms per step and share):", "",
                  "| batch | batch + leaves | vmapped forward | backward | StackedAdam (2 steps) | bookkeeping |",
                  "|---|---|---|---|---|---|"]
        for batch, x in s["by_threads"][first].items():
            b = x["breakdown"]
            cells = [f"{b['ms_per_step'][k]:.3f} ({b['share'][k]:.0%})" for k in b["ms_per_step"]]
            lines.append(f"| {batch} | " + " | ".join(cells) + " |")
        a = s["stacked_adam_encoder_10_rows"]
        lines += ["", f"One `StackedAdam.step_rows` on the 10 encoder rows: {a['step_rows_us']:.0f} us, of which "
                  f"{a['bias_terms_us']:.0f} us are the float64 bias terms in numpy (`steps.cpu().numpy()`, "
                  f"`bias_terms`, `torch.as_tensor`) and {a['masked_update_us']:.0f} us the masked update's torch ops.",
                  ""]
    if "backends" in r:
        b = r["backends"]
        lines += ["## 2. run.backend=torch vs run.backend=numba (paper MLP)", "",
                  f"{b['setting']}; {b['generations']} generations, the first {b['dropped_first']} dropped, "
                  f"`run.threads={b['threads']}` (torch's and Numba's threads), {b['rounds']} rounds alternating "
                  f"which backend goes first. Goal: torch within 4x of numba.", "",
                  "| backend | s / generation (median of rounds) | per round |", "|---|---|---|"]
        for name in ("numba", "torch"):
            per = ", ".join(f"{x['median_timed']:.3f}" for x in b["runs"][name])
            lines.append(f"| {name} | {b[name + '_seconds_per_generation']:.3f} | {per} |")
        lines += ["", f"torch / numba: **{_fmt(b['ratio_torch_over_numba'])}x**, goal <= 4x "
                  f"**{'met' if b['goal_met'] else 'not met'}**. Same final test loss on both backends (within "
                  f"1e-3): {b['test_loss_close']}.", ""]
        for name in ("torch", "numba"):
            p = b.get(f"profile_{name}")
            if p:
                lines += [f"cProfile of {p['generations']} generations, run.backend={name} "
                          f"({p['profiled_seconds']:.1f} s profiled; cumulative shares, nested rows indented):", ""]
                lines += [(f"  - {k.strip()}: {v:.1%}" if k.startswith("  ") else f"- {k}: {v:.1%}")
                          for k, v in p["shares"].items()]
                lines += ["", "Top own time: " + ", ".join(f"`{t['function']}` {t['share']:.1%}"
                                                           for t in p["top_own_time"][:6]), ""]
    if "conv_run" in r:
        c = r["conv_run"]
        lines += ["## 3. A 100-generation conv run on digits (10-cell ring)", "", f"`{c['command']}` on this "
                  "2-core machine; wall seconds after the first generation (the logbook's `wall_seconds`, "
                  "generations 2-100). Goal <= 180 s.", "",
                  "| torch threads | generations run | s / gen after the first | first gen s | "
                  "s after the first, for 100 | process wall s | load average after | goal <= 180 s |",
                  "|---|---|---|---|---|---|---|---|"]
        for x in c["settings"]:
            how = f" (extrapolated from {x['generations_run']})" if x["extrapolated"] else ""
            lines.append(f"| {x['threads']} | {x['generations_run']} | {x['seconds_per_generation_after_first']:.2f} | "
                         f"{x['first_generation_seconds']:.2f} | {x['seconds_after_first_for_100']:.1f}{how} | "
                         f"{x['process_wall_seconds']:.1f} | {x['load_after'][0]} | "
                         f"{'met' if x['goal_met'] else 'not met'} |")
        p = c.get("profile")
        if p:
            lines += ["", f"cProfile of {p['generations']} conv generations at 1 thread "
                      f"({p['profiled_seconds']:.1f} s profiled; cumulative shares):", ""]
            lines += [(f"  - {k.strip()}: {v:.1%}" if k.startswith("  ") else f"- {k}: {v:.1%}")
                      for k, v in p["shares"].items()]
            lines += ["", "Top own time: " + ", ".join(f"`{t['function']}` {t['share']:.1%}"
                                                       for t in p["top_own_time"][:6])]
        lines.append("")
    if "memory" in r:
        mem = r["memory"]
        lines += ["## 4. Peak memory", "", f"Max RSS of the `coevo run` process (`getrusage(RUSAGE_CHILDREN)` in "
                  f"a fresh parent), {mem['generations']} generations, `run.threads={mem['threads']}`.", "",
                  "| run | peak RSS MiB | s per generation |", "|---|---|---|"]
        for name, x in mem["runs"].items():
            lines.append(f"| {name} | {x['peak_rss_mib']:.0f} | {', '.join(f'{s:.1f}' for s in x['seconds'])} |")
        lines.append("")
    if r.get("notes"):
        lines += ["## Notes", ""] + [f"- {n}" for n in r["notes"]] + [""]
    lines += [f"Whole benchmark: {r['wall_seconds'] / 60:.1f} min.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and rounds; section 3 at 10 generations, "
                        "extrapolated to 100")
    parser.add_argument("--sections", default="1,2,3,4", help="which sections to run (default 1,2,3,4)")
    parser.add_argument("--repeats", type=int, default=None, help="section 1: interleaved repeats (default 7; quick 3)")
    parser.add_argument("--steps", type=int, default=40, help="section 1: mini-batch steps per timing (default 40)")
    parser.add_argument("--step-threads", default="1,2", help="section 1: torch thread counts (default 1,2)")
    parser.add_argument("--rounds", type=int, default=None, help="section 2: rounds per backend (default 3; quick 1)")
    parser.add_argument("--generations", type=int, default=8, help="section 2: generations per run (default 8)")
    parser.add_argument("--warmup", type=int, default=2, help="section 2: first generations dropped (default 2)")
    parser.add_argument("--mlp-threads", type=int, default=1, help="section 2: run.threads (default 1)")
    parser.add_argument("--conv", default=None, help="section 3: THREADS:GENERATIONS,... (0 threads = torch's "
                        "default; default 1:100,0:10 -- the default-threads run extrapolated; quick 1:10,0:10)")
    parser.add_argument("--no-profile", dest="profile", action="store_false", help="skip the cProfile runs")
    parser.add_argument("--profile-generations", type=int, default=3, help="generations per profiled run (default 3)")
    parser.add_argument("--note", action="append", default=[], help="a line added to the report's notes "
                        "(repeatable), e.g. an earlier run's figures under other load")
    parser.add_argument("--out", type=Path, default=RESULTS / "functional", help="output stem (.md and .json)")
    args = parser.parse_args()
    args.repeats = args.repeats or (3 if args.quick else 7)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.step_threads = [int(t) for t in args.step_threads.split(",")]
    conv = args.conv or ("1:10,0:10" if args.quick else "1:100,0:10")
    args.conv = [tuple(int(v) for v in item.split(":")) for item in conv.split(",")]
    sections = {s.strip() for s in args.sections.split(",")}

    import torch

    t_start = time.time()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    results: dict = {
        "argv": [a for a in sys.argv[1:] if a not in args.note and a != "--note"], "notes": args.note,
        "commit": commit.stdout.strip(), "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": {"processor": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "affinity": len(os.sched_getaffinity(0)), "torch": torch.__version__,
                    "torch_default_threads": torch.get_num_threads(), "python": sys.version.split()[0],
                    "load_start": _load()},
    }
    print(f"{results['machine']['cores']} cores, torch {torch.__version__} (default threads "
          f"{torch.get_num_threads()}), load average {results['machine']['load_start']}", flush=True)
    with tempfile.TemporaryDirectory(prefix="coevo-functional-") as tmp_name:
        tmp = Path(tmp_name)
        if "1" in sections:
            print("1. vmapped population step vs per-module loop (conv, 10 pairs)", flush=True)
            results["step"] = _in_fresh_process(section_step, args)
        if "2" in sections:
            print("2. run.backend=torch vs numba (paper MLP)", flush=True)
            results["backends"] = section_backends(args, tmp)
        if "3" in sections:
            print("3. 100-generation conv run on digits", flush=True)
            results["conv_run"] = section_conv_run(args, tmp)
        if "4" in sections:
            print("4. peak memory", flush=True)
            results["memory"] = section_memory(args, tmp)
    results["machine"]["load_end"] = _load()
    results["wall_seconds"] = time.time() - t_start
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(results))
    print(f"wrote {args.out.with_suffix('.md')} and .json ({results['wall_seconds'] / 60:.1f} min)")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
