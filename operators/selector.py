"""The one selector: scores -> a new mask, for a scope (``layer`` or ``global``) and a unit
(``weight`` or ``neuron``), under per-layer caps and the protection rules
(:mod:`coevo.operators.protection`).

Scores are per layer, lower = pruned first:

- :class:`EntryScores` ``(weight (out x in), bias (out,) or None)``: a score per entry; with
  ``bias`` None the biases are neither pruned nor counted (FlipOut ranks weights only);
- a 1-D array (out,): a score per neuron. For unit ``weight`` every entry of a neuron (incoming
  weights and bias) gets its neuron's score;
- ``None`` for the whole network: no preference, every choice uniform (RANDOM).

A score of +inf (or NaN) means "never prune this one". Ties are broken uniformly with ``rng``.

How many: ``amount`` is the fraction of the alive entries (unit weight) or alive neurons (unit
neuron) to prune, stochastically rounded (unbiased), per layer (scope ``layer``) or over the whole
network (scope ``global``). The protected entries count as alive (so a layer loses ``amount`` of
what it has, not of what is left after protection); they are only never chosen. Under scope
``global`` no layer gives more than ``max_layer_fraction`` of its alive entries (or neurons) in
one call. Scope ``model`` (the encoder and decoder ranked together) needs the pair: a criterion
operator splits the amount with :func:`model_shares`, then prunes each network with ``global``.

Unit ``neuron`` cuts a neuron's incoming weights and bias, and its outgoing weights where they
live in the same network (they multiply a constant zero from then on). The decoder's output units
are never cut; a neuron of the encoder's first layer is cut only if every input it feeds keeps a
weight into another neuron; a neuron is cut only while another of its layer stays on an input ->
output path of the pair (:func:`coevo.operators.protection.ends_of`). In place: the selector
changes the masks of the network it is given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence, Union

import numpy as np

from coevo.genome import Network
from coevo.operators.kernels import lowest_capped, lowest_with_random_ties, stochastic_count, uniform_sample
from coevo.operators.protection import ends_of, input_cover, on_path, protected_entries

Scope = Literal["layer", "global", "model"]
Unit = Literal["weight", "neuron"]
Reduce = Literal["l2", "l1", "max"]


@dataclass(frozen=True)
class EntryScores:
    """One layer's per-entry scores (lower = pruned first); ``bias`` None: biases are not pruned."""

    weight: np.ndarray
    bias: np.ndarray | None = None


LayerScores = Union[EntryScores, np.ndarray]
Scores = Union[Sequence[LayerScores], None]


def check_settings(scope: str, unit: str, max_layer_fraction: float, reduce: str = "l2") -> None:
    """Refuse a setting the selector cannot use, naming it and what it accepts."""
    if scope not in ("layer", "global", "model"):
        raise ValueError(f"scope must be 'layer', 'global' or 'model', got {scope!r}")
    if unit not in ("weight", "neuron"):
        raise ValueError(f"unit must be 'weight' or 'neuron', got {unit!r}")
    if not 0.0 < max_layer_fraction <= 1.0:
        raise ValueError(f"max_layer_fraction must be in (0, 1], got {max_layer_fraction}")
    if reduce not in ("l2", "l1", "max"):
        raise ValueError(f"reduce must be 'l2', 'l1' or 'max', got {reduce!r}")


def prune(net: Network, scores: Scores, amount: float, rng: np.random.Generator, *, scope: Scope = "layer",
          unit: Unit = "weight", max_layer_fraction: float = 1.0, reduce: Reduce = "l2") -> Network:
    """Prune ``net`` by ``scores`` (see the module's docstring); ``reduce`` turns entry scores into
    neuron scores for unit ``neuron``: the L2 or L1 norm, or the largest, of the neuron's alive
    incoming entries' scores."""
    check_settings(scope, unit, max_layer_fraction, reduce)
    if scope == "model":
        raise ValueError("scope 'model' needs the pair: split the amount with model_shares, then prune each "
                         "network with scope 'global'")
    if scores is not None and len(scores) != len(net.layers):
        raise ValueError(f"scores must have one entry per layer ({len(net.layers)}), got {len(scores)}")
    if unit == "weight":
        select_weights(net, scores, amount, rng, scope, max_layer_fraction)
    else:
        cut_neurons(net, select_neurons(net, neuron_scores(net, scores, reduce), amount, rng, scope,
                                        max_layer_fraction))
    return net


