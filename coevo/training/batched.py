"""Batched forward, backward and training of many autoencoders at once, in torch ops.

This is the path for devices other than the CPU (``run.device = "cuda"``), where launching one
batched op for all networks beats working network by network; on the CPU the Numba kernels of
:mod:`coevo.training.cpu_kernels` do the same work and are tested against this module.

Weights of N networks are (N, out, in) views of a stack's flat rows; one ``torch.matmul`` serves
every network (and every encoder x decoder pair) at once. The backward pass is written out by
hand: the networks are plain MLPs, and skipping autograd's graph bookkeeping matters when a
generation is 200 tiny steps. ``tests/test_batched.py`` checks it against autograd.
"""

from __future__ import annotations

from typing import Literal, Sequence

import numpy as np
import torch

from coevo.population import Stack
from coevo.genome import Layout
from coevo.training.adam import StackedAdam
from coevo.training.trainer_terms import TrainerTerms

Loss = Literal["l1", "bce", "mse"]


def _activate(x: torch.Tensor, activation: str) -> torch.Tensor:
    return x.clamp_min_(0.0) if activation == "relu" else x.sigmoid_()


def forward(layout: Layout, params: torch.Tensor, x: torch.Tensor) -> list[torch.Tensor]:
    """Activations of every layer (input first). ``params`` is (..., P); ``x`` is (..., B, in)
    and broadcasts against the parameters' leading dimensions."""
    return _forward(layout, layout.split(params), x)


def _forward(layout: Layout, views: list[tuple[torch.Tensor, torch.Tensor]], x: torch.Tensor) -> list[torch.Tensor]:
    acts = [x]
    for spec, (w, b) in zip(layout.layers, views):
        h = torch.matmul(acts[-1], w.transpose(-1, -2))
        h += b.unsqueeze(-2)
        acts.append(_activate(h, spec.activation))
    return acts


def pair_forward(enc: Layout, dec: Layout, enc_params: torch.Tensor, dec_params: torch.Tensor,
                 x: torch.Tensor) -> torch.Tensor:
    """Reconstruction by encoder(s) then decoder(s); leading dimensions broadcast."""
    z = forward(enc, enc_params, x)[-1]
    return forward(dec, dec_params, z)[-1]


def reconstruction_loss(output: torch.Tensor, target: torch.Tensor, loss: Loss) -> torch.Tensor:
    """Mean loss over the last two dimensions (rows x features)."""
    if loss == "l1":
        per = (output - target).abs_()
    elif loss == "mse":
        per = (output - target).square_()
    else:
        o = output.clamp(1e-7, 1 - 1e-7)
        per = -(target * o.log() + (1 - target) * (1 - o).log())
    return per.mean(dim=(-2, -1))


def _output_grad(output: torch.Tensor, target: torch.Tensor, loss: Loss, last_activation: str,
                 bce_weight: float = 0.0) -> torch.Tensor:
    """d(mean loss + bce_weight x mean BCE of each network)/d(pre-activation of the last layer),
    in few tensor ops."""
    scale = 1.0 / (output.shape[-1] * output.shape[-2])
    if loss == "bce" and last_activation == "sigmoid":
        # the sigmoid's derivative cancels BCE's denominator
        return torch.sub(output, target).mul_(torch.tensor(1.0 + bce_weight, dtype=torch.float32)).mul_(scale)
    if loss == "l1":
        grad = torch.sub(output, target).sign_()
    elif loss == "mse":
        grad = torch.sub(output, target).mul_(2.0)
    else:
        o = output.clamp(1e-7, 1 - 1e-7)
        grad = torch.sub(output, target).div_(o * (1 - o))
    if bce_weight:
        o = output.clamp(1e-7, 1 - 1e-7)
        grad.add_(torch.sub(output, target).div_(o * (1 - o)).mul_(torch.tensor(bce_weight, dtype=torch.float32)))
    if last_activation == "relu":
        return torch.ops.aten.threshold_backward(grad, output, 0.0).mul_(scale)
    return grad.mul_(torch.addcmul(output, output, output, value=-1.0).mul_(scale))  # sigmoid' = o - o^2


