"""Imported once by the fork server of :mod:`celltrials.classify_parallel`: its
workers start with the packaged taxonomy already compiled."""

from celltrials.classify_parallel import _init_worker
from celltrials.taxonomy.engine import fold
from celltrials.taxonomy.loader import default_taxonomy

default_taxonomy()
fold("\u017f")  # builds the case-folding table
__all__ = ["_init_worker"]
