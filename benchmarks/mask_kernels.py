"""Numba selector kernels against plain numpy implementations of the same choices.

Per layer, on weight shapes 30x10, 30x1000, 1000x30 and 4000x30 (out x in: the paper's layers at
D = 1000 and the decoder output at D = 4000), with 80% of the entries alive and amount 0.1 (n, the
stochastically rounded tenth of the alive entries, weights and biases): the uniform choice of n of
the alive entries (RANDOM's, scope layer: ``uniform_sample`` against numpy's
``rng.choice(m, n, replace=False)``); the choice of the n lowest scores with ties at the boundary
drawn uniformly (every criterion's, scope layer, VARIANCE's exponential keys included:
``lowest_with_random_ties`` against ``np.lexsort((rng.random(m), scores))[:n]``), on scores with
20% ties at zero so that the boundary falls in a tie; and CONJUNCTIVE's lexicase filter (100
cases). Both sides run in the same process, on the same inputs, after a warm-up call (JIT
compilation or cache load); each figure is the median over repeats of one call, and the ratio is
numpy / numba (above 1: the kernel is faster).

The seed operators' criteria (section "criteria" of the JSON) at the paper's network (D = 1000 or
4000, hidden 30, latent 10, 100 cases), each against a baseline in the same run:
``context.gradients`` (coevo's float64 numpy backward pass) against torch autograd of the same
loss; scope global's choice of the lowest 10% of the encoder under per-layer caps
(``lowest_capped``), once with caps that do not bind (its partition path) and once with caps that
bind (its sorted path), against a full lexsort by (score, random key) taken in order while the
layer has room; and whole mutations of one encoder and one decoder through
``operator_registry.get(name, params)``: SNIP, SNAP, MERGE, MAGNITUDE with scope global, RANDOM
with unit neuron, and the latent operators (baseline: RANDOM's default mutation of the same pair).

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

from coevo.config import PruneConfig  # noqa: E402
from coevo.evolution.context import pair_context, pair_gradients  # noqa: E402
from coevo.genome import Decoder, Encoder, autoencoder_layouts, init_params  # noqa: E402
from coevo.operators import registry as operator_registry  # noqa: E402
from coevo.operators.kernels import (lexicase_filter, lowest_capped, lowest_with_random_ties,  # noqa: E402
                                    stochastic_count, uniform_sample)
from coevo.population import Stack  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "mask_kernels.json"
SHAPES = [(30, 10), (30, 1000), (1000, 30), (4000, 30)]
AMOUNT = 0.1
CASES = 100
THRESHOLD = 0.1


# ---------------------------------------------------------------- plain numpy, the same choices

def uniform_sample_numpy(m: int, n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.choice(m, n, replace=False)


def lowest_with_random_ties_numpy(scores: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    return np.lexsort((rng.random(scores.size), scores))[:n]


def lowest_capped_numpy(scores: np.ndarray, groups: np.ndarray, caps: np.ndarray, n: int,
                        rng: np.random.Generator) -> np.ndarray:
    """The same choice as ``lowest_capped``: every entry in (score, random key) order, taken while
    its group has room, the first n."""
    order = np.lexsort((rng.random(scores.size), scores))
    g = groups[order]
    by_group = np.argsort(g, kind="stable")  # positions in ``order``, grouped, in order within a group
    start = np.concatenate([[0], np.cumsum(np.bincount(g, minlength=caps.size))[:-1]])
    rank = np.empty(order.size, dtype=np.int64)
    rank[by_group] = np.arange(order.size) - start[g[by_group]]
    return order[rank < caps[g]][:n]


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
    wm = rng.random((out, fan_in)) > 0.2  # a layer already partly pruned
    bm = rng.random(out) > 0.2
    m = int(wm.sum() + bm.sum())  # its alive entries: the candidates
    n = int(stochastic_count(AMOUNT, m, np.random.default_rng(0)))
    scores = rng.random(m)
    scores[rng.random(m) < 0.2] = 0.0  # dead ReLUs: many ties at zero, and n falls among them
    acts = rng.random((CASES, out)) * rng.random(out)
    alive = wm.any(axis=1) | bm
    order = rng.permutation(CASES)
    cases = {
        "uniform_sample": (lambda g: uniform_sample(m, n, g), lambda g: uniform_sample_numpy(m, n, g)),
        "lowest_with_random_ties": (lambda g: lowest_with_random_ties(scores, n, g),
                                    lambda g: lowest_with_random_ties_numpy(scores, n, g)),
    }
    rows = []
    for name, (kernel, plain) in cases.items():
        a, b = kernel(np.random.default_rng(0)), plain(np.random.default_rng(0))
        for pick in (a, b):  # the same choice: n distinct alive entries
            assert pick.size == n and np.unique(pick).size == n and 0 <= pick.min() and pick.max() < m, name
        if name != "uniform_sample":  # and the same scores: the n lowest
            assert np.array_equal(np.sort(scores[a]), np.sort(scores[b])), name
        gen = np.random.default_rng(1)
        t_numba = median_seconds(lambda: kernel(gen), repeats)
        t_numpy = median_seconds(lambda: plain(gen), repeats)
        rows.append(_row(f"{name} ({AMOUNT:g} of alive)", out, fan_in, t_numba, t_numpy, repeats))
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
    sizes = np.array([spec.size for spec in enc_l.layers])
    groups = np.repeat(np.arange(sizes.size), sizes)
    n = int(AMOUNT * enc_l.size)
    skewed = np.where(groups == sizes.size - 1, scores - 1.0, scores)  # the last layer scores lowest
    settings = (  # (label, scores, caps = floor(max_layer_fraction * alive) per layer, whether a cap binds)
        ("caps free", scores, sizes.copy(), False),  # max_layer_fraction 1: the partition path
        ("caps bind", skewed, (0.2 * sizes).astype(np.int64), True),  # 0.2, last layer lowest: the sorted path
    )
    for what, s, caps, binding in settings:
        fast = lowest_with_random_ties(s, n, np.random.default_rng(0))
        assert bool((np.bincount(groups[fast], minlength=caps.size) > caps).any()) == binding, what
        a = lowest_capped(s, groups, caps, n, np.random.default_rng(0))
        b = lowest_capped_numpy(s, groups, caps, n, np.random.default_rng(0))
        for pick in (a, b):
            assert pick.size == n and (np.bincount(groups[pick], minlength=caps.size) <= caps).all(), what
        assert np.array_equal(np.sort(s[a]), np.sort(s[b])), what
        gen = np.random.default_rng(1)
        rows.append(_criterion_row(f"lowest_capped: 10% of the encoder, {what}", shape,
                                   median_seconds(lambda: lowest_capped(s, groups, caps, n, gen), repeats),
                                   median_seconds(lambda: lowest_capped_numpy(s, groups, caps, n, gen), repeats),
                                   "numpy (full lexsort, caps in order)", repeats))
    context = pair_context(enc, dec, 0, 0, PruneConfig(), "l1", lambda: x)
    context.gradients(enc.network(0, Encoder))  # the mutations below time the criterion, not the recording

    def mutate(name: str, params: dict | None = None):
        op = operator_registry.get(name, params)
        return lambda: [op(stack.network(0, cls), AMOUNT, np.random.default_rng(0), context)
                        for cls, stack in ((Encoder, enc), (Decoder, dec))]

    baseline = median_seconds(mutate("random"), repeats)
    for name, params in (("snip", None), ("snap", None), ("merge", None), ("magnitude", {"scope": "global"}),
                         ("random", {"unit": "neuron"}), ("latent_ablation", None), ("latent_fold", None)):
        label = name + "".join(f" {k}={v}" for k, v in (params or {}).items())
        rows.append(_criterion_row(f"{label} mutation (encoder + decoder)", shape,
                                   median_seconds(mutate(name, params), repeats), baseline, "random's mutation", repeats))
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
    print(f"{'kernel':<40} {'shape':>9} {'numba us':>10} {'numpy us':>10} {'numpy/numba':>12}")
    for r in rows:
        print(f"{r['kernel']:<40} {r['shape']:>9} {r['numba_us']:>10.1f} {r['numpy_us']:>10.1f} {r['speedup']:>11.1f}x")
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # both sides on one thread: products this small gain nothing from two,
    with threadpool_limits(1, user_api="blas"):  # and spinning threads swamp a loaded machine
        criteria = [row for n_dims in (1000, 4000) for row in bench_criteria(n_dims, max(10, args.repeats // 10))]
    torch.set_num_threads(torch_threads)
    print(f"\n{'criterion':<52} {'network':>7} {'coevo us':>10} {'baseline us':>12} {'ratio':>7}  baseline")
    for r in criteria:
        print(f"{r['criterion']:<52} {r['network']:>7} {r['coevo_us']:>10.1f} {r['baseline_us']:>12.1f} "
              f"{r['ratio']:>6.2f}x  {r['baseline']}")
    result = {
        "what": "median seconds of one call, Numba kernel vs plain numpy, same process, same inputs, after warm-up",
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
