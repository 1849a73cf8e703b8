"""One functional model path for any encoder/decoder pair: ``torch.func`` over stacked genomes.

Each network's parameters are one flat row of its :class:`~coevo.population.Stack`
(:func:`coevo.model.graph.parameters_of` views a row as the module's named parameters); the
pair's templates run them with ``functional_call``, ``vmap`` batches every cell (and, for the
loss matrices, every encoder x decoder pair of a cell) into one call, and ``grad`` is autograd
through that same forward. The Adam step, masks and trainer terms are the torch path's
(:class:`~coevo.training.adam.StackedAdam`), so a pruned entry stays exactly zero.

Rows are flat (N, D) everywhere in coevo; here a batch is viewed as (B, *sample shape) on the
way in and flattened on the way out, so losses and batching are those of the MLP paths. The
same contract as :mod:`coevo.training.cpu_kernels` and :mod:`coevo.training.batched`
(``train_pairs``, ``pair_losses``, ``centre_losses``); ``tests/test_functional.py`` holds an MLP
on this path to the Numba kernels.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import numpy as np
import torch
from torch.func import functional_call, vmap

from coevo.population import Stack
from coevo.genome import Layout
from coevo.model.graph import parameters_of
from coevo.training.adam import StackedAdam
from coevo.training.trainer_terms import TrainerTerms


def loss_value(output: torch.Tensor, target: torch.Tensor, loss: str, bce_weight: float = 0.0) -> torch.Tensor:
    """Mean reconstruction loss over the last two dimensions (rows x features), out of place
    (autograd needs its inputs); ``bce_weight`` adds that multiple of the mean BCE."""
    if loss == "l1":
        value = (output - target).abs().mean(dim=(-2, -1))
    elif loss == "mse":
        value = (output - target).square().mean(dim=(-2, -1))
    else:
        value = _bce(output, target)
    if bce_weight:
        value = value + bce_weight * _bce(output, target)
    return value


def _bce(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    o = output.clamp(1e-7, 1 - 1e-7)
    return -(target * o.log() + (1 - target) * (1 - o).log()).mean(dim=(-2, -1))


def _built(*layouts: Layout) -> None:
    """Build the templates before any vmap (a factory draws its initial values at random)."""
    for layout in layouts:
        layout.model.template()


def shape_of(layout: Layout) -> tuple[int, ...]:
    return tuple(layout.model.ref.input_shape)


def encoder_output(layout: Layout, row: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """One encoder (a flat row) on flat rows ``x`` (B, D), as the module returns it (a VAE's: the
    means, then the log-variances)."""
    return functional_call(layout.model.template(), parameters_of(layout, row), (x.reshape(x.shape[0], *shape_of(layout)),),
                           tie_weights=False)  # no parameter is shared: coevo.model.graph refuses that


def encode(layout: Layout, row: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """One encoder's latent code on flat rows ``x``: what its decoder reads (a VAE's means)."""
    out = encoder_output(layout, row, x)
    return out[:, :layout.model.ref.latent] if layout.model.ref.variational else out


def kl_divergence(stats: torch.Tensor, latent: int) -> torch.Tensor:
    """A VAE's KL(q(z|x) || N(0, I)) per row, summed over the latent units, from the encoder's
    (B, 2 x latent) means and log-variances."""
    mu, logvar = stats[:, :latent], stats[:, latent:]
    return -0.5 * (1 + logvar - mu.square() - logvar.exp()).sum(dim=-1)


def decode(layout: Layout, row: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """One decoder on latent codes ``z``: flat reconstructions (B, D)."""
    out = functional_call(layout.model.template(), parameters_of(layout, row), (z,), tie_weights=False)
    return out.reshape(out.shape[0], -1)


def reconstruct(enc: Layout, dec: Layout, enc_row: torch.Tensor, dec_row: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return decode(dec, dec_row, encode(enc, enc_row, x))


def train_epoch(enc: Stack, dec: Stack, data: torch.Tensor, orders: torch.Tensor, lr: np.ndarray, batch_size: int,
                loss: str, beta1: float, beta2: float, fresh_optimizer_each_batch: bool = False,
                bce_weight: float = 0.0, terms: TrainerTerms | None = None) -> np.ndarray:
    """One pass over ``data`` for the N pairs (``enc[i]``, ``dec[i]``), in place, all N taking each
    mini-batch step together (see :func:`coevo.training.batched.train_epoch`, the same contract)."""
    n = len(enc)
    el, dl = enc.layout, dec.layout
    _built(el, dl)

    # a vmapped forward and one autograd backward of the summed losses: the pairs are independent,
    # so each row's gradient is its own pair's (faster on the CPU than vmap(grad(...)), same numbers)
    ref = el.model.ref
    kl_weight = terms.kl_weight if terms is not None else 1.0

    def objective(e: torch.Tensor, d: torch.Tensor, x: torch.Tensor,
                  eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if ref.variational:  # a sample z = mean + sigma * noise, and the KL term
            stats = encoder_output(el, e, x)
            mu, logvar = stats[:, :ref.latent], stats[:, ref.latent:]
            out = decode(dl, d, mu + (0.5 * logvar).exp() * eps)
            extra = kl_weight * kl_divergence(stats, ref.latent).mean() / x.shape[-1]
        else:
            out, extra = reconstruct(el, dl, e, d, x), 0.0
        value = loss_value(out, x, loss)  # what the logbook reports: model.loss alone
        return (value + bce_weight * _bce(out, x) if bce_weight else value) + extra, value

    losses = vmap(objective)
    terms = terms or TrainerTerms()
    penalty = terms.penalties(el, dl)
    generators = None
    if terms.gradient_noise > 0:
        generators = [torch.Generator(device=enc.params.device).manual_seed(int(s)) for s in terms.seeds(n)]
    n_enc = len(el.layers)
    optimizers = [StackedAdam(s, lr, beta1, beta2, part, terms.gradient_noise, generators)
                  for s, part in ((enc, penalty[:n_enc]), (dec, penalty[n_enc:]))]
    loss_sum = torch.zeros(n, dtype=torch.float64, device=enc.params.device)
    width = data.shape[1]
    noise = None
    if ref.variational:  # one generator per pair, seeded by the run (reproducible, resumable)
        noise = [torch.Generator(device=enc.params.device).manual_seed(int(s)) for s in terms.latent_seeds_for(n)]
    for rows in orders.split(batch_size, dim=1):
        x = torch.index_select(data, 0, rows.reshape(-1)).view(n, -1, width)
        e, d = enc.params.detach().requires_grad_(True), dec.params.detach().requires_grad_(True)
        eps = (torch.stack([torch.randn(rows.shape[1], ref.latent, generator=g, device=x.device) for g in noise])
               if noise is not None else x.new_zeros(n, rows.shape[1], 0))
        trained, value = losses(e, d, x, eps)
        g_enc, g_dec = torch.autograd.grad(trained.sum(), (e, d))
        loss_sum += value.detach().double() * rows.shape[1]
        for optimizer, g in ((optimizers[0], g_enc), (optimizers[1], g_dec)):
            if fresh_optimizer_each_batch:
                optimizer.reset()
            optimizer.step_rows(g.contiguous())
    return (loss_sum / orders.shape[1]).cpu().numpy()


def train_pairs(enc: Stack, dec: Stack, enc_parents: np.ndarray, dec_parents: np.ndarray, data: torch.Tensor,
                orders: np.ndarray, lr: np.ndarray, batch_size: int, loss: str, beta1: float, beta2: float,
                fresh_optimizer_each_batch: bool = False, bce_weight: float = 0.0,
                terms: TrainerTerms | None = None) -> tuple[Stack, Stack, np.ndarray]:
    """Copies of the pairs (encoder ``enc_parents[i]``, decoder ``dec_parents[i]``) trained for one
    epoch of :func:`train_epoch`: the contract of :func:`coevo.training.cpu_kernels.train_pairs`."""
    from coevo.training import batched

    return batched.train_pairs(enc, dec, enc_parents, dec_parents, data, orders, lr, batch_size, loss, beta1, beta2,
                               fresh_optimizer_each_batch, bce_weight, terms, epoch=train_epoch)


def pair_losses(enc: Stack, dec: Stack, neighbours: torch.Tensor, batches: torch.Tensor, loss: str) -> torch.Tensor:
    """L[k, i, j]: encoder ``neighbours[k, i]`` with decoder ``neighbours[k, j]`` on cell k's
    mini-batch ``batches[k]`` (N, B, D); (N, s, s). Every encoder's code is computed once."""
    el, dl = enc.layout, dec.layout
    _built(el, dl)
    nbr = torch.as_tensor(neighbours, device=enc.params.device)
    with torch.no_grad():
        e, d = enc.params[nbr], dec.params[nbr]  # (N, s, P)
        codes = vmap(vmap(lambda row, x: encode(el, row, x), in_dims=(0, None)))(e, batches)  # (N, s_i, B, ...)

        def cell(d_rows: torch.Tensor, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            def one(d_row: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
                return loss_value(decode(dl, d_row, code), x, loss)
            return vmap(vmap(one, in_dims=(None, 0)), in_dims=(0, None))(d_rows, z)  # (s_j, s_i)

        per = vmap(cell)(d, codes, batches)
    return per.transpose(1, 2).contiguous()


def centre_losses(enc: Stack, dec: Stack, data: torch.Tensor, loss: str, max_elements: int = 1 << 22) -> torch.Tensor:
    """Each cell's own pair's mean loss over all rows of ``data``: (N,), in chunks of rows."""
    n, width = len(enc), data.shape[1]
    el, dl = enc.layout, dec.layout
    _built(el, dl)
    rows_per_chunk = max(8, max_elements // max(1, n * width * 8))
    total = torch.zeros(n, dtype=torch.float64, device=enc.params.device)
    run = vmap(lambda e, d, x: loss_value(reconstruct(el, dl, e, d, x), x, loss), in_dims=(0, 0, None))
    with torch.no_grad():
        for x in data.split(rows_per_chunk):
            total += run(enc.params, dec.params, x).double() * x.shape[0]
    return total / data.shape[0]


def centre_kl(enc: Stack, dec: Stack, data: torch.Tensor) -> torch.Tensor:
    """A VAE's mean KL per row (summed over the latent units) of each cell's encoder on ``data``: (N,)."""
    el = enc.layout
    _built(el, dec.layout)
    with torch.no_grad():
        per = vmap(lambda e, x: kl_divergence(encoder_output(el, e, x), el.model.ref.latent).mean(),
                   in_dims=(0, None))(enc.params, data)
    return per.double()


# ------------------------------------------------------------------ what operators ask for


def unit_activations(value: torch.Tensor, units: int) -> torch.Tensor:
    """A layer's output as (B, units): each unit's value averaged over its positions (a channel's
    feature map), whatever Flatten or Unflatten comes between."""
    return value.reshape(value.shape[0], units, -1).mean(dim=-1)


@contextmanager
def _layer_hooks(layout: Layout, hook: Callable) -> Iterator[None]:
    net = layout.model.template()
    handles = [net.get_submodule(spec.name).register_forward_hook(hook(k)) for k, spec in enumerate(layout.layers)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def pair_activations(enc: Layout, dec: Layout, enc_row: torch.Tensor, dec_row: torch.Tensor,
                     x: torch.Tensor) -> dict[str, list[np.ndarray]]:
    """Per layer of each network, each unit's output on the rows ``x`` (cases x units), after
    whatever follows the layer up to the next one (its activation, pooling): the next layer's
    input, seen per unit of this one; the last layers give the latent code and the output."""
    seen: dict[str, list] = {"encoder": [], "decoder": []}
    with torch.no_grad():
        inputs: list[torch.Tensor] = []

        def before(k: int):
            def hook(module, args, output) -> None:
                inputs.append(args[0])
            return hook

        with _layer_hooks(enc, before), _layer_hooks(dec, before):
            raw = encoder_output(enc, enc_row, x)
            z = raw[:, :enc.model.ref.latent] if enc.model.ref.variational else raw
            y = decode(dec, dec_row, z)
    specs = list(enc.layers) + list(dec.layers)
    values = inputs[1:] + [y]  # layer k's output reaches layer k + 1 as its input
    if enc.model.ref.variational:  # the encoder's last layer: its means and log-variances, as it gives them
        values[len(enc.layers) - 1] = raw
    out = [unit_activations(v, spec.fan_out).cpu().numpy().astype(np.float64) for v, spec in zip(values, specs)]
    n_enc = len(enc.layers)
    return {"encoder": out[:n_enc], "decoder": out[n_enc:]}


def pair_gradients(enc: Layout, dec: Layout, enc_row: torch.Tensor, dec_row: torch.Tensor, enc_mask: torch.Tensor,
                   dec_mask: torch.Tensor, x: torch.Tensor, loss: str) -> dict[str, list]:
    """Per layer of each network: dL/dW (fan_out x fan_in) and dL/db of the masked weights, dL/dc of a
    gate on each unit's output (summed over rows and positions) and L, by autograd through the
    functional forward: the :class:`~coevo.operators.base.LayerGradients` the operators read."""
    from coevo.operators.base import LayerGradients

    e = (enc_row * enc_mask).detach().double().requires_grad_(True)
    d = (dec_row * dec_mask).detach().double().requires_grad_(True)
    gates = {role: [torch.ones(spec.fan_out, dtype=torch.float64, requires_grad=True) for spec in layout.layers]
             for role, layout in (("encoder", enc), ("decoder", dec))}

    def gated(role: str):
        def hook_for(k: int):
            def hook(module, args, output):
                shape = (1, -1) + (1,) * (output.dim() - 2)
                return output * gates[role][k].view(shape)
            return hook
        return hook_for

    with _layer_hooks(enc, gated("encoder")), _layer_hooks(dec, gated("decoder")):
        x64 = x.double()
        value = loss_value(reconstruct(enc, dec, e, d, x64), x64, loss)
    value.backward()
    out = {}
    for role, layout, row in (("encoder", enc, e), ("decoder", dec, d)):
        per = []
        for (gw, gb), gate in zip(layout.split(row.grad), gates[role]):
            per.append(LayerGradients(_frozen(gw.numpy()), _frozen(gb.numpy()), _frozen(gate.grad.numpy()),
                                      float(value.detach())))
        out[role] = per
    return out


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.flags.writeable = False
    return a
