"""One training epoch of many autoencoders on the CPU: network by network, in one Numba call.

Why network by network: at the paper's setting one network's parameters, Adam moments, mask
and gradient take about 1 MB, which fits one core's L2 cache. Stepping all networks together
(the torch path, :func:`coevo.batched.train_epoch_torch`) streams every network through
memory on each of the 200 steps of an epoch and pays some 30 torch dispatches per step. Here
each thread takes whole networks and runs their whole epoch, so a network stays in cache and no
Python runs between steps: about twice as fast, see ``benchmarks/speed.py``.

The maths is the torch path's, step for step: the same mini-batches, loss gradients, masked
Adam and bias corrections. Matrix products go to BLAS (SciPy's, through ``np.dot``), so only
the order of float32 additions differs (``tests/test_cpu_epoch.py``). A network never spans two
threads, so the result does not depend on how many threads run.
"""

from __future__ import annotations

import numba
import numpy as np
import torch
from threadpoolctl import ThreadpoolController

from coevo.population import Stack

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

_JIT = dict(cache=True, error_model="numpy")
# Reassociation lets LLVM vectorise a sum; only the order of float32 additions changes.
_SUM = dict(_JIT, fastmath={"reassoc", "nsz", "contract"})


@numba.njit(**_JIT)
def _sigmoid_(h, scale_bits):  # pragma: no cover - jitted
    """h = 1 / (1 + exp(-h)) in place. ``scale_bits`` is int32 scratch of h's size, the bits
    of 2^n in the range reduction exp(x) = 2^n exp(r)."""
    scale = scale_bits.view(np.float32)
    for j in range(h.size):
        x = min(max(-h[j], _EXP_MIN), _EXP_MAX)
        n = np.floor(x * _LOG2E + np.float32(0.5))
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
    """Sum of the per-element loss, as ``coevo.batched.reconstruction_loss`` before its mean."""
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
def _output_delta(out, target, delta, loss, activation, scale):  # pragma: no cover - jitted
    """d(mean loss)/d(pre-activation of the output layer), as ``coevo.batched._output_grad``."""
    one, zero = np.float32(1.0), np.float32(0.0)
    if loss == 2 and activation == SIGMOID:  # BCE after a sigmoid: the derivatives cancel
        for j in range(out.size):
            delta[j] = (out[j] - target[j]) * scale
        return
    for j in range(out.size):
        o = out[j]
        d = o - target[j]
        if loss == 0:
            g = one if d > zero else (-one if d < zero else zero)
        elif loss == 1:
            g = d * np.float32(2.0)
        else:
            c = min(max(o, np.float32(1e-7)), np.float32(1 - 1e-7))
            g = d / (c * (one - c))
        if activation == RELU:
            g = g if o > zero else zero
        else:
            g = g * (o - o * o)
        delta[j] = g * scale


@numba.njit(**_JIT)
def _adam(p, g, m, v, keep, step_size, inv_sqrt_bc2, beta1, beta2, one_minus_beta1,
          one_minus_beta2):  # pragma: no cover - jitted
    """Masked Adam on one network's flat row, as ``coevo.adam.adam_step_reference``."""
    for j in range(p.size):
        k = np.float32(keep[j])
        gj = g[j] * k
        mj = beta1 * m[j] + one_minus_beta1 * gj
        vj = beta2 * v[j] + one_minus_beta2 * gj * gj
        m[j] = mj
        v[j] = vj
        p[j] = (p[j] - step_size * mj / (np.sqrt(vj) * inv_sqrt_bc2 + EPS)) * k


