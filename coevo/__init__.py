"""coevo: train and prune autoencoders by spatial coevolution (encoders x decoders under DEAP)."""

from coevo import _moved
from coevo.rundir.provenance import COEVO_VERSION as __version__

_moved.install()  # an old module path (coevo.evolve, ...) fails saying where it moved


def __getattr__(name: str):
    raise _moved.attribute(name)
