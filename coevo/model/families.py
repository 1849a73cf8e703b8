"""The built-in encoder/decoder pairs: the paper's MLP and a small convolutional autoencoder.

A family is a plain factory, ``family(input_shape, latent, **params) -> (encoder, decoder)``,
the same contract as a user's ``model.factory``; coevo only ever sees the two modules.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from coevo.errors import ConfigError


def mlp(input_shape: Sequence[int], latent: int, hidden: Sequence[int] = (30,),
        variational: bool = False) -> tuple[nn.Module, nn.Module]:
    """The paper's pair: D -> hidden... -> latent (ReLU after each) and its mirror (Sigmoid output).
    Module names ('0', '2', ...) are those of :func:`coevo.genome.state_dict`. ``variational``: the
    last layer gives 2 x latent values (means, log-variances), with no activation."""
    width = int(math.prod(input_shape))
    widths = [width, *hidden, latent]
    enc: list[nn.Module] = []
    for a, b in zip(widths[:-1], widths[1:]):
        enc += [nn.Linear(a, b), nn.ReLU()]
    if variational:
        enc[-2:] = [nn.Linear(widths[-2], 2 * latent)]
    back = widths[::-1]
    dec: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(back[:-1], back[1:])):
        dec += [nn.Linear(a, b), nn.Sigmoid() if i == len(back) - 2 else nn.ReLU()]
    return nn.Sequential(*enc), nn.Sequential(*dec)


def conv(input_shape: Sequence[int], latent: int, channels: Sequence[int] = (8, 16), kernel: int = 3,
         stride: int = 2, variational: bool = False) -> tuple[nn.Module, nn.Module]:
    """A convolutional autoencoder for (C, L) signals (Conv1d) or (C, H, W) images (Conv2d):
    ``len(channels)`` strided convolutions (ReLU), Flatten, Linear to ``latent`` (ReLU, as the
    MLP's latent layer); the decoder mirrors it with a Linear, Unflatten and transposed
    convolutions (output_padding chosen so every size comes back exactly), Sigmoid output.
    ``variational``: the Linear gives 2 x latent values (means, log-variances), no activation."""
    shape = tuple(int(n) for n in input_shape)
    if len(shape) not in (2, 3):
        raise ConfigError(f"model.family = 'conv' needs samples of shape (C, L) or (C, H, W), and the data give "
                          f"{shape}; set data.sample_shape (e.g. [1, {math.prod(shape)}]) or use model.family = 'mlp'")
    channels = [int(c) for c in channels]
    if not channels or any(c < 1 for c in channels) or kernel < 1 or stride < 1:
        raise ConfigError(f"model.params for the conv family: channels must be a non-empty list of sizes >= 1 and "
                          f"kernel, stride >= 1; got channels={channels}, kernel={kernel}, stride={stride}")
    dims = len(shape) - 1
    Conv = nn.Conv1d if dims == 1 else nn.Conv2d
    ConvT = nn.ConvTranspose1d if dims == 1 else nn.ConvTranspose2d
    padding = kernel // 2
    sizes = [shape[1:]]
    for _ in channels:
        sizes.append(tuple((n + 2 * padding - kernel) // stride + 1 for n in sizes[-1]))
    if any(n < 1 for n in sizes[-1]):
        raise ConfigError(f"model.params for the conv family: {len(channels)} convolutions of stride {stride} shrink "
                          f"a {shape[1:]} sample to nothing; use fewer channels entries or stride 1")
    widths = [shape[0], *channels]
    enc: list[nn.Module] = []
    for a, b in zip(widths[:-1], widths[1:]):
        enc += [Conv(a, b, kernel, stride=stride, padding=padding), nn.ReLU()]
    flat = channels[-1] * math.prod(sizes[-1])
    enc += [nn.Flatten(), nn.Linear(flat, 2 * latent)] if variational else [nn.Flatten(), nn.Linear(flat, latent), nn.ReLU()]
    dec: list[nn.Module] = [nn.Linear(latent, flat), nn.ReLU(), nn.Unflatten(1, (channels[-1], *sizes[-1]))]
    back = widths[::-1]
    for i, (a, b) in enumerate(zip(back[:-1], back[1:])):
        small, big = sizes[len(sizes) - 1 - i], sizes[len(sizes) - 2 - i]
        extra = tuple(t - ((n - 1) * stride - 2 * padding + kernel) for n, t in zip(small, big))
        if any(not 0 <= e < max(stride, 1) for e in extra):
            raise ConfigError(f"model.params for the conv family: kernel {kernel} and stride {stride} cannot map "
                              f"size {small} back to {big}; use an odd kernel")
        dec += [ConvT(a, b, kernel, stride=stride, padding=padding, output_padding=extra if dims > 1 else extra[0]),
                nn.Sigmoid() if i == len(back) - 2 else nn.ReLU()]
    return nn.Sequential(*enc), nn.Sequential(*dec)


FAMILIES = {"mlp": mlp, "conv": conv}


def _demo() -> None:  # pragma: no cover - a quick look: python -m coevo.model.families
    enc, dec = conv((1, 8, 8), 10)
    x = torch.rand(2, 1, 8, 8)
    print(enc, dec, dec(enc(x)).shape, sep="\n")


if __name__ == "__main__":  # pragma: no cover
    _demo()