def backward(layout: Layout, param_views: list, grad_views: list, acts: Sequence[torch.Tensor],
             target: torch.Tensor, loss: Loss, bce_weight: float = 0.0) -> None:
    """Write d(loss of each network)/d(params) into the contiguous (N, out, in) / (N, out)
    ``grad_views``. 3-D activations (N, B, features) only."""
    delta = _output_grad(acts[-1], target, loss, layout.layers[-1].activation, bce_weight)
    for i in range(len(layout.layers) - 1, -1, -1):
        gw, gb = grad_views[i]
        torch.bmm(delta.transpose(1, 2), acts[i], out=gw)
        torch.sum(delta, dim=1, out=gb)
        if i > 0:
            delta = torch.bmm(delta, param_views[i][0])
            if layout.layers[i - 1].activation == "relu":
                delta = torch.ops.aten.threshold_backward(delta, acts[i], 0.0)
            else:
                delta.mul_(torch.addcmul(acts[i], acts[i], acts[i], value=-1.0))


def _train_forward(layout: Layout, views: list, x: torch.Tensor) -> list[torch.Tensor]:
    """3-D forward for training: one fused matmul-plus-bias and one in-place activation per layer."""
    acts = [x]
    for spec, (w, b) in zip(layout.layers, views):
        h = torch.baddbmm(b.unsqueeze(1), acts[-1], w.transpose(1, 2))
        acts.append(h.clamp_min_(0.0) if spec.activation == "relu" else h.sigmoid_())
    return acts


def train_epoch(
    enc: Stack,
    dec: Stack,
    data: torch.Tensor,
    orders: torch.Tensor,
    lr: np.ndarray,
    batch_size: int,
    loss: Loss,
    beta1: float,
    beta2: float,
    fresh_optimizer_each_batch: bool = False,
    bce_weight: float = 0.0,
    terms: TrainerTerms | None = None,
) -> np.ndarray:
    """One pass over ``data`` for the N autoencoders (``enc[i]``, ``dec[i]``), in place; all N
    take each mini-batch step together. ``orders`` (N, n) holds each pair's own row order; ``lr``
    (N,) its learning rate. Each stack has its own Adam: the encoder and decoder of a pair may
    come from different cells and carry different step counts. Returns each pair's training
    loss over the epoch: the mean over rows of each mini-batch's loss before its step, as
    training loops report it. Any device; the CPU runs :func:`coevo.training.cpu_kernels.train_pairs`."""
    n = len(enc)
    layout = enc.layout + dec.layout
    grads = [torch.zeros(n * s.layout.size, dtype=s.params.dtype, device=s.params.device) for s in (enc, dec)]
    param_views = enc.layout.split(enc.params) + dec.layout.split(dec.params)
    grad_views = enc.layout.split_segment_major(grads[0], n) + dec.layout.split_segment_major(grads[1], n)
    terms = terms or TrainerTerms()
    penalty = terms.penalties(enc.layout, dec.layout)
    generators = None
    if terms.gradient_noise > 0:
        generators = [torch.Generator(device=enc.params.device).manual_seed(int(seed)) for seed in terms.seeds(n)]
    n_enc = len(enc.layout.layers)
    optimizers = [StackedAdam(s, lr, beta1, beta2, part, terms.gradient_noise, generators)
                  for s, part in ((enc, penalty[:n_enc]), (dec, penalty[n_enc:]))]
    loss_sum = torch.zeros(n, dtype=torch.float64, device=enc.params.device)
    for rows in orders.split(batch_size, dim=1):
        x = torch.index_select(data, 0, rows.reshape(-1)).view(n, -1, data.shape[1])  # (N, B, D)
        acts = _train_forward(layout, param_views, x)
        loss_sum += reconstruction_loss(acts[-1], x, loss).double() * rows.shape[1]
        backward(layout, param_views, grad_views, acts, x, loss, bce_weight)
        for optimizer, grad in zip(optimizers, grads):
            if fresh_optimizer_each_batch:
                optimizer.reset()
            optimizer.step(grad)
    return (loss_sum / orders.shape[1]).cpu().numpy()


