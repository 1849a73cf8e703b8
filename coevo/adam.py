"""Adam over stacked genomes, one learning rate per network, masks honoured.

The update is torch's Adam (no weight decay, no amsgrad) applied row by row, with each row's
own step count and learning rate. Gradients are masked first, so moments of pruned entries
stay exactly zero, and the mask is re-applied to the parameters after the step (SPEC 3).

On CPU a fused Numba kernel does the whole update in one pass over memory instead of the
chain of torch ops in :func:`adam_step_reference` (its test oracle); other devices use that
chain. ``benchmarks/speed.py`` reports the kernel's share of a generation.
"""

from __future__ import annotations

import numba
import numpy as np
import torch

EPS = 1e-8


@numba.njit(cache=True, error_model="numpy", inline="always")
def _adam_row(k, p, g, seg_offset, seg_size, m, v, mask, step_size, inv_sqrt_bc2,
              beta1, beta2, one_minus_beta1, one_minus_beta2, eps):  # pragma: no cover - jitted
    """Row k of the update. p, m, v, mask are (N, P); g is flat and segment-major: segment t
    (one weight or bias tensor, columns seg_offset[t]:+seg_size[t] of a row) holds N contiguous
    rows, so batched matmuls write gradients straight into it."""
    # 1 - beta is passed in, computed in float64: in float32, 1 - 0.999 is off by 1e-5 relative.
    n = p.shape[0]
    s = step_size[k]
    c = inv_sqrt_bc2[k]
    for t in range(seg_offset.size):
        col = seg_offset[t]
        size = seg_size[t]
        base = n * col + k * size
        # 1-D views with plain indices and a branch-free body: the loop vectorises (with 2-D
        # indexing and offsets it ran ~15x slower)
        pk = p[k, col : col + size]
        mk = m[k, col : col + size]
        vk = v[k, col : col + size]
        keep_k = mask[k, col : col + size]
        gk = g[base : base + size]
        for j in range(size):
            keep = np.float32(keep_k[j])
            gj = gk[j] * keep
            mj = beta1 * mk[j] + one_minus_beta1 * gj
            vj = beta2 * vk[j] + one_minus_beta2 * gj * gj
            mk[j] = mj
            vk[j] = vj
            pk[j] = (pk[j] - s * mj / (np.sqrt(vj) * c + eps)) * keep


@numba.njit(cache=True, error_model="numpy")
def _adam_kernel(p, g, seg_offset, seg_size, m, v, mask, step_size, inv_sqrt_bc2,
                 beta1, beta2, one_minus_beta1, one_minus_beta2, eps):  # pragma: no cover - jitted
    """Serial over rows: the choice when torch runs one thread (parallel sweeps, Ray workers)."""
    for k in range(p.shape[0]):
        _adam_row(k, p, g, seg_offset, seg_size, m, v, mask, step_size, inv_sqrt_bc2,
                  beta1, beta2, one_minus_beta1, one_minus_beta2, eps)


@numba.njit(cache=True, error_model="numpy", parallel=True)
def _adam_kernel_parallel(p, g, seg_offset, seg_size, m, v, mask, step_size, inv_sqrt_bc2,
                          beta1, beta2, one_minus_beta1, one_minus_beta2, eps):  # pragma: no cover - jitted
    """Rows split over Numba's threads: ~2x faster on 2 idle cores (0.19 vs 0.37 ms per step at
    the paper setting); used only when torch itself is allowed more than one thread."""
    for k in numba.prange(p.shape[0]):
        _adam_row(k, p, g, seg_offset, seg_size, m, v, mask, step_size, inv_sqrt_bc2,
                  beta1, beta2, one_minus_beta1, one_minus_beta2, eps)


class StackedAdam:
    """Adam on every row of a :class:`~coevo.population.Stack`, each row with its own learning rate.

    The moments and step counts live in the stack (they travel with the genomes); this object
    only caches the views and constants of one training pass, so a step is one kernel call.
    """

    def __init__(self, stack, lr: np.ndarray, beta1: float, beta2: float) -> None:
        self.stack = stack
        self.lr = np.asarray(lr, dtype=np.float64)
        self.beta1, self.beta2 = beta1, beta2
        self.on_cpu = stack.params.device.type == "cpu"
        if self.on_cpu:
            self.views = tuple(t.numpy() for t in (stack.params, stack.exp_avg, stack.exp_avg_sq, stack.mask))
            self.seg_offset, self.seg_size = stack.layout.segments()
            self.steps = stack.steps.numpy()  # shares memory: increments land in the stack
            self.constants = tuple(np.float32(c) for c in (beta1, beta2, 1.0 - beta1, 1.0 - beta2, EPS))
            threads = min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)
            self.kernel = _adam_kernel_parallel if threads > 1 and len(stack) > 1 else _adam_kernel
            if self.kernel is _adam_kernel_parallel:
                numba.set_num_threads(threads)

    def reset(self) -> None:
        """Forget the moments (the reference's fresh optimizer per mini-batch)."""
        self.stack.exp_avg.zero_()
        self.stack.exp_avg_sq.zero_()
        self.stack.steps.zero_()

    def step(self, grads: torch.Tensor) -> None:
        """One in-place step from the gradient ``grads``, flat in segment-major order
        (see :meth:`~coevo.genome.Layout.split_segment_major`)."""
        if not self.on_cpu:
            self.stack.steps += 1
            step_size, inv_sqrt_bc2 = bias_terms(self.stack.steps.cpu().numpy(), self.lr, self.beta1, self.beta2)
            dev = self.stack.params.device
            grads = self.stack.layout.segment_major_to_rows(grads, len(self.stack))
            adam_step_reference(self.stack.params, grads, self.stack.exp_avg, self.stack.exp_avg_sq, self.stack.mask,
                                torch.as_tensor(step_size, device=dev), torch.as_tensor(inv_sqrt_bc2, device=dev),
                                self.beta1, self.beta2)
            return
        self.steps += 1
        step_size, inv_sqrt_bc2 = bias_terms(self.steps, self.lr, self.beta1, self.beta2)
        p, m, v, mask = self.views
        self.kernel(p, grads.numpy(), self.seg_offset, self.seg_size, m, v, mask, step_size.astype(np.float32),
                     inv_sqrt_bc2.astype(np.float32), *self.constants)


def bias_terms(steps: np.ndarray, lr: np.ndarray, beta1: float, beta2: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-row step size lr / (1 - beta1^t) and 1 / sqrt(1 - beta2^t), in float64."""
    return lr / (1.0 - beta1**steps), 1.0 / np.sqrt(1.0 - beta2**steps)


def adam_step_reference(params, grads, exp_avg, exp_avg_sq, mask, step_size, inv_sqrt_bc2, beta1, beta2) -> None:
    """The same update as a chain of torch ops: any device, and the kernel's test oracle."""
    g = grads * mask
    exp_avg.mul_(beta1).add_(g, alpha=1.0 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1.0 - beta2)
    denom = exp_avg_sq.sqrt().mul_(inv_sqrt_bc2.to(params.dtype)[:, None]).add_(EPS)
    params.sub_(exp_avg / denom * step_size.to(params.dtype)[:, None])
    params.mul_(mask)