@numba.njit(**_JIT)
def _relayout(src, dst, fan_in, fan_out, offsets, transposed, to_working):  # pragma: no cover - jitted
    """Copy a row between the genome's layout and the epoch's working one, where the weight of a
    layer marked ``transposed`` is stored (in, out) instead of (out, in)."""
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
def _train_network(k, params, mask, exp_avg, exp_avg_sq, steps, data, order, lr, fan_in, fan_out, offsets,
                   transposed, activation, batch_size, loss, beta1, beta2, fresh):  # pragma: no cover - jitted
    """Network k's whole epoch: forward, backward and masked Adam for each mini-batch of ``order``.
    Returns the sum of the per-element training loss over the epoch (each row before its step).

    The epoch works on copies where wide-output layers (``transposed``: the decoder's 30 -> 1000)
    are stored (in, out): BLAS multiplies 5-row batches by them 2-3x faster that way round."""
    n_layers = fan_in.size
    width = data.shape[1]
    for i in range(n_layers):
        width = max(width, fan_in[i], fan_out[i])
    acts = np.zeros((n_layers + 1, batch_size * width), dtype=np.float32)  # input first
    delta = np.zeros(batch_size * width, dtype=np.float32)
    back = np.zeros(batch_size * width, dtype=np.float32)
    bits = np.zeros(batch_size * width, dtype=np.int32)
    grad = np.zeros(params.shape[1], dtype=np.float32)
    size_p = params.shape[1]
    p, m, v = np.empty(size_p, np.float32), np.empty(size_p, np.float32), np.empty(size_p, np.float32)
    keep = np.empty(size_p, np.bool_)
    for src, dst in ((params[k], p), (exp_avg[k], m), (exp_avg_sq[k], v)):
        _relayout(src, dst, fan_in, fan_out, offsets, transposed, True)
    _relayout(mask[k], keep, fan_in, fan_out, offsets, transposed, True)
    b1, b2 = np.float32(beta1), np.float32(beta2)
    omb1, omb2 = np.float32(1.0 - beta1), np.float32(1.0 - beta2)  # in float64 first, as torch
    n_rows, n_dims = order.size, data.shape[1]
    loss_sum = 0.0
    for start in range(0, n_rows, batch_size):
        rows = min(batch_size, n_rows - start)
        x = acts[0, : rows * n_dims].reshape((rows, n_dims))
        for r in range(rows):
            x[r] = data[order[start + r]]
        # forward
        for i in range(n_layers):
            fi, fo, at = fan_in[i], fan_out[i], offsets[i]
            b = p[at + fo * fi : at + fo * fi + fo]
            h = acts[i + 1, : rows * fo].reshape((rows, fo))
            a_in = acts[i, : rows * fi].reshape((rows, fi))
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
        # backward: delta is d(loss)/d(pre-activation) of layer i, rows x fan_out
        last = n_layers - 1
        size = rows * fan_out[last]
        loss_sum += _loss_sum(acts[last + 1, :size], acts[0, :size], loss)
        _output_delta(acts[last + 1, :size], acts[0, :size], delta[:size], loss, activation[last],
                      np.float32(1.0 / size))
        for i in range(last, -1, -1):
            fi, fo, at = fan_in[i], fan_out[i], offsets[i]
            d = delta[: rows * fo].reshape((rows, fo))
            a_in = acts[i, : rows * fi].reshape((rows, fi))
            if transposed[i]:
                np.dot(a_in.T, d, grad[at : at + fo * fi].reshape((fi, fo)))
            else:
                np.dot(d.T, a_in, grad[at : at + fo * fi].reshape((fo, fi)))
            gb = grad[at + fo * fi : at + fo * fi + fo]
            gb[:] = 0.0
            for r in range(rows):
                for o in range(fo):
                    gb[o] += d[r, o]
            if i > 0:
                if transposed[i]:
                    np.dot(d, p[at : at + fo * fi].reshape((fi, fo)).T, back[: rows * fi].reshape((rows, fi)))
                else:
                    np.dot(d, p[at : at + fo * fi].reshape((fo, fi)), back[: rows * fi].reshape((rows, fi)))
                a = acts[i, : rows * fi]
                if activation[i - 1] == RELU:
                    for j in range(a.size):
                        delta[j] = back[j] if a[j] > 0.0 else np.float32(0.0)
                else:
                    for j in range(a.size):
                        delta[j] = back[j] * (a[j] - a[j] * a[j])
        # masked Adam, with this network's own step count and learning rate
        if fresh:
            m[:] = 0.0
            v[:] = 0.0
            steps[k] = 0.0
        steps[k] += 1.0
        t = steps[k]
        step_size = np.float32(lr / (1.0 - beta1**t))
        inv_sqrt_bc2 = np.float32(1.0 / np.sqrt(1.0 - beta2**t))
        _adam(p, grad, m, v, keep, step_size, inv_sqrt_bc2, b1, b2, omb1, omb2)
    for src, dst in ((p, params[k]), (m, exp_avg[k]), (v, exp_avg_sq[k])):
        _relayout(src, dst, fan_in, fan_out, offsets, transposed, False)
    return loss_sum


