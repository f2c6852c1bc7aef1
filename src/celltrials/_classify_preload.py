"""Imported once by the fork server of :mod:`celltrials.classify_parallel`: its
workers start with the packaged taxonomy already compiled."""

from celltrials.classify import Classifier
from celltrials.classify_parallel import _init_worker, warm_up
from celltrials.taxonomy.engine import fold
from celltrials.taxonomy.loader import default_taxonomy

default_taxonomy()
fold("\u017f")  # builds the case-folding table
warm_up(Classifier())  # builds the engine's index
__all__ = ["_init_worker"]
