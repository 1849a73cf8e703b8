"""LATENT_FOLD: fold the most redundant latent neuron into the others, while the reconstruction allows.

Silencing a latent neuron (``latent_ablation``) costs the pair more than its whole loss for
every neuron that fires, however redundant the code is: the decoder was trained on that neuron's
values. What matters is whether the other latent neurons carry its information, and a linear fit
answers that at once, because the decoder's first layer is linear in the code: replacing
neuron j's value z_j by its least-squares prediction from the other alive latent neurons,
z_j ~ b0 + sum_k b_k z_k on the ``prune.cases`` training rows, is the same as moving W[:, j] into
the other columns (W[:, k] += W[:, j] b_k, bias += W[:, j] b0) and cutting column j. That is data
merging of a latent neuron (``merge`` folds hidden neurons without data; latent ones need the
decoder edited, which is why this operator acts in the decoder's call).

At each call on a decoder: for every alive latent input, the pair's loss with that input replaced
by its prediction (``context.loss_with_inputs``, one batched forward pass); the cheapest is folded
(``Network.fold_input``) if it raises the loss by at most ``tolerance`` times the loss. Training
between calls lets the network settle, and the folds stop when every remaining latent neuron
carries something the others cannot predict: the latent count the data needs, as this
autoencoder sees it. A call on an encoder changes nothing; the encoder's neuron keeps computing,
but with no alive outgoing weight it is off every live path (``latent_alive`` does not count it,
the live kept fraction drops its weights, and ``coevo export`` removes it). One input always stays.
``amount`` is not used: the tolerance decides, and the schedule's probability decides how often.
"""

from __future__ import annotations

import numpy as np

from coevo.genome import Network
from coevo.operators.base import PruneContext, needs, register
from coevo.operators.latent_ablation import cheapest_within, check_tolerance
from coevo.operators.protection import removable_input


def fold_coefficients(codes: np.ndarray, unit: int, others: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares coefficients (one per input, 0 outside ``others``) and offset predicting
    column ``unit`` of ``codes`` (cases x inputs) from the columns ``others``."""
    design = np.concatenate([np.ones((codes.shape[0], 1)), codes[:, others]], axis=1)
    beta = np.linalg.lstsq(design, codes[:, unit], rcond=None)[0]
    coefficients = np.zeros(codes.shape[1])
    coefficients[others] = beta[1:]
    return coefficients, float(beta[0])


@register("latent_fold")
@needs(linear=True)
def latent_fold_prune(net: Network, amount: float, rng: np.random.Generator, context: PruneContext, *,
                      tolerance: float = 0.02) -> Network:
    """Fold the latent neuron best predicted by the others into them, if that costs at most `tolerance` x loss."""
    check_tolerance("latent_fold", tolerance)
    if net.role != "decoder":
        return net
    first = net.layers[0]
    live = np.flatnonzero(first.weight_mask.any(axis=0))  # latent inputs with an alive weight
    if live.size <= 1:
        return net
    candidates = live[[removable_input(net, int(j)) for j in live]]
    if first.output_units:  # a one-layer decoder: a fold must not take an output's last entry
        keeps_outputs = [bool((np.delete(first.weight_mask, j, axis=1).any(axis=1) | first.bias_mask).all())
                         for j in candidates]
        candidates = candidates[keeps_outputs]
        if candidates.size == 0:
            return net
    if candidates.size == 0:
        return net
    codes = context.inputs(net).astype(np.float64)
    folds = [fold_coefficients(codes, j, live[live != j]) for j in candidates]
    variants = np.repeat(codes[None], candidates.size, axis=0)
    for v, (j, (coefficients, offset)) in enumerate(zip(candidates, folds)):
        variants[v, :, j] = offset + codes @ coefficients
    pick = cheapest_within(context.loss_with_inputs(net, variants) - context.loss(), context.loss(), tolerance, rng)
    if pick is not None:
        coefficients, offset = folds[pick]
        net.fold_input(int(candidates[pick]), coefficients, offset)
    return net
