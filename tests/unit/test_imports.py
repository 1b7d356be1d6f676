"""The consumer runs without the training extra: nothing it imports pulls in torch."""

from __future__ import annotations

import subprocess
import sys


def test_worker_modules_do_not_import_torch() -> None:
    code = (
        "import sys, app.streams.worker, app.cli, app.dev.demo, app.core.processor\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "assert not any(m.startswith('app.training.train') for m in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
