"""A generation's heavy work on the CPU, network by network, each step in one Numba call.

- :func:`train_pairs`: every selected pair's training epoch (forward, backward, masked Adam).
- :func:`pair_losses`: every cell's s x s encoder-decoder loss matrix.
- :func:`centre_losses`: every centre pair's loss on a whole split (the logbook, the summary).

Why network by network: at the paper's setting one pair's parameters, Adam moments, mask and
gradient take about 1 MB, which fits one core's L2 cache. Stepping all networks together in
torch ops (:mod:`coevo.training.batched`, the path for other devices) streams every network through
memory on each of the 200 steps of an epoch and pays some 30 torch dispatches per step. Here
each thread takes whole networks, reads them in place from the population (no gathered
copies) and runs their whole epoch without returning to Python.

The maths is the torch path's, step for step: the same mini-batches, loss gradients, masked
Adam and bias corrections. Matrix products go to BLAS (SciPy's, through ``np.dot``), so only
the order of float32 additions differs (``tests/test_cpu_kernels.py``). FlipOut's gradient
noise is drawn by the kernel's own generator (:func:`standard_normal`), not torch's: the two
paths add noise of one distribution, not the same numbers. A network never spans two threads,
so results do not depend on how many threads run.
"""

from __future__ import annotations

from decimal import Decimal, localcontext

import numba
import numpy as np
import torch
from threadpoolctl import ThreadpoolController

from coevo.population import FIELDS, Stack
from coevo.genome import Layout
from coevo.training.trainer_terms import TrainerTerms

RELU, SIGMOID = 0, 1
LOSSES = {"l1": 0, "mse": 1, "bce": 2}
EPS = np.float32(1e-8)

# Cephes' single-precision exp: exact to about one ulp and, unlike a call to libm's expf, it
# vectorises. The output layer's 1,000 sigmoids per row were a fifth of an epoch with expf.
_LOG2E = np.float32(1.44269504088896341)
_LN2_HI, _LN2_LO = np.float32(0.693359375), np.float32(-2.12194440e-4)
_EXP_P = tuple(np.float32(c) for c in (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3,
                                        4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1))
_EXP_MIN, _EXP_MAX = np.float32(-87.0), np.float32(88.0)
_ROUND = np.float32(1.5 * 2**23)  # (y + _ROUND) - _ROUND is y rounded to the nearest integer

_JIT = dict(cache=True, error_model="numpy")
# Reassociation lets LLVM vectorise a sum; only the order of float32 additions changes.
_SUM = dict(_JIT, fastmath={"reassoc", "nsz", "contract"})


@numba.njit(**dict(_JIT, fastmath={"contract"}))  # fused multiply-adds: 40% faster, a little more exact
def _sigmoid_(h, scale_bits):  # pragma: no cover - jitted
    """h = 1 / (1 + exp(-h)) in place. ``scale_bits`` is int32 scratch of h's size, the bits
    of 2^n in the range reduction exp(x) = 2^n exp(r)."""
    scale = scale_bits.view(np.float32)
    for j in range(h.size):
        x = min(max(-h[j], _EXP_MIN), _EXP_MAX)
        n = (x * _LOG2E + _ROUND) - _ROUND
        r = x - n * _LN2_HI - n * _LN2_LO
        p = _EXP_P[0]
        p = p * r + _EXP_P[1]
        p = p * r + _EXP_P[2]
        p = p * r + _EXP_P[3]
        p = p * r + _EXP_P[4]
        p = p * r + _EXP_P[5]
        h[j] = p * r * r + r + np.float32(1.0)
        scale_bits[j] = (np.int32(n) + np.int32(127)) << np.int32(23)
    for j in range(h.size):
        h[j] = np.float32(1.0) / (np.float32(1.0) + h[j] * scale[j])


@numba.njit(**_SUM)
def _loss_sum(out, target, loss):  # pragma: no cover - jitted
    """Sum of the per-element loss, as ``coevo.training.batched.reconstruction_loss`` before its mean."""
    total = np.float32(0.0)
    if loss == 0:
        for j in range(out.size):
            total += abs(out[j] - target[j])
    elif loss == 1:
        for j in range(out.size):
            d = out[j] - target[j]
            total += d * d
    else:
        for j in range(out.size):
            o = min(max(out[j], np.float32(1e-7)), np.float32(1 - 1e-7))
            total -= target[j] * np.log(o) + (np.float32(1.0) - target[j]) * np.log(np.float32(1.0) - o)
    return total


