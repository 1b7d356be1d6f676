"""Exit statuses of ``python -m app.training retrain``, for the scripts that run it."""

from __future__ import annotations

from enum import IntEnum


class RetrainExit(IntEnum):
    """Why ``retrain`` stopped.

    >>> RetrainExit(2).name
    'TOO_LITTLE_DATA'
    """

    # Trained and better than the serving model: published (or not, with --no-publish).
    BETTER = 0
    # Trained, evaluated, and not better than the serving model by --min-gain: not published.
    NOT_BETTER = 1
    # Too few users with enough interactions on the stream to train and evaluate: nothing done.
    TOO_LITTLE_DATA = 2
