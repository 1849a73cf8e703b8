"""Training terms that some pruning methods bring with them, applied by both trainers
(:mod:`coevo.training.cpu_kernels` and :mod:`coevo.training.batched`) between the backward pass and Adam's step:

- FlipOut's gradient noise (Apostol, Stol, Forre 2020): each parameter tensor's gradient g gets
  lambda * ||g|| / sqrt(n) * N(0, 1) added. Their ablation credits much of the method's gain to it.
- Early-Bird's sparsity penalty on neuron scales (You et al. 2020; Klazinga 2022, who presses the
  latent layer hardest). coevo's networks have no BatchNorm, so a neuron's scale is the L2 norm of
  its alive incoming weights and bias, and the L1 penalty on it is a group lasso.

Both are off by default (``train.gradient_noise``, ``train.scale_l1``, ``train.scale_l1_latent``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from coevo.genome import Layout


@dataclass(frozen=True)
class TrainerTerms:
    """Training terms some pruning methods bring (see coevo.config.TrainConfig): FlipOut's gradient
    noise, drawn per pair from ``noise_seeds``, and Early-Bird's penalty on neuron scales."""

    gradient_noise: float = 0.0
    noise_seeds: np.ndarray | None = None  # (pairs,) int64, one per trained pair
    scale_l1: float = 0.0
    scale_l1_latent: float = 0.0
    kl_weight: float = 1.0  # a VAE's weight on the KL term (train.kl_weight)
    latent_seeds: np.ndarray | None = None  # (pairs,) int64: a VAE's reparameterisation noise, one per pair

    def latent_seeds_for(self, n: int) -> np.ndarray:
        """One seed per trained pair for a VAE's noise (0, 1, ... when none were given: direct calls)."""
        if self.latent_seeds is None:
            return np.arange(n, dtype=np.int64)
        if len(self.latent_seeds) != n:
            raise ValueError(f"a VAE's noise needs one seed per trained pair ({n})")
        return np.ascontiguousarray(self.latent_seeds, np.int64)

    def seeds(self, n: int) -> np.ndarray:
        if self.gradient_noise > 0 and (self.noise_seeds is None or len(self.noise_seeds) != n):
            raise ValueError(f"gradient noise needs one seed per trained pair ({n})")
        return np.zeros(n, np.int64) if self.noise_seeds is None else np.ascontiguousarray(self.noise_seeds, np.int64)

    def penalties(self, enc: Layout, dec: Layout) -> np.ndarray:
        """Per layer of the joined pair: scale_l1 on hidden layers, scale_l1_latent on the
        encoder's last (latent) layer, nothing on the decoder's output units."""
        n_enc, n_dec = len(enc.layers), len(dec.layers)
        out = np.full(n_enc + n_dec, self.scale_l1, dtype=np.float64)
        out[n_enc - 1] = self.scale_l1_latent
        out[-1] = 0.0
        return out

    @classmethod
    def of(cls, train_config, noise_seeds: np.ndarray | None = None,
           latent_seeds: np.ndarray | None = None) -> "TrainerTerms":
        """The terms a ``[train]`` config asks for; ``noise_seeds`` (gradient noise) and
        ``latent_seeds`` (a VAE's noise) one per trained pair."""
        return cls(train_config.gradient_noise, noise_seeds if train_config.gradient_noise > 0 else None,
                   train_config.scale_l1, train_config.scale_l1_latent, train_config.kl_weight, latent_seeds)