@numba.njit(**_JIT)
def _output_delta(out, target, delta, loss, activation, scale, bce_weight):  # pragma: no cover - jitted
    """d(mean loss + bce_weight x mean BCE)/d(pre-activation of the output layer), as
    ``coevo.training.batched._output_grad``."""
    one, zero = np.float32(1.0), np.float32(0.0)
    w = np.float32(bce_weight)
    if loss == 2 and activation == SIGMOID:  # BCE after a sigmoid: the derivatives cancel
        for j in range(out.size):
            delta[j] = (out[j] - target[j]) * (one + w) * scale
        return
    for j in range(out.size):
        o = out[j]
        d = o - target[j]
        c = min(max(o, np.float32(1e-7)), np.float32(1 - 1e-7))
        if loss == 0:
            g = one if d > zero else (-one if d < zero else zero)
        elif loss == 1:
            g = d * np.float32(2.0)
        else:
            g = d / (c * (one - c))
        if w != zero:
            g += w * (d / (c * (one - c)))
        if activation == RELU:
            g = g if o > zero else zero
        else:
            g = g * (o - o * o)
        delta[j] = g * scale


@numba.njit(**_JIT)
def _adam(p, g, m, v, keep, step_size, inv_sqrt_bc2, beta1, beta2, one_minus_beta1,
          one_minus_beta2, flips):  # pragma: no cover - jitted
    """Masked Adam on one network's flat row, as ``coevo.training.adam.adam_step_reference``. With
    ``flips`` non-empty it also counts FlipOut's sign flips: +1 where a weight's sign changed in
    this step (a pruned entry is 0 before and after, so its count stays 0)."""
    count = flips.size > 0
    for j in range(p.size):
        k = np.float32(keep[j])
        gj = g[j] * k
        mj = beta1 * m[j] + one_minus_beta1 * gj
        vj = beta2 * v[j] + one_minus_beta2 * gj * gj
        m[j] = mj
        v[j] = vj
        old = p[j]
        new = (old - step_size * mj / (np.sqrt(vj) * inv_sqrt_bc2 + EPS)) * k
        p[j] = new
        if count and old * new < np.float32(0.0):
            flips[j] += np.float32(1.0)


# FlipOut's gradient noise draws fresh standard normals. A pair's noise seed, drawn from (seed,
# generation, cell), starts a SplitMix64 stream (Steele, Lea, Flood 2014: a 64-bit counter advanced
# by a fixed odd constant, each value passed through a mixing function; every output bit is good;
# two streams from random 62-bit seeds overlap only if they start within the ~10^7 words an epoch
# uses of each other, odds of about 10^-12). The epoch's steps take the stream's words in turn, so
# the noise depends only on (seed, generation, cell, step). Words become N(0, 1) values by the
# ziggurat of Marsaglia and Tsang (2000) with 256 layers, laid out and fed bits as numpy's
# ``Generator.standard_normal``: a word's low 8 bits pick a layer, the next bit the sign, the 52
# above it the abscissa; about 99% of draws are accepted there, the rest go through the wedge or
# tail test. The method is exact, not an approximation of the normal: fed the same words it gives
# numpy's numbers to 2e-14 (``tests/test_normals.py``; the tables here are computed to 50 digits
# and numpy's differ in the last ones). Nothing repeats, as with the torch path's ``torch.randn``.
# These functions live here rather than in a module of their own because Numba's cache does not
# notice edits to another file's functions that a cached kernel inlines.

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # SplitMix64's increment: 2^64 / golden ratio, odd
_MIX1, _MIX2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_TO_UNIT = 1.0 / 2.0**53
NO_WORDS = np.zeros(0, np.uint64)


def _ziggurat_tables(layers: int = 256) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Marsaglia and Tsang's tables for ``layers`` layers of equal area under exp(-x^2 / 2),
    computed in 50-digit decimal arithmetic (the same numbers on every platform): ``k[i]`` the
    acceptance bound on the 52-bit abscissa, ``w[i]`` its scale to x, ``f[i]`` the density at
    layer i's right edge x_i. Layer 0 is the base strip with the tail; x_{layers-1} = R."""
    with localcontext() as ctx:
        ctx.prec = 50
        r = Decimal("3.6541528853610087963519472518")  # R for 256 layers
        # every layer's area: the base strip's R f(R) plus the tail's integral sqrt(pi / 2) erfc(R / sqrt 2)
        v = Decimal("0.0049286732339746549315909134318471488833")
        half, scale = Decimal("0.5"), Decimal(2) ** 52
        x = [Decimal(0)] * layers
        x[-1] = r
        for i in range(layers - 2, 0, -1):
            x[i] = (-2 * (v / x[i + 1] + (-half * x[i + 1] ** 2).exp()).ln()).sqrt()
        x[0] = v / (-half * r * r).exp()  # the base strip's width, reaching past R into the tail
        k = np.array([int(r / x[0] * scale), 0] + [int(x[i - 1] / x[i] * scale) for i in range(2, layers)],
                     np.int64)
        w = np.array([float(xi / scale) for xi in x])
        f = np.array([1.0] + [float((-half * xi * xi).exp()) for xi in x[1:]])
        return k, w, f, float(r)


