"""The pair's graph: which entries of which parameters form a unit, and how units chain.

The pair is traced once, by running it on two samples with hooks on every module that owns
parameters: the execution order gives the chain of prunable layers from the encoder's inputs
through the latent layer to the decoder's outputs, and the shapes between two layers give the
link (:class:`~coevo.genome.LayerSpec`: the same channels, a Flatten of channels into features, an
Unflatten of features into channels). Element-wise ops, pooling and upsampling between layers keep
channels and need nothing. A read-only DependencyGraph in the sense of Torch-Pruning, for masks.

What it does not follow (and refuses in one line, naming the module): layers that own parameters
but are not Linear / ConvNd / ConvTransposeNd, grouped convolutions, layers without a bias, a
module called twice, buffers (BatchNorm's running statistics: vmap cannot batch them), shapes
that no link explains. Skip connections around a layer are not detected, nor a reshape that orders
features other than channel by channel (as Flatten and Unflatten do): coevo assumes a chain.
"""

from __future__ import annotations

import math
from dataclasses import replace
import numpy as np
import torch
from torch import nn

from coevo.errors import ConfigError
from coevo.genome import LayerSpec, Layout
from coevo.model import ModelPart, ModelRef, build_pair

PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def trace(ref: ModelRef, pair: tuple[nn.Module, nn.Module] | None = None) -> tuple[Layout, Layout]:
    """The encoder's and the decoder's :class:`~coevo.genome.Layout`, checked on two samples:
    the decoder takes what the encoder gives and returns the input's shape."""
    enc, dec = pair or build_pair(ref)
    x = torch.rand(2, *ref.input_shape)
    calls: list[tuple[str, str, nn.Module, tuple, tuple]] = []
    for role, net in (("encoder", enc), ("decoder", dec)):
        _check_module(ref, role, net)
    handles = []
    for role, net in (("encoder", enc), ("decoder", dec)):
        for name, module in net.named_modules():
            if any(True for _ in module.parameters(recurse=False)):
                handles.append(module.register_forward_hook(_recorder(calls, role, name)))
    try:
        with torch.no_grad():
            z = _call(ref, "encoder", enc, x, f"a {_shape(x)} batch of samples")
            if not isinstance(z, torch.Tensor):
                raise ConfigError(f"{ref.what}: the encoder returns {type(z).__name__}, not a tensor; return the "
                                  f"latent code alone")
            if ref.variational:
                if z.dim() != 2 or z.shape[1] != 2 * ref.latent:
                    raise ConfigError(f"{ref.what} with model.variational: the encoder returns {_shape(z)}; a VAE's "
                                      f"encoder returns (N, {2 * ref.latent}): {ref.latent} means, then "
                                      f"{ref.latent} log-variances")
                z = z[:, :ref.latent]
            y = _call(ref, "decoder", dec, z, f"the encoder's {_shape(z)} output")
    finally:
        for h in handles:
            h.remove()
    if not isinstance(y, torch.Tensor) or y.shape != x.shape:
        got = _shape(y) if isinstance(y, torch.Tensor) else type(y).__name__
        raise ConfigError(f"{ref.what}: the decoder returns {got} for an input of {_shape(x)}; it must return the "
                          f"input's shape (check its last layer's channels or features)")
    layouts = []
    for role, net in (("encoder", enc), ("decoder", dec)):
        mine = [c for c in calls if c[0] == role]
        names = [c[1] for c in mine]
        twice = next((n for n in names if names.count(n) > 1), None)
        if twice is not None:
            raise ConfigError(f"{ref.what}: {role} module {twice!r} runs more than once per forward pass; coevo "
                              f"prunes each layer's own weights: give each use its own layer")
        owned = {n for n, m in net.named_modules() if any(True for _ in m.parameters(recurse=False))}
        if owned - set(names):
            raise ConfigError(f"{ref.what}: {role} module {sorted(owned - set(names))[0]!r} has parameters but "
                              f"takes no part in the forward pass; remove it")
        if not mine:
            raise ConfigError(f"{ref.what}: the {role} has no layer with parameters; coevo prunes Linear and "
                              f"convolution layers")
        layouts.append(mine)
    chain = layouts[0] + layouts[1]
    specs: list[LayerSpec] = []
    previous_out: tuple | None = None
    n_enc = len(layouts[0])
    for k, (role, name, module, inp, out) in enumerate(chain):
        if k == n_enc and ref.variational:  # the decoder reads the means; each latent unit is a mean and a log-variance
            spec = _spec(ref, role, name, module, inp, (out[0], previous_out[1] // 2))
            specs.append(replace(spec, halves=2))
        else:
            specs.append(_spec(ref, role, name, module, inp, previous_out))
        previous_out = out
    if z.dim() < 2 or z.shape[1] != specs[n_enc - 1].fan_out // (2 if ref.variational else 1):
        raise ConfigError(f"{ref.what}: the encoder's output {_shape(z)} is not its last layer's units "
                          f"({specs[n_enc - 1].fan_out}, {chain[n_enc - 1][1]!r}); end the encoder with that layer "
                          f"(and an element-wise activation)")
    return (Layout(tuple(specs[:n_enc]), model=ModelPart(ref, "encoder")),
            Layout(tuple(specs[n_enc:]), model=ModelPart(ref, "decoder")))


def _shape(t: torch.Tensor) -> str:
    return "(N, " + ", ".join(str(n) for n in t.shape[1:]) + ")"


def _call(ref: ModelRef, role: str, net: nn.Module, x: torch.Tensor, what: str):
    try:
        return net(x)
    except ConfigError:
        raise
    except KeyboardInterrupt:
        raise
    except BaseException as exc:
        reason = (str(exc).strip().splitlines() or [""])[0]
        fix = "; the encoder's output must fit the decoder's input" if role == "decoder" else ""
        raise ConfigError(f"{ref.what}: the {role} raised {type(exc).__name__} on {what}: {reason}{fix}") from None


def _recorder(calls: list, role: str, name: str):
    def hook(module: nn.Module, args: tuple, output) -> None:
        inp = args[0] if args else None
        calls.append((role, name, module, tuple(inp.shape) if isinstance(inp, torch.Tensor) else (),
                      tuple(output.shape) if isinstance(output, torch.Tensor) else ()))
    return hook


def _check_module(ref: ModelRef, role: str, net: nn.Module) -> None:
    for name, buf in net.named_buffers():
        owner = name.rpartition(".")[0] or name
        kind = type(net.get_submodule(owner)).__name__ if "." in name else type(net).__name__
        raise ConfigError(f"{ref.what}: {role} module {owner!r} ({kind}) keeps buffers ({name}), which a population "
                          f"of stacked parameters cannot batch; use BatchNorm(track_running_stats=False) or GroupNorm "
                          f"without affine parameters, or no normalisation")
    owners: dict[int, str] = {}
    for name, module in net.named_modules(remove_duplicate=False):
        for pname, param in module.named_parameters(recurse=False):
            first = owners.setdefault(id(param), f"{name}.{pname}" if name else pname)
            if first != (f"{name}.{pname}" if name else pname):
                raise ConfigError(f"{ref.what}: {role} parameter {first!r} is shared with {name!r}; coevo prunes each "
                                  f"layer's own weights: give each layer its own parameters")
    for name, module in net.named_modules():
        own = list(module.named_parameters(recurse=False))
        if not own:
            continue
        label = f"{role} module {name!r} ({type(module).__name__})"
        if not isinstance(module, PRUNABLE):
            raise ConfigError(f"{ref.what}: {label} has parameters, and coevo prunes Linear, ConvNd and "
                              f"ConvTransposeNd layers only; drop its parameters (affine=False) or replace it")
        if {n for n, _ in own} != {"weight", "bias"}:
            raise ConfigError(f"{ref.what}: {label} has no bias (or other parameters: {[n for n, _ in own]}); coevo "
                              f"needs bias=True on every layer")
        if getattr(module, "groups", 1) != 1:
            raise ConfigError(f"{ref.what}: {label} is a grouped convolution (groups={module.groups}); use groups=1")


def _units_of(out: tuple) -> tuple[int, int]:
    """A layer output's units (channels or features) and positions per unit."""
    return int(out[1]), int(math.prod(out[2:])) if len(out) > 2 else 1


def _spec(ref: ModelRef, role: str, name: str, module: nn.Module, inp: tuple, previous_out: tuple | None) -> LayerSpec:
    weight = module.weight
    transposed = isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d))
    if isinstance(module, nn.Linear):
        fan_out, channels, kernel = module.out_features, module.in_features, ()
        if len(inp) != 2:
            raise ConfigError(f"{ref.what}: {role} Linear {name!r} gets a {len(inp)}-D input {inp}; coevo follows "
                              f"Linear layers on (N, features): Flatten before it")
    else:
        fan_out = module.out_channels
        channels = module.in_channels
        kernel = tuple(int(k) for k in weight.shape[2:])
    fan_in = channels * (int(math.prod(kernel)) if kernel else 1)
    spread = gather = 1
    if previous_out is not None:
        units, positions = _units_of(previous_out)
        # (pooling or upsampling may come between: the positions are whatever reaches the Flatten / leaves the Unflatten)
        if channels == units:
            pass
        elif isinstance(module, nn.Linear) and len(previous_out) > 2 and channels % units == 0:
            spread = channels // units  # Flatten: each channel of the previous layer feeds `spread` features
        elif not isinstance(module, nn.Linear) and len(previous_out) == 2 and units % channels == 0:
            gather = units // channels  # Unflatten: each channel gathers `gather` features
        else:
            raise ConfigError(f"{ref.what}: cannot follow units from the layer before {role} {name!r} (output "
                              f"(N, {', '.join(map(str, previous_out[1:]))})) into it (input "
                              f"(N, {', '.join(map(str, inp[1:]))})); coevo follows chains of layers joined by "
                              f"element-wise ops, pooling, upsampling, Flatten and Unflatten")
    return LayerSpec(fan_in, fan_out, "module", kernel, transposed, spread, gather, name)


def flatten_parameters(net: nn.Module, layout: Layout) -> np.ndarray:
    """A module's parameters as one flat row of ``layout`` (weights unit-major)."""
    row = np.empty(layout.size, dtype=np.float32)
    views = layout.split(row)
    for spec, (w, b) in zip(layout.layers, views):
        module = net.get_submodule(spec.name) if spec.name else None
        weight = module.weight.detach()
        if spec.transposed:
            weight = weight.transpose(0, 1)
        w[...] = weight.reshape(spec.fan_out, spec.fan_in).cpu().numpy()
        b[...] = module.bias.detach().cpu().numpy()
    return row


def parameters_of(layout: Layout, row: torch.Tensor) -> dict[str, torch.Tensor]:
    """A flat row (or a vmapped slice of one) as the module's named parameters, as views."""
    out = {}
    for spec, (w, b) in zip(layout.layers, layout.split(row)):
        prefix = f"{spec.name}." if spec.name else ""
        if spec.kernel:
            w = w.reshape(*w.shape[:-1], spec.channels, *spec.kernel)
            if spec.transposed:
                w = w.transpose(-len(spec.kernel) - 2, -len(spec.kernel) - 1)
        out[prefix + "weight"] = w
        out[prefix + "bias"] = b
    return out