# ---------------------------------------------------------------- unit: weight


def entry_scores(net: Network, scores: Scores) -> list[tuple[np.ndarray, np.ndarray | None]] | None:
    """Per layer (weight scores, bias scores or None) as float64, a neuron's score spread over its entries."""
    if scores is None:
        return None
    out = []
    for layer, s in zip(net.layers, scores):
        if isinstance(s, EntryScores):
            w = np.asarray(s.weight, dtype=np.float64)
            b = None if s.bias is None else np.asarray(s.bias, dtype=np.float64)
        else:
            per = np.asarray(s, dtype=np.float64)
            if per.shape != layer.bias.shape:
                raise ValueError(f"neuron scores of shape {per.shape} do not match {layer.bias.shape[0]} neurons")
            w, b = np.broadcast_to(per[:, None], layer.weight.shape), per
        if w.shape != layer.weight.shape or (b is not None and b.shape != layer.bias.shape):
            raise ValueError(f"scores of shape {w.shape} do not match weights {layer.weight.shape}")
        out.append((w, b))
    return out


def select_weights(net: Network, scores: Scores, amount: float, rng: np.random.Generator, scope: Scope = "layer",
                   max_layer_fraction: float = 1.0) -> None:
    """Unit ``weight``: prune entries, the protected ones spared (see the module's docstring)."""
    per_entry = entry_scores(net, scores)
    protected = protected_entries(net, per_entry, rng)
    flat_scores, candidates, alive_counts = [], [], []
    for i, layer in enumerate(net.layers):
        with_bias = per_entry is None or per_entry[i][1] is not None
        alive = np.concatenate([layer.weight_mask.ravel(), layer.bias_mask if with_bias else np.zeros(0, bool)])
        spared = np.concatenate([protected[i][0].ravel(), protected[i][1] if with_bias else np.zeros(0, bool)])
        if per_entry is None:
            score = None
            cand = np.flatnonzero(alive & ~spared)
        else:
            w, b = per_entry[i]
            full = np.concatenate([w.ravel(), b if with_bias else np.zeros(0)])
            cand = np.flatnonzero(alive & ~spared & (full < np.inf))
            score = np.ascontiguousarray(full[cand])
        flat_scores.append(score)
        candidates.append(cand)
        alive_counts.append(int(alive.sum()))
    if scope == "layer":
        for i, layer in enumerate(net.layers):
            n = min(stochastic_count(float(amount), alive_counts[i], rng), _cap(alive_counts[i], max_layer_fraction))
            if flat_scores[i] is None:
                picked = uniform_sample(candidates[i].size, n, rng)
            else:
                picked = lowest_with_random_ties(flat_scores[i], min(n, candidates[i].size), rng)
            _clear(layer, candidates[i][picked])
        return
    n = stochastic_count(float(amount), sum(alive_counts), rng)
    caps = np.array([_cap(a, max_layer_fraction) for a in alive_counts], dtype=np.int64)
    groups = np.concatenate([np.full(c.size, i, dtype=np.int64) for i, c in enumerate(candidates)])
    if per_entry is None:
        flat = np.zeros(groups.size)  # all tied: the ties are broken uniformly
    else:
        flat = np.concatenate(flat_scores)
    picked = lowest_capped(flat, groups, caps, n, rng)
    where = np.concatenate(candidates)
    for i, layer in enumerate(net.layers):
        _clear(layer, where[picked[groups[picked] == i]])