_ZIG_K, _ZIG_W, _ZIG_F, _ZIG_R = _ziggurat_tables()
_ZIG_INV_R = 1.0 / _ZIG_R


@numba.njit(**_JIT)
def _bits(state, words):  # pragma: no cover - jitted
    """The next 64 random bits and the advanced state. With ``words`` empty (the kernels'
    case, a constant the compiler folds) SplitMix64 from the counter ``state``; otherwise
    ``words[state]``, so a test can feed the ziggurat another generator's words."""
    if words.size == 0:
        state = state + _GOLDEN
        z = state
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        return state, z ^ (z >> np.uint64(31))
    return state + np.uint64(1), words[state]


@numba.njit(**_JIT)
def _unit(bits):  # pragma: no cover - jitted
    """A uniform double in [0, 1) from the top 53 bits, as numpy's ``next_double``."""
    return np.float64(np.int64(bits >> np.uint64(11))) * _TO_UNIT


@numba.njit(**_JIT)
def _zig_draw(state, words):  # pragma: no cover - jitted
    """One ziggurat candidate: (state, layer, 52-bit abscissa, signed x). The sign is applied
    to the integer without a branch: a branch on a random bit mispredicts half the time and
    made a draw two to three times slower."""
    state, r = _bits(state, words)
    layer = r & np.uint64(0xFF)
    rabs = np.int64((r >> np.uint64(9)) & np.uint64(0x000FFFFFFFFFFFFF))
    neg = -np.int64((r >> np.uint64(8)) & np.uint64(1))  # 0 or -1
    return state, layer, rabs, np.float64((rabs ^ neg) - neg) * _ZIG_W[layer]


@numba.njit(**_JIT)
def _zig_reject(state, words, layer, rabs, x):  # pragma: no cover - jitted
    """The ~1% of candidates outside their layer's rectangle: the tail (layer 0) or the wedge
    test, then fresh candidates until one is accepted."""
    while True:
        if layer == 0:  # the tail beyond R, by Marsaglia's exponential method
            while True:
                state, a = _bits(state, words)
                state, b = _bits(state, words)
                xx = -_ZIG_INV_R * np.log1p(-_unit(a))
                yy = -np.log1p(-_unit(b))
                if yy + yy > xx * xx:
                    return state, (-(_ZIG_R + xx) if (rabs >> 8) & 1 else _ZIG_R + xx)
        else:
            state, a = _bits(state, words)
            if (_ZIG_F[layer - 1] - _ZIG_F[layer]) * _unit(a) + _ZIG_F[layer] < np.exp(-0.5 * x * x):
                return state, x
        state, layer, rabs, x = _zig_draw(state, words)
        if rabs < _ZIG_K[layer]:
            return state, x


@numba.njit(inline="always", **_JIT)  # inlined in Numba's IR: as a call, a draw cost three times as much
def standard_normal(state, words):  # pragma: no cover - jitted
    """(advanced state, one N(0, 1) double) from the generator state (a uint64; see ``_bits``)."""
    state, layer, rabs, x = _zig_draw(state, words)
    if rabs >= _ZIG_K[layer]:
        state, x = _zig_reject(state, words, layer, rabs, x)
    return state, x


@numba.njit(**_JIT)
def fill_normals(out, seed):  # pragma: no cover - jitted
    """Fill the float64 array ``out`` with the normals the training kernel draws for the noise
    seed ``seed``, in the order it draws them; returns the generator's final state."""
    state = np.uint64(seed)
    for i in range(out.size):
        state, out[i] = standard_normal(state, NO_WORDS)
    return state


@numba.njit(**_SUM)
def _alive_square_norm(g, keep):  # pragma: no cover - jitted
    """sum of g^2 over the alive entries, in float64; without a branch per entry, so it
    vectorises (a branch on a pruned network's mask mispredicts)."""
    total = 0.0
    for j in range(g.size):
        x = np.float64(g[j]) * np.float64(keep[j])
        total += x * x
    return total


@numba.njit(**_JIT)
def add_gradient_noise(grad, keep, offsets, sizes, scale, state):  # pragma: no cover - jitted
    """FlipOut's gradient noise: each parameter tensor's alive gradient g (the segment
    ``grad[offsets[t] : offsets[t] + sizes[t]]``) gets scale * ||g|| / sqrt(n) * N(0, 1) per
    entry, a fresh normal from :func:`standard_normal` with the generator state
    ``state`` (a one-element uint64 array, advanced). As the torch path: the noise in float64,
    rounded to float32 before it is added."""
    s = state[0]
    for t in range(offsets.size):
        g = grad[offsets[t] : offsets[t] + sizes[t]]
        k = keep[offsets[t] : offsets[t] + sizes[t]]
        sd = scale * np.sqrt(_alive_square_norm(g, k)) / np.sqrt(g.size)
        if sd > 0.0:
            for j in range(g.size):
                if k[j]:
                    s, z = standard_normal(s, NO_WORDS)
                    g[j] += np.float32(sd * z)
    state[0] = s


