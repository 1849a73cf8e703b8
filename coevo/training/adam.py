"""Adam over stacked genomes, one learning rate per network, masks honoured: the torch path.

The update is torch's Adam (no weight decay, no amsgrad) applied row by row, with each row's
own step count and learning rate. Gradients are masked first, so moments of pruned entries
stay exactly zero, and the mask is re-applied to the parameters after the step: a pruned
entry stays exactly zero for the rest of the run.

Training on the CPU does not come here: :mod:`coevo.training.cpu_kernels` fuses the same update into its
per-network epoch. This path serves other devices (``run.device = "cuda"``) and is the CPU
kernel's test oracle.
"""

from __future__ import annotations

import numpy as np
import torch

EPS = 1e-8


class StackedAdam:
    """Adam on every row of a :class:`~coevo.population.Stack`, each row with its own learning rate.

    The moments and step counts live in the stack (they travel with the genomes); this object
    holds only the learning rates and betas of one training pass.
    """

    def __init__(self, stack, lr: np.ndarray, beta1: float, beta2: float, penalty: np.ndarray | None = None,
                 noise: float = 0.0, generators: list[torch.Generator] | None = None) -> None:
        self.stack = stack
        self.lr = np.asarray(lr, dtype=np.float64)
        self.beta1, self.beta2 = beta1, beta2
        self.penalty = penalty  # per layer: Early-Bird's scale penalty (cpu_kernels.add_scale_penalty)
        self.noise = noise  # FlipOut's gradient noise, drawn from one generator per row
        self.generators = generators

    def reset(self) -> None:
        """Forget the moments (the reference's fresh optimizer per mini-batch)."""
        self.stack.exp_avg.zero_()
        self.stack.exp_avg_sq.zero_()
        self.stack.steps.zero_()

    def step(self, grads: torch.Tensor) -> None:
        """One in-place step from the gradient ``grads``, flat in segment-major order
        (see :meth:`~coevo.genome.Layout.split_segment_major`)."""
        self.step_rows(self.stack.layout.segment_major_to_rows(grads, len(self.stack)))

    def step_rows(self, rows: torch.Tensor) -> None:
        """One in-place step from the gradient ``rows`` (N, P), in the stack's own row order
        (written into: the trainer terms add to it)."""
        stack = self.stack
        stack.steps += 1
        step_size, inv_sqrt_bc2 = bias_terms(stack.steps.cpu().numpy(), self.lr, self.beta1, self.beta2)
        dev = stack.params.device
        if self.noise > 0:
            add_gradient_noise(stack, rows, self.noise, self.generators)
        if self.penalty is not None and np.any(self.penalty):
            add_scale_penalty(stack, rows, self.penalty)
        before = stack.params.clone() if stack.tracks_flips else None
        adam_step_reference(stack.params, rows, stack.exp_avg,
                            stack.exp_avg_sq, stack.mask, torch.as_tensor(step_size, device=dev),
                            torch.as_tensor(inv_sqrt_bc2, device=dev), self.beta1, self.beta2)
        if before is not None:  # FlipOut's counter
            stack.flips.add_((before * stack.params < 0).to(stack.flips.dtype))


def add_gradient_noise(stack, rows: torch.Tensor, scale: float, generators: list[torch.Generator]) -> None:
    """As ``coevo.training.cpu_kernels.add_gradient_noise``, per parameter tensor of every row."""
    masked = rows * stack.mask
    for k, generator in enumerate(generators):
        for g, gm, m in _tensors(stack.layout, rows[k], masked[k], stack.mask[k]):
            sd = scale * float(gm.double().norm()) / np.sqrt(g.numel())
            if sd > 0:
                noise = torch.randn(g.shape, generator=generator, device=g.device, dtype=torch.float64)
                g.add_((noise * sd).to(g.dtype) * m)


def _tensors(layout, row: torch.Tensor, masked: torch.Tensor, mask: torch.Tensor):
    for (w, b), (wm, bm), (mw, mb) in zip(layout.split(row), layout.split(masked), layout.split(mask)):
        yield w, wm, mw
        yield b, bm, mb


def add_scale_penalty(stack, rows: torch.Tensor, penalty: np.ndarray) -> None:
    """As ``coevo.training.cpu_kernels.add_scale_penalty``: grad += s * w / ||w|| for every neuron's alive
    incoming weights and bias."""
    params = stack.params * stack.mask
    for s, (w, b), (gw, gb) in zip(penalty, stack.layout.split(params), stack.layout.split(rows)):
        if s == 0:
            continue
        norm = (w.double().square().sum(dim=-1) + b.double().square()).sqrt()  # (N, out)
        c = torch.where(norm > 0, s / norm.clamp_min(1e-300), torch.zeros_like(norm)).to(w.dtype)
        gw.add_(w * c.unsqueeze(-1))
        gb.add_(b * c)


def bias_terms(steps: np.ndarray, lr: np.ndarray, beta1: float, beta2: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-row step size lr / (1 - beta1^t) and 1 / sqrt(1 - beta2^t), in float64."""
    return lr / (1.0 - beta1**steps), 1.0 / np.sqrt(1.0 - beta2**steps)


def adam_step_reference(params, grads, exp_avg, exp_avg_sq, mask, step_size, inv_sqrt_bc2, beta1, beta2) -> None:
    """The masked update as a chain of torch ops, on any device."""
    g = grads * mask
    exp_avg.mul_(beta1).add_(g, alpha=1.0 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1.0 - beta2)
    denom = torch.sqrt(exp_avg_sq, out=g).mul_(inv_sqrt_bc2.to(params.dtype)[:, None]).add_(EPS)  # g is spent
    params.sub_(denom.reciprocal_().mul_(exp_avg).mul_(step_size.to(params.dtype)[:, None]))
    params.mul_(mask)
