"""Small hand-made data sets for the training tests."""

from __future__ import annotations

import numpy as np

from app.training.sequences import SequenceData


def make_data(*sequences: list[int], n_items: int = 9) -> SequenceData:
    n = n_items + 1
    return SequenceData(
        n_items=n_items,
        item_tokens=("", *(f"i{i}" for i in range(1, n))),
        item_titles=("",) * n,
        item_genres=((),) * n,
        user_tokens=tuple(f"u{u}" for u in range(len(sequences))),
        sequences=tuple(np.array(s, dtype=np.int64) for s in sequences),
    )
