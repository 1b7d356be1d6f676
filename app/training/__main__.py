"""``python -m app.training``: see ``app.training.cli``."""

from __future__ import annotations

import sys

from app.training.cli import main

sys.exit(main())
