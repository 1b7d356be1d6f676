"""What an installed wheel carries (the images install one): the package and the contracts."""

from __future__ import annotations

import doctest
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

from app.core import codec
from app.core.codec import SCHEMA_DIR, load_schema, schema_dir

ROOT = Path(__file__).resolve().parents[2]


def test_a_checkout_reads_its_own_schemas() -> None:
    assert SCHEMA_DIR == ROOT / "schemas"
    assert load_schema("event")["$id"]


def test_an_installed_wheel_reads_the_copy_under_its_prefix(tmp_path: Path) -> None:
    installed = tmp_path / "share" / "liverank" / "schemas"
    installed.mkdir(parents=True)
    assert schema_dir(tmp_path / "site-packages", tmp_path) == installed


def test_the_wheel_carries_every_schema_and_the_package(tmp_path: Path) -> None:
    # Built from a copy of the sources, so the checkout gets no build/ or egg-info.
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("app", "schemas"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
        + ["--disable-pip-version-check", "-w", str(tmp_path / "dist"), str(src)],
        check=True,
        timeout=300,
    )
    (wheel,) = (tmp_path / "dist").glob("liverank-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    data = f"liverank-{version}.data/data/share/liverank/schemas/"
    schemas = sorted(p.name for p in (ROOT / "schemas").glob("*.v1.json"))
    assert schemas and all(data + name in names for name in schemas), sorted(names)
    assert "app/core/codec.py" in names and "app/py.typed" in names


def test_codec_docstring_examples() -> None:
    result = doctest.testmod(codec)
    assert result.attempted > 0 and result.failed == 0
