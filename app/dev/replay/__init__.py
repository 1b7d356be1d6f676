"""The replay behind ``scripts/replay``: a data set streamed through a live worker, scored."""
