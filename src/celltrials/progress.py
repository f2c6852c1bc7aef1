"""One progress protocol for every long operation.

Ingest, sync, classify, the report and the pipeline take an optional
``progress`` callback and call it with :class:`ProgressEvent` values; they
never draw anything themselves. The CLI draws the events with rich
(:func:`celltrials.commands.base.progress_display`) and stays silent with
``--quiet``; a script can collect them (``progress=events.append``) or log
them. Diagnostics that are not progress go to :mod:`logging` under the
``celltrials`` logger (``--debug`` turns it on).

``kind`` says what happened, by stage:

=========  ====================================================================
stage      kinds
=========  ====================================================================
ingest     ``file_start``, ``records`` (a batch of ``n`` parsed), ``file_done``,
           ``skipped`` (a file that is not a registry export; ``message`` why)
sync       ``query_start``, ``page``, ``restart``, ``query_done``, ``study``,
           ``retry`` (``message`` the failure and the wait)
classify   ``trials``
report     ``step`` (``item`` the step's name), ``done``
pipeline   ``step`` (``item`` the stage: ingest, classify, products, report)
=========  ====================================================================
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

logger = logging.getLogger("celltrials")


@dataclass(frozen=True)
class ProgressEvent:
    """What a long operation is doing.

    ``done``/``total`` measure the stage (files, studies, trials, report
    steps; ``total`` is None while unknown); ``index`` is the ordinal of the
    thing the event is about (file number, page number, step number); ``n``
    counts what the event carries (records in a batch, studies in a page).
    """

    stage: str
    kind: str
    item: str = ""
    done: int = 0
    total: int | None = None
    index: int = 0
    n: int = 0
    message: str = ""


Progress = Callable[[ProgressEvent], None]

__all__ = ["Progress", "ProgressEvent", "logger"]
