"""How much of an autoencoder is left: kept fractions that count only what can matter.

A mask says which entries are alive, but an alive weight into a neuron that nothing reaches, or
out of a neuron that reaches no output, changes nothing the network computes. Pruning operators
leave such dead weight behind (a structured operator cuts a neuron, the weights leaving it stay
alive), so counting masks flatters them. The measures here look at the encoder and decoder of a
pair as one chain of layers, from the input units to the output units:

- ``kept``: alive entries on a live path from an input unit through the latent layer to an output
  unit (and the output units' biases), over all entries. This is the kept fraction coevo reports
  everywhere, and the one ``prune.target_kept`` holds.
- ``mask_kept``: alive entries over all entries, as the masks say (the old measure).
- ``compact``: the parameters of the dense network left after removing dead neurons and folding
  constant ones (reached only through biases) into the next layer's bias, over all entries: the
  size of the model an export would ship. Input and output units are never removed.

An entry counts as alive when its mask is set; in runs whose pruning keeps no mask
(``prune.regrow``), when its value is not exactly zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from coevo.config import Config
from coevo.genome import Layout

if TYPE_CHECKING:
    from coevo.population import Stack


def live_entries(layout: Layout, alive: np.ndarray) -> np.ndarray:
    """(N, P) bool alive entries of N networks of ``layout`` -> (N, P) bool entries on a live path.

    A neuron is driven when an alive weight from an input unit or a driven neuron feeds it; it is
    useful when an alive weight takes it to a useful neuron (or it is an output unit). A weight is
    live when its source is driven (or an input unit) and its target useful; a bias when its
    neuron is driven and useful, or an output unit's (it sets that output). So only entries on an
    input -> output path count, plus the output biases: a neuron reached only through biases
    computes a constant, which the next layer's bias can hold (the compact export folds it), and a
    pair cut in two at the latent layer counts nothing but its output biases.
    """
    alive = np.asarray(alive, dtype=bool)
    views = layout.split(alive)
    specs = layout.layers
    units = [spec.unit_mask(w) for spec, (w, _b) in zip(specs, views)]  # (N, units, previous units)
    n = alive.shape[0]
    sources, driven = [], []  # per layer: which of its previous units are driven; which of its units are
    reached = np.ones((n, units[0].shape[-1]), dtype=bool)
    for u in units:
        sources.append(reached)
        reached = (u & reached[:, None, :]).any(axis=2)
        driven.append(reached)
    driven[-1] = np.ones_like(driven[-1])  # output units: their biases always count
    live = np.zeros_like(alive)
    useful = np.ones((n, specs[-1].fan_out), dtype=bool)
    for spec, u, (w, b), source, on, (lw, lb) in zip(specs[::-1], units[::-1], views[::-1], sources[::-1],
                                                     driven[::-1], layout.split(live)[::-1]):
        lw[...] = w & spec.column_sources(source)[:, None, :] & useful[:, :, None]
        lb[...] = b & useful & on
        useful = (u & useful[:, :, None]).any(axis=1)
    return live


def compact_widths(layout: Layout, alive: np.ndarray) -> np.ndarray:
    """(N, layers + 1) widths of the dense networks left when dead neurons are removed and constant
    ones are folded into the next layer's bias: the input width, then each layer's neurons that an
    input drives along live entries (all of the last layer's). :mod:`coevo.export` builds them."""
    alive = np.asarray(alive, dtype=bool)
    live = live_entries(layout, alive)
    n = alive.shape[0]
    varying = np.ones((n, layout.layers[0].fan_in), dtype=bool)  # driven by some input, not only biases
    widths = [np.full(n, layout.layers[0].fan_in)]
    last = len(layout.layers) - 1
    for i, (w, _b) in enumerate(layout.split(live)):
        varying = (w & varying[:, None, :]).any(axis=2)
        widths.append(np.full(n, w.shape[1]) if i == last else varying.sum(axis=1))
    return np.stack(widths, axis=1)


def compact_size(layout: Layout, alive: np.ndarray) -> np.ndarray:
    """(N,) parameters of the dense network left when dead neurons are removed and constant ones
    are folded into the next layer's bias; input and output units always stay. For convolutions,
    a unit is a channel: what is left of each layer is its varying channels' whole kernels over the
    varying input channels, and their biases."""
    if layout.plain:
        return _size(compact_widths(layout, alive))
    alive = np.asarray(alive, dtype=bool)
    live = live_entries(layout, alive)
    n = alive.shape[0]
    varying = np.ones((n, layout.layers[0].previous_units), dtype=bool)
    size = np.zeros(n, dtype=np.int64)
    last = len(layout.layers) - 1
    for i, (spec, (w, _b)) in enumerate(zip(layout.layers, layout.split(live))):
        columns = spec.column_sources(varying)
        varying = np.ones((n, spec.fan_out), dtype=bool) if i == last else (w & columns[:, None, :]).any(axis=2)
        size += varying.sum(axis=1) * columns.sum(axis=1) + varying.sum(axis=1)
    return size


def _size(widths: np.ndarray) -> np.ndarray:
    widths = widths.astype(np.int64)
    return (widths[:, 1:] * widths[:, :-1] + widths[:, 1:]).sum(axis=1)


@dataclass(frozen=True)
class KeptFractions:
    """Per pair (arrays of length N): see the module docstring for what each counts."""

    kept: np.ndarray
    kept_encoder: np.ndarray
    kept_decoder: np.ndarray
    mask_kept: np.ndarray
    compact: np.ndarray
    latent: np.ndarray  # latent neurons on a live path from an input to an output (the compact latent width)


def kept_fractions(enc_layout: Layout, enc_alive: np.ndarray, dec_layout: Layout,
                   dec_alive: np.ndarray) -> KeptFractions:
    """Kept fractions of N encoder-decoder pairs, from their (N, P) alive entries."""
    layout = enc_layout + dec_layout
    alive = np.concatenate([np.asarray(enc_alive, bool), np.asarray(dec_alive, bool)], axis=1)
    live = live_entries(layout, alive)
    split = enc_layout.size
    if layout.plain:
        widths = compact_widths(layout, alive)
        compact, latent = _size(widths), widths[:, len(enc_layout.layers)]
    else:
        compact = compact_size(layout, alive)
        latent = _latent_units(layout, live, len(enc_layout.layers), dec_layout.layers[0].halves)
    return KeptFractions(
        kept=live.mean(axis=1),
        kept_encoder=live[:, :split].mean(axis=1),
        kept_decoder=live[:, split:].mean(axis=1),
        mask_kept=alive.mean(axis=1),
        compact=compact / layout.size,
        latent=latent,
    )


def _latent_units(layout: Layout, live: np.ndarray, n_enc: int, halves: int = 1) -> np.ndarray:
    """(N,) latent units (the encoder's last layer's) with a live entry: on an input -> output path
    (a VAE's unit, ``halves`` = 2, is its mean row and its log-variance row: one unit)."""
    w, b = layout.split(live)[n_enc - 1]
    rows = w.any(axis=2) | b
    return rows.reshape(rows.shape[0], halves, -1).any(axis=1).sum(axis=1)


def stack_alive(stack: "Stack", by_value: bool = False) -> np.ndarray:
    """(N, P) entries of a :class:`~coevo.population.Stack` that are masked in; with
    ``by_value`` (``prune.regrow``, whose pruning keeps no mask) also not exactly zero. Otherwise a
    masked-in zero is a weight that trains again (the reset mutation, a regrown entry): it counts."""
    alive = stack.mask & (stack.params != 0) if by_value else stack.mask
    return alive.cpu().numpy()


def stack_kept_fractions(enc: "Stack", dec: "Stack", by_value: bool = False) -> KeptFractions:
    """Kept fractions of every (encoder row k, decoder row k) pair of two stacks (``by_value``: see :func:`stack_alive`)."""
    return kept_fractions(enc.layout, stack_alive(enc, by_value), dec.layout, stack_alive(dec, by_value))


def loss_floor(config: Config) -> float | None:
    """The lowest expected test loss of binary clustering: a model that outputs each row's true
    centroid still misses the flipped bits, ``data.noise`` per bit under L1 and MSE. None for
    other data and for BCE, whose floor is not the noise rate."""
    if config.data.source != "binary_clustering" or config.model.loss == "bce":
        return None
    return float(config.data.noise)


def baseline_loss(train: torch.Tensor, test: torch.Tensor, loss: str) -> float:
    """The test loss of the constant model that predicts, for every row, each dimension's training
    mean (its majority bit when the data are binary): what a model must beat to have learnt
    anything about individual rows."""
    from coevo.training.batched import reconstruction_loss

    binary = bool(((train == 0) | (train == 1)).all())
    centre = (train.mean(dim=0) >= 0.5).to(train.dtype) if binary else train.mean(dim=0)
    prediction = centre.expand_as(test)
    return float(reconstruction_loss(prediction.unsqueeze(0), test.unsqueeze(0), loss)[0])
