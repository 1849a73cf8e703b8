"""A plain per-module implementation of one coevolution generation: the speed baseline.

One ``nn.Module`` per network, Python loops over cells and over the s x s pairs, autograd and
``torch.optim.Adam`` per pair, as a straightforward implementation of the paper's generation would do.
It draws from the same derived random streams as coevo, so from the same start it computes
the same generation: ``tests/test_equivalence.py`` uses it as the oracle for the batching, and
``benchmarks/speed.py`` as the baseline the speed-up is measured against.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from coevo.config import Config
from coevo.evolution.loop import select_parents, solution_concept
from coevo.population import Stack
from coevo.evolution.variation import EVAL_BATCH, PRUNE, TRAIN_ORDER, derive_rng
from coevo.genome import Decoder, Encoder, Layer, Layout, unit_flags
from coevo.operators.base import PruneContext


@dataclass
class PlainNet:
    """One network as a live module, with its masks and Adam state per parameter."""

    module: nn.Sequential
    masks: list[torch.Tensor]  # one bool tensor per parameter, in module.parameters() order
    exp_avg: list[torch.Tensor]
    exp_avg_sq: list[torch.Tensor]
    step: float


def _module(layout: Layout) -> nn.Sequential:
    mods: list[nn.Module] = []
    for spec in layout.layers:
        mods += [nn.Linear(spec.fan_in, spec.fan_out), nn.ReLU() if spec.activation == "relu" else nn.Sigmoid()]
    return nn.Sequential(*mods)


def from_stack(stack: Stack) -> list[PlainNet]:
    nets = []
    for k in range(len(stack)):
        module = _module(stack.layout)
        split = lambda t: [x for pair in stack.layout.split(t[k]) for x in pair]  # noqa: E731
        with torch.no_grad():
            for p, value in zip(module.parameters(), split(stack.params)):
                p.copy_(value)
        nets.append(PlainNet(module, [m.clone() for m in split(stack.mask)], [m.clone() for m in split(stack.exp_avg)],
                             [v.clone() for v in split(stack.exp_avg_sq)], float(stack.steps[k])))
    return nets


def to_rows(nets: list[PlainNet]) -> tuple[torch.Tensor, torch.Tensor]:
    """(params, masks) as (N, P) rows, comparable with a coevo Stack."""
    params = torch.stack([torch.cat([p.detach().reshape(-1) for p in n.module.parameters()]) for n in nets])
    masks = torch.stack([torch.cat([m.reshape(-1) for m in n.masks]) for n in nets])
    return params, masks


def _loss(output: torch.Tensor, target: torch.Tensor, loss: str) -> torch.Tensor:
    if loss == "l1":
        return nn.functional.l1_loss(output, target)
    if loss == "mse":
        return nn.functional.mse_loss(output, target)
    return nn.functional.binary_cross_entropy(output.clamp(1e-7, 1 - 1e-7), target)


def _no_activations() -> dict:
    raise RuntimeError("the plain baseline supports operators that need no activations")


def plain_generation(encoders: list[PlainNet], decoders: list[PlainNet], lr: np.ndarray, neighbours: np.ndarray,
                     train: torch.Tensor, config: Config, generation: int, prune_probability: float,
                     toolbox) -> tuple[list[PlainNet], list[PlainNet]]:
    """One synchronous generation, cell by cell and pair by pair."""
    seed, n_rows = config.run.seed, train.shape[0]
    batch = min(config.train.batch_size, n_rows)
    # gather + evaluate: every pair of every sub-population, one module call at a time
    losses = np.empty((len(encoders), neighbours.shape[1], neighbours.shape[1]))
    with torch.no_grad():
        for k, row in enumerate(neighbours):
            x = train[derive_rng(seed, generation, k, EVAL_BATCH).choice(n_rows, size=batch, replace=False)]
            for i, e in enumerate(row):
                for j, d in enumerate(row):
                    losses[k, i, j] = _loss(decoders[d].module(encoders[e].module(x)), x, config.model.loss).item()
    # fitness + select (the same DEAP tournaments as coevo)
    enc_fit, dec_fit = solution_concept(losses, config.selection.solution_concept)
    enc_parents, dec_parents = select_parents(neighbours, enc_fit, dec_fit, toolbox, config.selection.pairing)
    new_enc, new_dec = [], []
    for k, (enc_parent, dec_parent) in enumerate(zip(enc_parents, dec_parents)):
        # train a copy of the selected pair with torch's Adam, masks applied by hand
        enc, dec = copy.deepcopy(encoders[enc_parent]), copy.deepcopy(decoders[dec_parent])
        plain_train_pair(enc, dec, float(lr[k]), derive_rng(seed, generation, k, TRAIN_ORDER).permutation(n_rows),
                         train, config)
        # mutate: with probability p, prune both networks with the configured operator
        rng = derive_rng(seed, generation, k, PRUNE)
        if prune_probability > 0 and config.prune.operator != "none" and rng.random() < prune_probability:
            context = PruneContext(generation, config.prune, _no_activations)
            for net, cls in ((enc, Encoder), (dec, Decoder)):
                ps = [p.detach().numpy() for p in net.module.parameters()]
                ms = [m.numpy() for m in net.masks]
                n_layers = len(ps) // 2
                layers = [Layer(ps[2 * i], ps[2 * i + 1], ms[2 * i], ms[2 * i + 1],
                                **unit_flags(cls.role, i, n_layers, config.prune.keep_inputs))
                          for i in range(n_layers)]
                toolbox.mutate(cls(layers, cell=k), rng=rng, context=context)
                with torch.no_grad():
                    for p, m, a, b in zip(net.module.parameters(), net.masks, net.exp_avg, net.exp_avg_sq):
                        p.mul_(m)
                        a.mul_(m)
                        b.mul_(m)
        # replace (synchronous: the new centres only become visible next generation)
        new_enc.append(enc)
        new_dec.append(dec)
    return new_enc, new_dec


def plain_train_pair(enc: PlainNet, dec: PlainNet, lr: float, order: np.ndarray, train: torch.Tensor,
                     config: Config) -> None:
    """One pass over the data for one pair with torch's Adam, masks applied by hand (in place).
    Torch keeps a step count per parameter: each network's parameters start from its own."""
    enc_params, dec_params = list(enc.module.parameters()), list(dec.module.parameters())
    params = enc_params + dec_params
    masks = enc.masks + dec.masks
    steps = [enc.step] * len(enc_params) + [dec.step] * len(dec_params)
    opt = torch.optim.Adam(params, lr=lr, betas=(config.train.beta1, config.train.beta2))
    for p, m, v, step in zip(params, enc.exp_avg + dec.exp_avg, enc.exp_avg_sq + dec.exp_avg_sq, steps):
        opt.state[p] = {"step": torch.tensor(step), "exp_avg": m, "exp_avg_sq": v}
    for start in range(0, len(order), config.train.batch_size):
        x = train[order[start : start + config.train.batch_size]]
        opt.zero_grad()
        out = dec.module(enc.module(x))
        loss = _loss(out, x, config.model.loss)
        if config.train.bce_weight:
            loss = loss + config.train.bce_weight * nn.functional.binary_cross_entropy(out, x)
        loss.backward()
        for p, mask in zip(params, masks):
            p.grad.mul_(mask)
        opt.step()
        with torch.no_grad():
            for p, mask in zip(params, masks):
                p.mul_(mask)
    enc.step = float(opt.state[enc_params[0]]["step"])
    dec.step = float(opt.state[dec_params[0]]["step"])
