"""coevo: train and prune autoencoders by spatial coevolution (encoders x decoders under DEAP)."""

from importlib import metadata

from coevo import _moved

try:
    __version__ = metadata.version("coevo")
except metadata.PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"

_moved.install()  # an old module path (coevo.evolve, ...) fails saying where it moved


def __getattr__(name: str):
    raise _moved.attribute(name)