@numba.njit(**_SUM)
def add_scale_penalty(p, grad, fan_in, fan_out, offsets, transposed, penalty):  # pragma: no cover - jitted
    """Early-Bird's L1 penalty on neuron scales, with a neuron's scale the L2 norm of its incoming
    weights and bias (a group lasso): grad += penalty[layer] * w / ||w|| per neuron. Pruned
    entries are exactly zero in ``p``, so they count for nothing and get nothing."""
    for layer in range(fan_in.size):
        s = penalty[layer]
        if s == 0.0:
            continue
        fi, fo, at = fan_in[layer], fan_out[layer], offsets[layer]
        w = p[at : at + fo * fi]
        g = grad[at : at + fo * fi]
        norms = np.empty(fo, np.float32)
        for o in range(fo):
            norms[o] = p[at + fo * fi + o] * p[at + fo * fi + o]
        if transposed[layer]:  # (in, out): walk rows of outputs, in memory order
            for j in range(fi):
                for o in range(fo):
                    norms[o] += w[j * fo + o] * w[j * fo + o]
        else:
            for o in range(fo):
                acc = np.float32(0.0)
                for j in range(fi):
                    acc += w[o * fi + j] * w[o * fi + j]
                norms[o] += acc
        for o in range(fo):
            norms[o] = np.float32(s) / np.sqrt(norms[o]) if norms[o] > 0.0 else np.float32(0.0)
            grad[at + fo * fi + o] += norms[o] * p[at + fo * fi + o]
        if transposed[layer]:
            for j in range(fi):
                for o in range(fo):
                    g[j * fo + o] += norms[o] * w[j * fo + o]
        else:
            for o in range(fo):
                c = norms[o]
                for j in range(fi):
                    g[o * fi + j] += c * w[o * fi + j]


@numba.njit(**_JIT)
def _bias_terms(lr, steps, beta1, beta2):  # pragma: no cover - jitted
    """Adam's step size lr / (1 - beta1^t) and 1 / sqrt(1 - beta2^t) after ``steps`` steps, in
    float64 then rounded, as ``coevo.training.adam.bias_terms``."""
    return np.float32(lr / (1.0 - beta1**steps)), np.float32(1.0 / np.sqrt(1.0 - beta2**steps))


@numba.njit(**_JIT)
def _widest(width, fan_in, fan_out):  # pragma: no cover - jitted
    """The widest of ``width`` and every layer's fan-in and fan-out: the activation buffers' row size."""
    for layer in range(fan_in.size):
        width = max(width, fan_in[layer], fan_out[layer])
    return width


@numba.njit(**_JIT)
def _relayout(src, dst, fan_in, fan_out, offsets, transposed, to_working):  # pragma: no cover - jitted
    """Copy a row between the genome's layout and a working one, where the weight of a layer
    marked ``transposed`` is stored (in, out) instead of (out, in)."""
    dst[:] = src
    for i in range(fan_in.size):
        if transposed[i]:
            fi, fo, at = fan_in[i], fan_out[i], offsets[i]
            for o in range(fo):
                for j in range(fi):
                    if to_working:
                        dst[at + j * fo + o] = src[at + o * fi + j]
                    else:
                        dst[at + o * fi + j] = src[at + j * fo + o]


@numba.njit(**_JIT)
def _forward(p, fan_in, fan_out, offsets, transposed, activation, x, acts, bits):  # pragma: no cover - jitted
    """Activations of every layer for the rows of ``x`` (rows x fan_in[0]): acts[i + 1] receives
    layer i's output, flat (acts[0] is not touched)."""
    rows = x.shape[0]
    for i in range(fan_in.size):
        fi, fo, at = fan_in[i], fan_out[i], offsets[i]
        b = p[at + fo * fi : at + fo * fi + fo]
        h = acts[i + 1, : rows * fo].reshape((rows, fo))
        a_in = x if i == 0 else acts[i, : rows * fi].reshape((rows, fi))
        if transposed[i]:
            np.dot(a_in, p[at : at + fo * fi].reshape((fi, fo)), h)
        else:
            np.dot(a_in, p[at : at + fo * fi].reshape((fo, fi)).T, h)
        for r in range(rows):
            for o in range(fo):
                h[r, o] += b[o]
        flat = acts[i + 1, : rows * fo]
        if activation[i] == RELU:
            for j in range(flat.size):
                flat[j] = max(flat[j], np.float32(0.0))
        else:
            _sigmoid_(flat, bits[: flat.size])


