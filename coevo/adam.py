"""Adam over stacked genomes, one learning rate per network, masks honoured.

The update is torch's Adam (no weight decay, no amsgrad) applied row by row, with each row's
own step count and learning rate. Gradients are masked first, so moments of pruned entries
stay exactly zero, and the mask is re-applied to the parameters after the step (SPEC 3).

On CPU a fused Numba kernel does the whole update in one pass over memory: measured ~4x
faster than the equivalent chain of torch in-place ops on the paper's setting (see
``benchmarks/speed.py``). Other devices use the torch chain.
"""

from __future__ import annotations

import numba
import numpy as np
import torch

EPS = 1e-8


@numba.njit(cache=True, error_model="numpy")
def _adam_kernel(p, g, m, v, mask, step_size, inv_sqrt_bc2, beta1, beta2, one_minus_beta1, one_minus_beta2, eps):  # pragma: no cover - jitted
    # 1 - beta is passed in, computed in float64: in float32, 1 - 0.999 is off by 1e-5 relative.
    # Serial and branch-free: with numpy's error model the inner loop vectorises; measured
    # faster than a parallel (prange) version on 2 cores.
    n, size = p.shape
    for k in range(n):
        s = step_size[k]
        c = inv_sqrt_bc2[k]
        for j in range(size):
            keep = np.float32(mask[k, j])
            gj = g[k, j] * keep
            mj = beta1 * m[k, j] + one_minus_beta1 * gj
            vj = beta2 * v[k, j] + one_minus_beta2 * gj * gj
            m[k, j] = mj
            v[k, j] = vj
            p[k, j] = (p[k, j] - s * mj / (np.sqrt(vj) * c + eps)) * keep


def _bias_terms(steps: torch.Tensor, lr: torch.Tensor, beta1: float, beta2: float) -> tuple[torch.Tensor, torch.Tensor]:
    bc1 = 1.0 - beta1**steps
    bc2 = 1.0 - beta2**steps
    return (lr.to(torch.float64) / bc1), 1.0 / torch.sqrt(bc2)


def adam_step(
    params: torch.Tensor,
    grads: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    mask: torch.Tensor,
    steps: torch.Tensor,
    lr: torch.Tensor,
    beta1: float,
    beta2: float,
) -> None:
    """One in-place Adam step on (N, P) tensors; ``steps`` (N,) is incremented; ``lr`` is (N,)."""
    steps += 1
    step_size, inv_sqrt_bc2 = _bias_terms(steps, lr, beta1, beta2)
    if params.device.type == "cpu":
        _adam_kernel(
            params.numpy(), grads.numpy(), exp_avg.numpy(), exp_avg_sq.numpy(), mask.numpy(),
            step_size.to(torch.float32).numpy(), inv_sqrt_bc2.to(torch.float32).numpy(),
            np.float32(beta1), np.float32(beta2), np.float32(1.0 - beta1), np.float32(1.0 - beta2), np.float32(EPS),
        )
        return
    adam_step_reference(params, grads, exp_avg, exp_avg_sq, mask, step_size, inv_sqrt_bc2, beta1, beta2)


def adam_step_reference(params, grads, exp_avg, exp_avg_sq, mask, step_size, inv_sqrt_bc2, beta1, beta2) -> None:
    """The same update as a chain of torch ops: any device, and the kernel's test oracle."""
    g = grads * mask
    exp_avg.mul_(beta1).add_(g, alpha=1.0 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1.0 - beta2)
    denom = exp_avg_sq.sqrt().mul_(inv_sqrt_bc2.to(params.dtype)[:, None]).add_(EPS)
    params.sub_(exp_avg / denom * step_size.to(params.dtype)[:, None])
    params.mul_(mask)
