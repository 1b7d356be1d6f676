"""The layout's contracts (pyproject.toml, import-linter): the pure core imports no adapter, no
Kafka client and no development tool; the product never imports the development tools."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
ROLES = ("core", "streams", "kafka", "ops", "dev", "client", "training")


def _lint(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_the_layouts_contracts_are_kept() -> None:
    result = _lint()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout
    assert result.stdout.count(" KEPT") == 3


def test_a_broken_contract_fails_the_check(tmp_path: Path) -> None:
    # The same tool on a contract the code is known to break (the processor uses the state
    # module): the check can fail, and names the import.
    config = tmp_path / "contracts.toml"
    config.write_text(
        '[tool.importlinter]\nroot_package = "app"\n\n'
        "[[tool.importlinter.contracts]]\n"
        'name = "known to be broken"\ntype = "forbidden"\n'
        'source_modules = ["app.core.processor"]\nforbidden_modules = ["app.core.state"]\n'
    )
    result = _lint("--config", str(config))
    assert result.returncode != 0
    assert "app.core.processor -> app.core.state" in result.stdout


def test_every_module_lives_in_a_role_package() -> None:
    # Only the entry points stay at the top of app/; everything else is in a role's package.
    top = sorted(p.name for p in (ROOT / "app").iterdir() if p.name != "__pycache__")
    assert top == sorted(["__init__.py", "__main__.py", "cli.py", "py.typed", *ROLES])