@numba.njit(**_JIT)
def _train_pair(i, enc_parent, dec_parent, enc, dec, new_enc, new_dec, data, order, lr, fan_in, fan_out, offsets,
                transposed, activation, n_enc_layers, batch_size, loss, bce_weight, beta1, beta2,
                fresh, noise, noise_seed, penalty):  # pragma: no cover - jitted
    """Train a copy of the pair (encoder ``enc_parent``, decoder ``dec_parent``) for one epoch
    over ``order``; the result is row i of the new stacks. ``enc``, ``dec``, ``new_*`` are
    (params, mask, exp_avg, exp_avg_sq, steps, flips, memory); flips are counted when the stacks
    have columns for them. ``noise`` > 0 adds FlipOut's gradient noise (seeded by ``noise_seed``);
    ``penalty`` (per layer) Early-Bird's scale penalty. Returns the sum of the per-element training loss
    (each batch before its step). Each half keeps its own Adam step count: the two may come from
    different cells (``selection.pairing = "independent"``), with different training histories.

    The epoch works on a copy where wide-output layers (``transposed``: the decoder's 30 ->
    1000) are stored (in, out): BLAS multiplies 5-row batches by them 2-3x faster that way."""
    n_layers = fan_in.size
    size_e, size = enc[0].shape[1], enc[0].shape[1] + dec[0].shape[1]
    p, m, v = np.empty(size, np.float32), np.empty(size, np.float32), np.empty(size, np.float32)
    keep = np.empty(size, np.bool_)
    e_meta = (fan_in[:n_enc_layers], fan_out[:n_enc_layers], offsets[:n_enc_layers], transposed[:n_enc_layers])
    d_meta = (fan_in[n_enc_layers:], fan_out[n_enc_layers:], offsets[n_enc_layers:] - size_e,
              transposed[n_enc_layers:])
    for src, work in ((enc[0], p), (enc[2], m), (enc[3], v)):
        _relayout(src[enc_parent], work[:size_e], *e_meta, True)
    for src, work in ((dec[0], p), (dec[2], m), (dec[3], v)):
        _relayout(src[dec_parent], work[size_e:], *d_meta, True)
    _relayout(enc[1][enc_parent], keep[:size_e], *e_meta, True)
    _relayout(dec[1][dec_parent], keep[size_e:], *d_meta, True)
    enc_steps, dec_steps = enc[4][enc_parent], dec[4][dec_parent]
    track = enc[5].shape[1] > 0
    flips = np.zeros(size if track else 0, np.float32)
    if track:
        _relayout(enc[5][enc_parent], flips[:size_e], *e_meta, True)
        _relayout(dec[5][dec_parent], flips[size_e:], *d_meta, True)
    seg_offsets = np.empty(2 * fan_in.size, np.int64)
    seg_sizes = np.empty(2 * fan_in.size, np.int64)
    for layer in range(fan_in.size):
        seg_offsets[2 * layer] = offsets[layer]
        seg_sizes[2 * layer] = fan_in[layer] * fan_out[layer]
        seg_offsets[2 * layer + 1] = offsets[layer] + fan_in[layer] * fan_out[layer]
        seg_sizes[2 * layer + 1] = fan_out[layer]
    penalised = False
    for layer in range(penalty.size):
        penalised = penalised or penalty[layer] != 0.0
    state = np.empty(1, np.uint64)
    state[0] = np.uint64(noise_seed)  # the pair's noise stream: (seed, generation, cell), then step by step

    width = _widest(data.shape[1], fan_in, fan_out)
    acts = np.zeros((n_layers + 1, batch_size * width), dtype=np.float32)  # input first
    delta = np.zeros(batch_size * width, dtype=np.float32)
    back = np.zeros(batch_size * width, dtype=np.float32)
    bits = np.zeros(batch_size * width, dtype=np.int32)
    grad = np.zeros(size, dtype=np.float32)
    b1, b2 = np.float32(beta1), np.float32(beta2)
    omb1, omb2 = np.float32(1.0 - beta1), np.float32(1.0 - beta2)  # in float64 first, as torch
    n_rows, n_dims = order.size, data.shape[1]
    last = n_layers - 1
    loss_sum = 0.0
    for start in range(0, n_rows, batch_size):
        rows = min(batch_size, n_rows - start)
        x = acts[0, : rows * n_dims].reshape((rows, n_dims))
        for r in range(rows):
            x[r] = data[order[start + r]]
        _forward(p, fan_in, fan_out, offsets, transposed, activation, x, acts, bits)
        # backward: delta is d(loss)/d(pre-activation) of layer l, rows x fan_out
        out_size = rows * fan_out[last]
        loss_sum += _loss_sum(acts[last + 1, :out_size], acts[0, :out_size], loss)
        _output_delta(acts[last + 1, :out_size], acts[0, :out_size], delta[:out_size], loss, activation[last],
                      np.float32(1.0 / out_size), bce_weight)
        for layer in range(last, -1, -1):
            fi, fo, at = fan_in[layer], fan_out[layer], offsets[layer]
            d = delta[: rows * fo].reshape((rows, fo))
            a_in = acts[layer, : rows * fi].reshape((rows, fi))
            if transposed[layer]:
                np.dot(a_in.T, d, grad[at : at + fo * fi].reshape((fi, fo)))
            else:
                np.dot(d.T, a_in, grad[at : at + fo * fi].reshape((fo, fi)))
            gb = grad[at + fo * fi : at + fo * fi + fo]
            gb[:] = 0.0
            for r in range(rows):
                for o in range(fo):
                    gb[o] += d[r, o]
            if layer > 0:
                if transposed[layer]:
                    np.dot(d, p[at : at + fo * fi].reshape((fi, fo)).T, back[: rows * fi].reshape((rows, fi)))
                else:
                    np.dot(d, p[at : at + fo * fi].reshape((fo, fi)), back[: rows * fi].reshape((rows, fi)))
                a = acts[layer, : rows * fi]
                if activation[layer - 1] == RELU:
                    for j in range(a.size):
                        delta[j] = back[j] if a[j] > 0.0 else np.float32(0.0)
                else:
                    for j in range(a.size):
                        delta[j] = back[j] * (a[j] - a[j] * a[j])
        if noise > 0.0:
            add_gradient_noise(grad, keep, seg_offsets, seg_sizes, noise, state)
        if penalised:
            add_scale_penalty(p, grad, fan_in, fan_out, offsets, transposed, penalty)
        # masked Adam at this cell's learning rate, each half with its own step count
        if fresh:
            m[:] = 0.0
            v[:] = 0.0
            enc_steps = dec_steps = 0.0
        enc_steps += 1.0
        dec_steps += 1.0
        for lo, hi, steps in ((0, size_e, enc_steps), (size_e, size, dec_steps)):
            step_size, inv_sqrt_bc2 = _bias_terms(lr, steps, beta1, beta2)
            _adam(p[lo:hi], grad[lo:hi], m[lo:hi], v[lo:hi], keep[lo:hi], step_size, inv_sqrt_bc2,
                  b1, b2, omb1, omb2, flips[lo:hi] if track else flips)

    for work, dst in ((p, new_enc[0]), (m, new_enc[2]), (v, new_enc[3])):
        _relayout(work[:size_e], dst[i], *e_meta, False)
    for work, dst in ((p, new_dec[0]), (m, new_dec[2]), (v, new_dec[3])):
        _relayout(work[size_e:], dst[i], *d_meta, False)
    if track:
        _relayout(flips[:size_e], new_enc[5][i], *e_meta, False)
        _relayout(flips[size_e:], new_dec[5][i], *d_meta, False)
    new_enc[1][i] = enc[1][enc_parent]
    new_dec[1][i] = dec[1][dec_parent]
    new_enc[4][i] = enc_steps
    new_dec[4][i] = dec_steps
    new_enc[6][i] = enc[6][enc_parent]
    new_dec[6][i] = dec[6][dec_parent]
    return loss_sum