@numba.njit(**_JIT)
def _epoch_serial(params, mask, exp_avg, exp_avg_sq, steps, data, orders, lr, fan_in, fan_out, offsets,
                  transposed, activation, batch_size, loss, beta1, beta2, fresh, loss_sums):  # pragma: no cover - jitted
    for k in range(params.shape[0]):
        loss_sums[k] = _train_network(k, params, mask, exp_avg, exp_avg_sq, steps, data, orders[k], lr[k], fan_in, fan_out,
                       offsets, transposed, activation, batch_size, loss, beta1, beta2, fresh)


@numba.njit(parallel=True, **_JIT)
def _epoch_parallel(params, mask, exp_avg, exp_avg_sq, steps, data, orders, lr, fan_in, fan_out, offsets,
                    transposed, activation, batch_size, loss, beta1, beta2, fresh, loss_sums):  # pragma: no cover - jitted
    for k in numba.prange(params.shape[0]):
        loss_sums[k] = _train_network(k, params, mask, exp_avg, exp_avg_sq, steps, data, orders[k], lr[k], fan_in, fan_out,
                       offsets, transposed, activation, batch_size, loss, beta1, beta2, fresh)


_blas = None


def _one_blas_thread():
    """BLAS (SciPy's OpenBLAS) must not start threads of its own inside Numba's: a context
    manager that keeps it to one while the kernel runs."""
    global _blas
    if _blas is None:
        import scipy.linalg.cython_blas  # noqa: F401  (Numba's np.dot calls it: load it so it is seen)

        _blas = ThreadpoolController()
    return _blas.limit(limits=1, user_api="blas")


def train_epoch(pairs: Stack, data: torch.Tensor, orders: np.ndarray, lr: np.ndarray, batch_size: int, loss: str,
                beta1: float, beta2: float, fresh_optimizer_each_batch: bool = False,
                threads: int | None = None) -> np.ndarray:
    """The CPU version of :func:`coevo.batched.train_epoch`, in place on ``pairs``; returns each
    network's mean training loss over the epoch.

    ``threads`` (default: torch's intra-op thread count) is how many networks train at once.
    """
    layers = pairs.layout.layers
    threads = torch.get_num_threads() if threads is None else threads
    threads = min(threads, numba.config.NUMBA_NUM_THREADS, len(pairs))
    args = (
        pairs.params.numpy(), pairs.mask.numpy(), pairs.exp_avg.numpy(), pairs.exp_avg_sq.numpy(),
        pairs.steps.numpy(), np.ascontiguousarray(data.numpy()), np.ascontiguousarray(orders, dtype=np.int64),
        np.ascontiguousarray(lr, dtype=np.float64),
        np.array([s.fan_in for s in layers], dtype=np.int64), np.array([s.fan_out for s in layers], dtype=np.int64),
        np.array(pairs.layout.offsets, dtype=np.int64),
        np.array([s.fan_out > s.fan_in for s in layers], dtype=np.bool_),
        np.array([RELU if s.activation == "relu" else SIGMOID for s in layers], dtype=np.int64),
        int(batch_size), LOSSES[loss], float(beta1), float(beta2), bool(fresh_optimizer_each_batch),
        np.zeros(len(pairs), dtype=np.float64),
    )
    with _one_blas_thread():
        if threads > 1:
            numba.set_num_threads(threads)
            _epoch_parallel(*args)
        else:
            _epoch_serial(*args)
    return args[-1] / (orders.shape[1] * data.shape[1])
