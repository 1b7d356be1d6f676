"""``python -m app.dev.bench``: the benchmark's entry point (``scripts/bench`` calls it)."""

from __future__ import annotations

import sys

from app.dev.bench.cli import main

sys.exit(main())
