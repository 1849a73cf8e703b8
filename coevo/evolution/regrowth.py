"""Regrowth as a mutation: a prune that also moves connections (RigL, Evci et al. 2020; SET,
Mocanu et al. 2018).

With ``prune.grow_fraction`` g > 0 a mutation that would prune a fraction a of a pair's alive
entries asks its operator for a' = a + g (1 - a) instead, then revives, in each layer, the share
g (1 - a) / a' of what the operator cut there, among the entries that were already dead before
this mutation (the ones just cut never come straight back). The pair ends with the kept count
it would have had, but with a changed topology; a pair already at its target swaps g of its
alive entries (a = 0). Which dead entries revive: the largest |dL/dw| at zero on ``prune.cases``
training rows ("gradient", RigL's rule) or uniformly drawn ("random", SET's). A revived entry
starts at 0 with zero Adam moments, as in RigL, so it must earn its magnitude by training.
Masks only ever go down inside an operator; this is the one place coevo itself revives them.
"""

from __future__ import annotations

import numpy as np
import torch

from coevo.population import Stack
from coevo.operators.base import LayerGradients
from coevo.operators.protection import live_positions


def operator_amount(amount: float, grow_fraction: float) -> float:
    """What the operator is asked to prune so that, after the regrowth, ``amount`` is pruned."""
    return amount + grow_fraction * (1.0 - amount)


def regrow_share(amount: float, grow_fraction: float) -> float:
    """The share of the operator's cut, per layer, that grows back elsewhere."""
    asked = operator_amount(amount, grow_fraction)
    return grow_fraction * (1.0 - amount) / asked if asked > 0 else 0.0


def grow(stack: Stack, i: int, before: np.ndarray, share: float, rng: np.random.Generator,
         gradients: list[LayerGradients] | None, role: str = "network", partner: np.ndarray | None = None) -> int:
    """Revive, in each layer of network ``i`` of ``stack`` (a ``role`` network whose partner
    offers ``partner``, :func:`coevo.operators.protection.partner_reach`), ``share`` of the entries
    the mutation cut (stochastically rounded, so the expectation is exact) among those dead in
    ``before`` (the mask row before the mutation) that would lie on a live path of the pair
    (:func:`coevo.operators.protection.live_positions`): the largest |gradient| first
    (``gradients`` given) or uniformly drawn (None). Their weights and Adam moments are set to 0.
    Returns how many revived."""
    now = stack.mask[i].cpu().numpy()
    positions = np.arange(now.size)
    usable = live_positions(role, stack.layout.split(now), partner, stack.layout.layers)
    revive: list[np.ndarray] = []
    for k, ((pw, pb), (bw, bb), (nw, nb), (uw, ub)) in enumerate(zip(
            stack.layout.split(positions), stack.layout.split(before), stack.layout.split(now), usable)):
        cut = int((bw & ~nw).sum() + (bb & ~nb).sum())
        count = int(np.floor(cut * share + rng.random()))
        dead = np.concatenate([(~bw & uw).ravel(), ~bb & ub])
        count = min(count, int(dead.sum()))
        if count == 0:
            continue
        draw = rng.random(dead.size)
        if gradients is None:
            score = draw
        else:
            g = gradients[k]
            score = np.abs(np.concatenate([np.asarray(g.weight).ravel(), np.asarray(g.bias)]))
        order = np.lexsort((draw, np.where(dead, score, -np.inf)))[::-1]  # by score, ties drawn
        revive.append(np.concatenate([pw.ravel(), pb])[order[:count]])
    if not revive:
        return 0
    chosen = torch.as_tensor(np.concatenate(revive), device=stack.mask.device)
    stack.mask[i, chosen] = True
    for field in (stack.params, stack.exp_avg, stack.exp_avg_sq):
        field[i, chosen] = 0.0
    if stack.tracks_flips:
        stack.flips[i, chosen] = 0.0
    return int(chosen.numel())
