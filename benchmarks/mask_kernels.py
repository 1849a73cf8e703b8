"""Numba mask kernels against plain numpy implementations of the same updates.

For RANDOM and VARIANCE (one layer's mask update at amount 0.1) and CONJUNCTIVE's lexicase filter
(100 cases), on weight shapes 30x10, 30x1000, 1000x30 and 4000x30 (out x in: the paper's layers
at D = 1000 and the decoder output at D = 4000). Both sides run in the same process, on fresh
copies of the same masks, after a warm-up call (JIT compilation or cache load); each figure is the
median over repeats of one call, and the ratio is numpy / numba (above 1: the kernel is faster).

The seed operators' criteria (section "criteria" of the JSON) at the paper's network (D = 1000 or
4000, hidden 30, latent 10, 100 cases), each against a baseline in the same run:
``context.gradients`` (coevo's float64 numpy backward pass) against torch autograd of the same
loss; SNIP's global choice of the lowest entries (``select_lowest``: argpartition, then a sort of
the candidates) against a full sort; and whole SNIP, SNAP and MERGE mutations of one encoder and
one decoder (baseline: RANDOM's mutation of the same pair). None is a Numba kernel: the gradient
is BLAS products, the ranking a partial sort, and merge's saliency a small Gram matrix.

    .venv/bin/python benchmarks/mask_kernels.py [--repeats N] [--out benchmarks/results/mask_kernels.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Callable

import numba
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from coevo.cells import pair_context, pair_gradients  # noqa: E402
from coevo.config import PruneConfig  # noqa: E402
from coevo.genome import Decoder, Encoder, autoencoder_layouts, init_params  # noqa: E402
from coevo.operators import registry as operator_registry  # noqa: E402
from coevo.operators.kernels import lexicase_filter, random_prune_layer, select_lowest, weighted_prune_layer  # noqa: E402
from coevo.population import Stack  # noqa: E402
from coevo.operators.variance import neuron_weights  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "mask_kernels.json"
SHAPES = [(30, 10), (30, 1000), (1000, 30), (4000, 30)]
AMOUNT = 0.1
CASES = 100
THRESHOLD = 0.1


# ---------------------------------------------------------------- plain numpy, the same updates

def _count(amount: float, alive: int, rng: np.random.Generator) -> int:
    target = amount * alive
    n = int(np.floor(target))
    return min(n + (rng.random() < target - n), alive)


def _alive(wm: np.ndarray, bm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices of the alive entries (weights, then biases) and the neuron of each."""
    n_w = wm.size
    alive = np.concatenate([np.flatnonzero(wm), n_w + np.flatnonzero(bm)])
    return alive, np.where(alive < n_w, alive // wm.shape[1], alive - n_w)


def _apply(wm: np.ndarray, bm: np.ndarray, chosen: np.ndarray, chosen_neuron: np.ndarray,
           neuron: np.ndarray) -> int:
    """Prune ``chosen`` (in draw order), sparing the last one drawn if the layer would be cut."""
    out = wm.shape[0]
    keep = np.bincount(neuron, minlength=out) - np.bincount(chosen_neuron, minlength=out)
    if chosen.size and not keep.any():
        chosen = chosen[:-1]
    w = chosen[chosen < wm.size]
    wm.reshape(-1)[w] = False
    bm[chosen[chosen >= wm.size] - wm.size] = False
    return chosen.size


def random_prune_numpy(wm: np.ndarray, bm: np.ndarray, amount: float, rng: np.random.Generator) -> int:
    alive, neuron = _alive(wm, bm)
    n = _count(amount, alive.size, rng)
    pick = rng.choice(alive.size, size=n, replace=False)
    return _apply(wm, bm, alive[pick], neuron[pick], neuron)


def weighted_prune_numpy(wm: np.ndarray, bm: np.ndarray, neuron_weight: np.ndarray, amount: float,
                         rng: np.random.Generator) -> int:
    alive, neuron = _alive(wm, bm)
    n = _count(amount, alive.size, rng)
    if n == 0:
        return 0
    keys = rng.standard_exponential(alive.size) / neuron_weight[neuron]
    pick = np.argpartition(keys, n - 1)[:n] if n < alive.size else np.arange(alive.size)
    pick = pick[np.argsort(keys[pick])]
    return _apply(wm, bm, alive[pick], neuron[pick], neuron)


def lexicase_filter_numpy(acts: np.ndarray, alive: np.ndarray, order: np.ndarray, threshold: float) -> np.ndarray:
    a = acts[:, alive]
    lo, hi = a.min(axis=1), a.max(axis=1)
    informative = hi > lo
    norm = (a - lo[:, None]) / np.where(informative, hi - lo, 1.0)[:, None]
    marked = (norm < threshold) & informative[:, None]
    pool = np.ones(a.shape[1], dtype=bool)
    count, narrowed = a.shape[1], False
    for c in order:  # sequential by nature: each case filters what the previous ones left
        if count <= 1:
            break
        kept = pool & marked[c]
        k = int(kept.sum())
        if k:
            pool, count, narrowed = kept, k, True
    survivors = np.zeros(acts.shape[1], dtype=bool)
    if narrowed:
        survivors[np.flatnonzero(alive)[pool]] = True
    return survivors


# ---------------------------------------------------------------- timing

def median_seconds(call: Callable[[], object], repeats: int, setup: Callable[[], object] = lambda: None) -> float:
    """Median wall time of ``call()`` over ``repeats``, each after an untimed ``setup()``."""
    setup()
    call()  # warm-up: JIT compilation or cache load
    times = []
    for _ in range(repeats):
        setup()
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def bench_shape(out: int, fan_in: int, repeats: int) -> list[dict]:
    rng = np.random.default_rng(0)
    base_w = rng.random((out, fan_in)) > 0.2  # a layer already partly pruned
    base_b = rng.random(out) > 0.2
    wm, bm = base_w.copy(), base_b.copy()
    acts = rng.random((CASES, out)) * rng.random(out)
    weights = neuron_weights(acts.std(axis=0), base_w.any(axis=1) | base_b)
    alive = base_w.any(axis=1) | base_b
    order = rng.permutation(CASES)
    expected = _count(AMOUNT, int(base_w.sum() + base_b.sum()), np.random.default_rng(0))

    def reset() -> None:  # every call starts from the same masks
        wm[...], bm[...] = base_w, base_b

    cases = {
        "random": (lambda wm, bm, g: random_prune_layer(wm, bm, AMOUNT, g),
                   lambda wm, bm, g: random_prune_numpy(wm, bm, AMOUNT, g)),
        "variance": (lambda wm, bm, g: weighted_prune_layer(wm, bm, weights, AMOUNT, g),
                     lambda wm, bm, g: weighted_prune_numpy(wm, bm, weights, AMOUNT, g)),
    }
    rows = []
    for name, (kernel, plain) in cases.items():
        for fn in (kernel, plain):  # same update: both prune the same number of entries
            reset()
            n = fn(wm, bm, np.random.default_rng(0))
            assert n == base_w.sum() + base_b.sum() - wm.sum() - bm.sum() and abs(n - expected) <= 1, (name, n)
        gen = np.random.default_rng(1)
        t_numba = median_seconds(lambda: kernel(wm, bm, gen), repeats, reset)
        t_numpy = median_seconds(lambda: plain(wm, bm, gen), repeats, reset)
        rows.append(_row(name + " mask update", out, fan_in, t_numba, t_numpy, repeats))
    assert np.array_equal(lexicase_filter(acts, alive, order, THRESHOLD),
                          lexicase_filter_numpy(acts, alive, order, THRESHOLD))
    t_numba = median_seconds(lambda: lexicase_filter(acts, alive, order, THRESHOLD), repeats)
    t_numpy = median_seconds(lambda: lexicase_filter_numpy(acts, alive, order, THRESHOLD), repeats)
    rows.append(_row(f"lexicase filter ({CASES} cases)", out, fan_in, t_numba, t_numpy, repeats))
    return rows


def autograd_gradients(enc: Stack, dec: Stack, x: torch.Tensor) -> list[tuple[torch.Tensor, ...]]:
    """The baseline of ``context.gradients``: the same loss (L1), gradients and gate gradients by
    torch autograd in float64 (what coevo computed at first)."""
    leaves = []
    h = x.double()
    for stack in (enc, dec):
        flat = stack.params[0].double() * stack.mask[0]
        for spec, (w, b) in zip(stack.layout.layers, stack.layout.split(flat)):
            w, b = w.clone().requires_grad_(), b.clone().requires_grad_()
            gate = torch.ones(spec.fan_out, dtype=torch.float64, requires_grad=True)
            z = (h @ w.T + b) * gate
            h = torch.relu(z) if spec.activation == "relu" else torch.sigmoid(z)
            leaves += [w, b, gate]
    loss = (h - x.double()).abs().mean()
    grads = torch.autograd.grad(loss, leaves)
    return [tuple(g.numpy() for g in grads[i:i + 3]) for i in range(0, len(grads), 3)]


def select_lowest_numpy(scores: np.ndarray, groups: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """The same choice as the kernel ``select_lowest`` in numpy: argpartition to the n + groups
    lowest candidates, a lexsort of those by (score, random key), the same floor per group."""
    m = scores.size
    totals = np.bincount(groups)
    kk = n + int((totals > 0).sum())
    cand = np.flatnonzero(scores <= np.partition(scores, kk)[kk]) if kk < m else np.arange(m)
    order = cand[np.lexsort((rng.random(cand.size), scores[cand]))]
    g = groups[order]
    whole = np.bincount(g, minlength=totals.size) == totals
    last = np.zeros(order.size, dtype=bool)
    last[order.size - 1 - np.unique(g[::-1], return_index=True)[1]] = True
    return order[~(last & whole[g])][:n]


def bench_criteria(n_dims: int, repeats: int) -> list[dict]:
    rng = np.random.default_rng(0)
    enc_l, dec_l = autoencoder_layouts(n_dims, [30], 10)
    enc = Stack.fresh(enc_l, init_params(enc_l, 1, rng))
    dec = Stack.fresh(dec_l, init_params(dec_l, 1, rng))
    x = torch.as_tensor(rng.random((CASES, n_dims)) < 0.5, dtype=torch.float32)
    shape = f"D={n_dims}"
    ours = pair_gradients(enc_l, dec_l, enc.params[0], dec.params[0], enc.mask[0], dec.mask[0], x, "l1")
    for got, want in zip(ours["encoder"] + ours["decoder"], autograd_gradients(enc, dec, x)):
        for a, b in zip((got.weight, got.bias, got.gate), want):
            assert np.allclose(a, b, rtol=1e-9, atol=1e-13)
    rows = [_criterion_row("context.gradients (pair, 100 cases)", shape,
                           median_seconds(lambda: pair_gradients(enc_l, dec_l, enc.params[0], dec.params[0],
                                                                 enc.mask[0], dec.mask[0], x, "l1"), repeats),
                           median_seconds(lambda: autograd_gradients(enc, dec, x), repeats), "torch autograd", repeats)]
    scores = rng.random(enc_l.size)
    scores[rng.random(enc_l.size) < 0.2] = 0.0  # dead ReLUs: many ties at zero
    groups = np.repeat(np.arange(len(enc_l.layers)), [spec.size for spec in enc_l.layers])
    n = int(AMOUNT * enc_l.size)
    assert np.array_equal(np.sort(scores[select_lowest(scores, groups, n, np.random.default_rng(0))]),
                          np.sort(scores[select_lowest_numpy(scores, groups, n, np.random.default_rng(0))]))
    gen = np.random.default_rng(1)
    rows.append(_criterion_row("select_lowest: 10% of the encoder", shape,
                               median_seconds(lambda: select_lowest(scores, groups, n, gen), repeats),
                               median_seconds(lambda: select_lowest_numpy(scores, groups, n, gen), repeats),
                               "numpy (argpartition + lexsort)", repeats))
    context = pair_context(enc, dec, 0, 0, PruneConfig(), "l1", lambda: x)
    context.gradients(enc.network(0, Encoder))  # the mutations below time the criterion, not the recording

    def mutate(name: str):
        op = operator_registry.get(name)
        return lambda: [op(stack.network(0, cls), AMOUNT, np.random.default_rng(0), context)
                        for cls, stack in ((Encoder, enc), (Decoder, dec))]

    baseline = median_seconds(mutate("random"), repeats)
    for name in ("snip", "snap", "merge", "latent_ablation", "latent_fold"):
        rows.append(_criterion_row(f"{name} mutation (encoder + decoder)", shape, median_seconds(mutate(name), repeats),
                                   baseline, "random's mutation", repeats))
    return rows


def _criterion_row(what: str, shape: str, t_coevo: float, t_base: float, baseline: str, repeats: int) -> dict:
    return {"criterion": what, "network": shape, "coevo_us": t_coevo * 1e6, "baseline_us": t_base * 1e6,
            "baseline": baseline, "ratio": t_base / t_coevo, "repeats": repeats}


def _row(kernel: str, out: int, fan_in: int, t_numba: float, t_numpy: float, repeats: int) -> dict:
    return {"kernel": kernel, "shape": f"{out}x{fan_in}", "numba_us": t_numba * 1e6, "numpy_us": t_numpy * 1e6,
            "speedup": t_numpy / t_numba, "repeats": repeats}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200, help="timed calls per figure (median reported)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    rows = [row for out, fan_in in SHAPES for row in bench_shape(out, fan_in, args.repeats)]
    print(f"{'kernel':<28} {'shape':>9} {'numba us':>10} {'numpy us':>10} {'numpy/numba':>12}")
    for r in rows:
        print(f"{r['kernel']:<28} {r['shape']:>9} {r['numba_us']:>10.1f} {r['numpy_us']:>10.1f} {r['speedup']:>11.1f}x")
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # both sides on one thread: products this small gain nothing from two,
    with threadpool_limits(1, user_api="blas"):  # and spinning threads swamp a loaded machine
        criteria = [row for n_dims in (1000, 4000) for row in bench_criteria(n_dims, max(10, args.repeats // 10))]
    torch.set_num_threads(torch_threads)
    print(f"\n{'criterion':<38} {'network':>7} {'coevo us':>10} {'baseline us':>12} {'ratio':>7}  baseline")
    for r in criteria:
        print(f"{r['criterion']:<38} {r['network']:>7} {r['coevo_us']:>10.1f} {r['baseline_us']:>12.1f} "
              f"{r['ratio']:>6.2f}x  {r['baseline']}")
    result = {
        "what": "median seconds of one call, Numba kernel vs plain numpy, same process, fresh masks, after warm-up",
        "command": "python benchmarks/mask_kernels.py" + (f" --repeats {args.repeats}" if args.repeats != 200 else "")
                   + (f" --out {args.out}" if args.out != DEFAULT_OUT else ""),
        "amount": AMOUNT, "alive_fraction_before": 0.8,
        "machine": {"python": platform.python_version(), "numpy": np.__version__, "numba": numba.__version__,
                    "cpus": os.cpu_count(), "platform": platform.platform(),
                    "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
                    "numba_threading": "serial kernels (no parallel=True)"},
        "rows": rows,
        "criteria_what": "the seed operators' criteria: median seconds of one call against the named baseline, "
                         "same process, after warm-up; ratio = baseline / coevo",
        "criteria_threads": "one: torch.set_num_threads(1) and threadpoolctl's BLAS limit of 1, both sides",
        "criteria": criteria,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