@numba.njit(parallel=True, **_JIT)
def _train_kernel(enc_parents, dec_parents, enc, dec, new_enc, new_dec, data, orders, lr, fan_in, fan_out, offsets,
                  transposed, activation, n_enc_layers, batch_size, loss, bce_weight, beta1, beta2, fresh,
                  noise, noise_seeds, penalty, loss_sums):  # pragma: no cover - jitted
    for i in numba.prange(enc_parents.size):
        i = np.int64(i)  # one specialisation: prange's index is uint64 in the parallel body, int64 in typing
        loss_sums[i] = _train_pair(i, enc_parents[i], dec_parents[i], enc, dec, new_enc, new_dec, data, orders[i],
                                   lr[i], fan_in, fan_out, offsets, transposed, activation, n_enc_layers, batch_size,
                                   loss, bce_weight, beta1, beta2, fresh, noise, noise_seeds[i], penalty)


@numba.njit(**_JIT)
def _cell_losses(k, enc_params, dec_params, enc_meta, dec_meta, neighbours, batches, loss, out):  # pragma: no cover - jitted
    """Cell k's loss matrix: out[k, i, j] = loss of encoder neighbours[k, i] with decoder
    neighbours[k, j] on the cell's batch. Each decoder decodes all s encoders' codes at once."""
    s = neighbours.shape[1]
    rows, n_dims = batches.shape[1], batches.shape[2]
    width = _widest(_widest(n_dims, enc_meta[0], enc_meta[1]), dec_meta[0], dec_meta[1])
    latent = enc_meta[1][enc_meta[1].size - 1]
    enc_acts = np.zeros((enc_meta[0].size + 1, rows * width), dtype=np.float32)
    dec_acts = np.zeros((dec_meta[0].size + 1, s * rows * width), dtype=np.float32)  # [0] unused
    bits = np.zeros(s * rows * width, dtype=np.int32)
    target = batches[k].ravel()
    codes = np.empty(s * rows * latent, dtype=np.float32)
    for i in range(s):
        _forward(enc_params[neighbours[k, i]], *enc_meta, batches[k], enc_acts, bits)
        codes[i * rows * latent : (i + 1) * rows * latent] = enc_acts[enc_meta[0].size, : rows * latent]
    for j in range(s):
        _forward(dec_params[neighbours[k, j]], *dec_meta, codes.reshape((s * rows, latent)), dec_acts, bits)
        recon = dec_acts[dec_meta[0].size]
        for i in range(s):
            block = recon[i * rows * n_dims : (i + 1) * rows * n_dims]
            out[k, i, j] = _loss_sum(block, target, loss) / (rows * n_dims)


