"""coevo: train and prune autoencoders by spatial coevolution (encoders x decoders under DEAP)."""

__version__ = "0.1.0"
