"""The benchmark behind ``scripts/bench``: load generator, measured systems, report."""