@numba.njit(parallel=True, **_JIT)
def _pair_losses_kernel(enc_params, dec_params, enc_meta, dec_meta, neighbours, batches, loss, out):  # pragma: no cover - jitted
    for k in numba.prange(neighbours.shape[0]):
        k = np.int64(k)  # one specialisation (see _train_kernel)
        _cell_losses(k, enc_params, dec_params, enc_meta, dec_meta, neighbours, batches, loss, out)


@numba.njit(**_JIT)
def _centre_loss(k, enc_params, dec_params, enc_meta, dec_meta, data, loss, chunk):  # pragma: no cover - jitted
    """Sum of the per-element loss of pair k (encoder k, decoder k) over all rows of ``data``."""
    width = _widest(_widest(data.shape[1], enc_meta[0], enc_meta[1]), dec_meta[0], dec_meta[1])
    n_enc, n_dec = enc_meta[0].size, dec_meta[0].size
    latent = enc_meta[1][n_enc - 1]
    enc_acts = np.zeros((n_enc + 1, chunk * width), dtype=np.float32)
    dec_acts = np.zeros((n_dec + 1, chunk * width), dtype=np.float32)
    bits = np.zeros(chunk * width, dtype=np.int32)
    total = 0.0
    for start in range(0, data.shape[0], chunk):
        x = data[start : start + chunk]
        rows = x.shape[0]
        _forward(enc_params[k], *enc_meta, x, enc_acts, bits)
        _forward(dec_params[k], *dec_meta, enc_acts[n_enc, : rows * latent].reshape((rows, latent)), dec_acts, bits)
        total += _loss_sum(dec_acts[n_dec, : x.size], x.ravel(), loss)
    return total


@numba.njit(parallel=True, **_JIT)
def _centre_losses_kernel(enc_params, dec_params, enc_meta, dec_meta, data, loss, chunk, out):  # pragma: no cover - jitted
    for k in numba.prange(out.size):
        k = np.int64(k)  # one specialisation (see _train_kernel)
        out[k] = _centre_loss(k, enc_params, dec_params, enc_meta, dec_meta, data, loss, chunk)


_blas = None


def one_blas_thread():
    """BLAS (SciPy's OpenBLAS) must not start threads of its own inside Numba's: a context
    manager that keeps it to one while a kernel runs."""
    global _blas
    if _blas is None:
        import scipy.linalg.cython_blas  # noqa: F401  (Numba's np.dot calls it: load it so it is seen)

        _blas = ThreadpoolController()
    return _blas.limit(limits=1, user_api="blas")


def _set_threads(requested: int | None, work_items: int) -> None:
    """Numba threads for the next kernel (default: torch's intra-op count). One compiled kernel
    serves every count, so the count cannot change a result."""
    torch_threads = torch.get_num_threads()
    threads = torch_threads if requested is None else requested
    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS, work_items)))
    if torch.get_num_threads() != torch_threads:  # Numba's first start of its OpenMP pool, which
        torch.set_num_threads(torch_threads)  # torch shares, resets the pool's size: undo that


def _meta(layout: Layout, transpose_wide: bool) -> tuple[np.ndarray, ...]:
    """Per-layer fan_in, fan_out, offset, transposed flag and activation code, as kernels read them."""
    layers = layout.layers
    return (np.array([s.fan_in for s in layers], dtype=np.int64),
            np.array([s.fan_out for s in layers], dtype=np.int64),
            np.array(layout.offsets, dtype=np.int64),
            np.array([transpose_wide and s.fan_out > s.fan_in for s in layers], dtype=np.bool_),
            np.array([RELU if s.activation == "relu" else SIGMOID for s in layers], dtype=np.int64))


