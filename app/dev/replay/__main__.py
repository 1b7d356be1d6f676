"""``python -m app.dev.replay``: the replay's entry point (``scripts/replay`` calls it)."""

from __future__ import annotations

import sys

from app.dev.replay.cli import main

sys.exit(main())
