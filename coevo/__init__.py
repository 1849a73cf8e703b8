"""coevo: train and prune autoencoders by spatial coevolution (encoders x decoders under DEAP)."""

from importlib import metadata

try:
    __version__ = metadata.version("coevo")
except metadata.PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
