"""Training-side tools (need the ``[train]`` extra for model training): the chip dataset builder
(:mod:`training.chips`) and the trainer. This package imports :mod:`detector`, never the other way round."""