def model_shares(scored: Sequence[tuple[Network, Scores]], amount: float, rng: np.random.Generator,
                 unit: Unit = "weight", reduce: Reduce = "l2") -> list[float]:
    """Scope ``model``: how a ranking of the whole autoencoder (encoder and decoder together, as
    ``torch.nn.utils.prune.global_unstructured`` over a model) splits ``amount``. Each network's
    share is the fraction of its alive entries (unit ``weight``) or prunable neurons (unit
    ``neuron``: alive, not an output unit) among the ``amount`` lowest-scoring ones of the pair,
    protected entries left out; each network then prunes its share with scope ``global``, which
    picks the same ones (the rules may spare a few neurons). Why: the encoder needs far fewer
    entries than the decoder (its inputs are redundant; every output needs its own), so equal
    fractions starve the decoder first. Uniform scores (``None``) split evenly.
    ``max_layer_fraction`` applies afterwards, in each network."""
    candidates, alive_counts = [], []
    for net, scores in scored:
        if scores is None:
            return [float(amount)] * len(scored)
        values, alive_total = [], 0
        if unit == "neuron":
            for layer, per in zip(net.layers, neuron_scores(net, scores, reduce)):
                if layer.output_units:
                    continue
                alive = layer.alive_neurons()
                values.append(per[alive & (per < np.inf)])
                alive_total += int(alive.sum())
        else:
            per_entry = entry_scores(net, scores)
            protected = protected_entries(net, per_entry, rng)
            for layer, (w, b), (pw, pb) in zip(net.layers, per_entry, protected):
                with_bias = b is not None
                alive = np.concatenate([layer.weight_mask.ravel(), layer.bias_mask if with_bias else np.zeros(0, bool)])
                spared = np.concatenate([pw.ravel(), pb if with_bias else np.zeros(0, bool)])
                full = np.concatenate([w.ravel(), b if with_bias else np.zeros(0)])
                values.append(full[alive & ~spared & (full < np.inf)])
                alive_total += int(alive.sum())
        candidates.append(np.concatenate(values) if values else np.zeros(0))
        alive_counts.append(alive_total)
    flat = np.concatenate(candidates)
    owner = np.concatenate([np.full(c.size, k, dtype=np.int64) for k, c in enumerate(candidates)])
    n = min(stochastic_count(float(amount), sum(alive_counts), rng), flat.size)
    if n == 0:
        return [0.0] * len(scored)
    counts = np.bincount(owner[np.argpartition(flat, n - 1)[:n]], minlength=len(scored))
    return [float(c) / a if a else 0.0 for c, a in zip(counts, alive_counts)]


def _cap(alive: int, fraction: float) -> int:
    return alive if fraction >= 1.0 else int(np.floor(fraction * alive))


def _clear(layer, flat_index: np.ndarray) -> None:
    """Mask entries given as indices into [weights row-major, then biases]."""
    size = layer.weight_mask.size
    layer.weight_mask.flat[flat_index[flat_index < size]] = False
    layer.bias_mask[flat_index[flat_index >= size] - size] = False


# ---------------------------------------------------------------- unit: neuron


def neuron_scores(net: Network, scores: Scores, reduce: Reduce = "l2") -> list[np.ndarray] | None:
    """Per layer, one float64 score per neuron; entry scores are reduced over the neuron's alive
    incoming entries (L2 or L1 norm, or the largest)."""
    if scores is None:
        return None
    out = []
    for layer, s in zip(net.layers, scores):
        if isinstance(s, EntryScores):
            w = np.where(layer.weight_mask, np.asarray(s.weight, dtype=np.float64), 0.0)
            b = np.zeros(layer.bias.shape) if s.bias is None else np.where(layer.bias_mask, s.bias, 0.0)
            entries = np.concatenate([w, np.asarray(b, dtype=np.float64)[:, None]], axis=1)
            if reduce == "l2":
                out.append(np.sqrt((entries * entries).sum(axis=1)))
            elif reduce == "l1":
                out.append(np.abs(entries).sum(axis=1))
            else:
                out.append(np.abs(entries).max(axis=1))
        else:
            per = np.asarray(s, dtype=np.float64)
            if per.shape != layer.bias.shape:
                raise ValueError(f"neuron scores of shape {per.shape} do not match {layer.bias.shape[0]} neurons")
            out.append(per)
    return out