def _fields(stack: Stack) -> tuple[np.ndarray, ...]:
    """The stack's fields as the kernels index them: (params, mask, exp_avg, exp_avg_sq, steps),
    zero-copy views. A field must be C-contiguous: a contiguous copy of an output stack would
    take the kernel's writes and be thrown away, so this refuses rather than copies."""
    arrays = tuple(getattr(stack, f).numpy() for f in FIELDS)
    for name, array in zip(FIELDS, arrays):
        if not array.flags.c_contiguous:
            raise ValueError(f"stack field {name} is not C-contiguous (strides {array.strides}); "
                             f"the kernels read and write it in place: pass a contiguous tensor")
    return arrays


def train_pairs(enc: Stack, dec: Stack, enc_parents: np.ndarray, dec_parents: np.ndarray, data: torch.Tensor,
                orders: np.ndarray, lr: np.ndarray, batch_size: int, loss: str, beta1: float, beta2: float,
                fresh_optimizer_each_batch: bool = False, bce_weight: float = 0.0,
                threads: int | None = None, terms: TrainerTerms | None = None) -> tuple[Stack, Stack, np.ndarray]:
    """New stacks whose row i is the pair (encoder ``enc_parents[i]``, decoder ``dec_parents[i]``)
    after one epoch over ``data`` in the row order ``orders[i]`` at learning rate ``lr[i]``; the
    inputs are not changed. Each network keeps its own Adam step count. Also returns each pair's
    training loss over the epoch (mean per element, ``loss`` alone: the ``bce_weight`` term only
    shapes the gradient).

    ``threads`` (default: torch's intra-op thread count) is how many pairs train at once;
    ``terms``, the seed methods' extra training terms (gradient noise, scale penalty).
    """
    n = len(enc_parents)
    terms = terms or TrainerTerms()
    new_enc, new_dec = (Stack(s.layout, *(getattr(s, f).new_empty((n, *getattr(s, f).shape[1:])) for f in FIELDS))
                        for s in (enc, dec))
    loss_sums = np.zeros(n, dtype=np.float64)
    args = (np.ascontiguousarray(enc_parents, dtype=np.int64), np.ascontiguousarray(dec_parents, dtype=np.int64),
            _fields(enc), _fields(dec), _fields(new_enc), _fields(new_dec), np.ascontiguousarray(data.numpy()),
            np.ascontiguousarray(orders, dtype=np.int64),
            np.ascontiguousarray(lr, dtype=np.float64), *_meta(enc.layout + dec.layout, True),
            len(enc.layout.layers), int(batch_size), LOSSES[loss], float(bce_weight), float(beta1), float(beta2),
            bool(fresh_optimizer_each_batch), float(terms.gradient_noise), terms.seeds(n),
            terms.penalties(enc.layout, dec.layout), loss_sums)
    _set_threads(threads, n)
    with one_blas_thread():
        _train_kernel(*args)
    return new_enc, new_dec, loss_sums / (orders.shape[1] * data.shape[1])


def pair_losses(enc: Stack, dec: Stack, neighbours: np.ndarray, batches: torch.Tensor, loss: str,
                threads: int | None = None) -> torch.Tensor:
    """The CPU version of :func:`coevo.training.batched.pair_losses`: (N, s, s) loss matrices, networks
    read in place by index."""
    neighbours = np.ascontiguousarray(neighbours, dtype=np.int64)
    out = np.zeros(neighbours.shape + (neighbours.shape[1],), dtype=np.float32)
    args = (enc.params.numpy(), dec.params.numpy(), _meta(enc.layout, False), _meta(dec.layout, False),
            neighbours, np.ascontiguousarray(batches.numpy()), LOSSES[loss], out)
    _set_threads(threads, len(neighbours))
    with one_blas_thread():
        _pair_losses_kernel(*args)
    return torch.from_numpy(out)


def centre_losses(enc: Stack, dec: Stack, data: torch.Tensor, loss: str, chunk: int = 64,
                  threads: int | None = None) -> torch.Tensor:
    """The CPU version of :func:`coevo.training.batched.centre_losses`: each cell's own pair's mean loss on
    all rows of ``data``, (N,) float64. Rows go through ``chunk`` at a time, so a network's
    activations stay in cache beside its weights."""
    out = np.zeros(len(enc), dtype=np.float64)
    args = (enc.params.numpy(), dec.params.numpy(), _meta(enc.layout, False), _meta(dec.layout, False),
            np.ascontiguousarray(data.numpy()), LOSSES[loss], int(chunk), out)
    _set_threads(threads, len(enc))
    with one_blas_thread():
        _centre_losses_kernel(*args)
    return torch.from_numpy(out / data.numel())