def train_pairs(enc: Stack, dec: Stack, enc_parents: np.ndarray, dec_parents: np.ndarray, data: torch.Tensor,
                orders: np.ndarray, lr: np.ndarray, batch_size: int, loss: Loss, beta1: float, beta2: float,
                fresh_optimizer_each_batch: bool = False,
                bce_weight: float = 0.0, terms: TrainerTerms | None = None,
                epoch=None) -> tuple[Stack, Stack, np.ndarray]:
    """Copies of the pairs (encoder ``enc_parents[i]``, decoder ``dec_parents[i]``) trained for
    one epoch (see :func:`train_epoch`; ``epoch``: another with its signature, the functional
    path's): new encoder and decoder stacks and each pair's training loss. The same contract as
    :func:`coevo.training.cpu_kernels.train_pairs`."""
    device = enc.params.device
    new_enc = enc[torch.as_tensor(enc_parents, device=device)]
    new_dec = dec[torch.as_tensor(dec_parents, device=device)]
    train_loss = (epoch or train_epoch)(new_enc, new_dec, data, torch.as_tensor(orders, device=device), lr, batch_size,
                                        loss, beta1, beta2, fresh_optimizer_each_batch, bce_weight, terms)
    return new_enc, new_dec, train_loss


def centre_losses(enc: Stack, dec: Stack, data: torch.Tensor, loss: Loss,
                  max_elements: int = 1 << 22) -> torch.Tensor:
    """Loss of each cell's own pair (encoder k with decoder k) on all rows of ``data``: (N,).

    Rows go through in chunks, every cell at once, so the (cells x rows x features) output stays
    under ``max_elements`` and in cache; the first layer of all encoders is one matrix product.
    """
    n, width = len(enc), data.shape[1]
    widest = max(width, *(s.fan_out for s in enc.layout.layers + dec.layout.layers))
    rows_per_chunk = max(8, max_elements // (n * widest))
    first = enc.layout.layers[0]
    enc_views, dec_views = enc.layout.split(enc.params), dec.layout.split(dec.params)
    w0 = enc_views[0][0].reshape(n * first.fan_out, first.fan_in)
    total = torch.zeros(n, dtype=torch.float64, device=enc.params.device)
    with torch.no_grad():
        for x in data.split(rows_per_chunk):
            h = (x @ w0.T).view(x.shape[0], n, first.fan_out).transpose(0, 1)  # (N, rows, out)
            h = _activate(h + enc_views[0][1].unsqueeze(1), first.activation)
            z = _forward(Layout(enc.layout.layers[1:]), enc_views[1:], h)[-1]
            recon = _forward(dec.layout, dec_views, z)[-1]
            total += _loss_sum(recon, x, loss)
    return total / (data.shape[0] * width)


def _loss_sum(output: torch.Tensor, target: torch.Tensor, loss: Loss) -> torch.Tensor:
    """Sum of the per-element loss over the last two dimensions, in place on ``output``."""
    if loss == "l1":
        return output.sub_(target).abs_().sum(dim=(-2, -1)).double()
    if loss == "mse":
        return output.sub_(target).square_().sum(dim=(-2, -1)).double()
    return reconstruction_loss(output, target, loss).double() * (output.shape[-1] * output.shape[-2])


def pair_losses(enc: Stack, dec: Stack, neighbours: torch.Tensor, batches: torch.Tensor, loss: Loss) -> torch.Tensor:
    """The loss matrix of every cell: L[k, i, j] = loss of encoder neighbours[k, i] with decoder
    neighbours[k, j] on cell k's mini-batch ``batches[k]`` (N, B, D). Returns (N, s, s).

    Inputs are broadcast against the weights, never the weights against the inputs: each
    decoder sees the latent codes of all s encoders stacked as one (s * B)-row batch.
    """
    n, s = neighbours.shape
    rows = batches.shape[1]
    with torch.no_grad():
        e = enc.params[neighbours]  # (N, s, Pe)
        d = dec.params[neighbours]  # (N, s, Pd)
        z = forward(enc.layout, e, batches.unsqueeze(1))[-1]  # (N, s_i, B, latent)
        z = z.reshape(n, 1, s * rows, z.shape[-1])  # every encoder's codes, one batch per cell
        recon = forward(dec.layout, d, z)[-1]  # (N, s_j, s_i * B, D)
        target = batches.repeat(1, s, 1).unsqueeze(1)  # (N, 1, s_i * B, D)
        per_row = reconstruction_loss(recon.unsqueeze(-2), target.unsqueeze(-2), loss)  # (N, s_j, s_i * B)
        return per_row.view(n, s, s, rows).mean(dim=-1).transpose(1, 2).contiguous()


def as_tensor(array: np.ndarray, device: str) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(array), device=device)