def select_neurons(net: Network, scores: list[np.ndarray] | None, amount: float, rng: np.random.Generator,
                   scope: Scope = "layer", max_layer_fraction: float = 1.0) -> list[np.ndarray]:
    """Unit ``neuron``: per layer, the neurons to cut (bool), lowest scores first, under the rules
    (see the module's docstring). Changes no mask: :func:`cut_neurons` applies the choice."""
    weights = [layer.unit_mask().copy() for layer in net.layers]  # the chain of units (convolutions: channels)
    masks = [(w, layer.bias_mask.copy()) for w, layer in zip(weights, net.layers)]
    cut = [np.zeros(layer.bias.shape, dtype=bool) for layer in net.layers]
    eligible = [i for i, layer in enumerate(net.layers) if not layer.output_units]
    alive = {i: net.layers[i].alive_neurons() for i in eligible}
    counts = {i: int(alive[i].sum()) for i in eligible}
    caps = {i: _cap(counts[i], max_layer_fraction) for i in eligible}
    if scope == "layer":
        quota = {i: stochastic_count(float(amount), counts[i], rng) for i in eligible}
        total = sum(quota.values())
    else:
        total = stochastic_count(float(amount), sum(counts.values()), rng)
        quota = caps
    if total <= 0:
        return cut
    cands = [(i, j) for i in eligible for j in np.flatnonzero(alive[i])
             if scores is None or scores[i][j] < np.inf]
    if not cands:
        return cut
    keys = rng.random(len(cands))
    values = np.zeros(len(cands)) if scores is None else np.array([scores[i][j] for i, j in cands])
    order = np.lexsort((keys, values))
    cover = input_cover(net)
    ends = ends_of(net)  # the pair's paths: through a latent unit the partner carries on
    path = on_path(masks, **ends)
    done = {i: 0 for i in eligible}
    for k in order:
        if sum(done.values()) >= total:
            break
        i, j = cands[k]
        if done[i] >= min(quota[i], caps[i]):
            continue
        if path[i][j] and path[i].sum() <= 1:
            continue  # the last neuron of its layer on an input -> output path
        if i == 0 and cover is not None:
            held = masks[0][0][j]
            if np.any(cover[held] <= 1):
                continue  # an input would lose its last weight
            cover = cover - held
        masks[i][0][j] = False
        masks[i][1][j] = False
        if i + 1 < len(masks):
            masks[i + 1][0][:, j] = False
        cut[i][j] = True
        done[i] += 1
        if path[i][j]:
            path = on_path(masks, **ends)
    return cut


def cut_neurons(net: Network, cut: list[np.ndarray]) -> None:
    """Mask the chosen neurons: incoming weights, bias, and outgoing weights inside this network."""
    for i, (layer, gone) in enumerate(zip(net.layers, cut)):
        if gone.any():
            layer.weight_mask[gone] = False
            layer.bias_mask[gone] = False
            if i + 1 < len(net.layers):  # the columns that read only cut units (an Unflatten's channel: all of its)
                nxt = net.layers[i + 1]
                dead = gone if nxt.spec is None else nxt.spec.dead_columns(gone)
                nxt.weight_mask[:, dead] = False


__all__ = ["EntryScores", "LayerScores", "Scores", "Scope", "Unit", "Reduce", "prune", "select_weights",
           "select_neurons", "cut_neurons", "neuron_scores", "entry_scores", "check_settings"]
