"""The ML-100K loader on tiny atomic files, and fetching from a fake wheel (no network)."""

from __future__ import annotations

import subprocess
import zipfile
from pathlib import Path
from typing import Any

import pytest

from app.training.movielens import DatasetUnavailable, extract_ml100k, fetch_ml100k, load_ml100k

ITEM = (
    "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
    "10\tToy Story\t1995\tAnimation Children's Comedy\n"
    "2\tGoldenEye\t1995\tAction Adventure Thriller\n"
    "7\tMisérables, Les\t1995\tDrama\n"
)
# User 9 rates 2 and then 10 and 7 at the same moment (file order decides); user 10 rates 7
# and 33, an item the .item file lacks; user 9 has an earlier rating further down the file.
INTER = (
    "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    "9\t2\t3\t200\n"
    "10\t33\t1\t50\n"
    "9\t10\t5\t300\n"
    "9\t7\t4\t300\n"
    "10\t7\t2\t40\n"
    "9\t33\t4\t100\n"
)


def write_dataset(directory: Path, encoding: str = "utf-8") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ml-100k.item").write_text(ITEM, encoding=encoding)
    (directory / "ml-100k.inter").write_text(INTER, encoding=encoding)
    return directory


def test_load_indexes_items_and_users_by_numeric_id(tmp_path: Path) -> None:
    data = load_ml100k(write_dataset(tmp_path))
    assert data.n_items == 4
    assert data.item_tokens == ("", "2", "7", "10", "33")  # numeric, not string, order
    assert data.item_titles == ("", "GoldenEye", "Misérables, Les", "Toy Story", "")
    assert data.item_genres[3] == ("Animation", "Children's", "Comedy")
    assert data.item_genres[4] == ()  # rated but missing from the .item file
    assert data.user_tokens == ("9", "10")
    assert data.types is None and data.queries is None


def test_load_orders_by_time_with_ties_in_file_order(tmp_path: Path) -> None:
    data = load_ml100k(write_dataset(tmp_path))
    tokens = [[data.item_tokens[i] for i in seq] for seq in data.sequences]
    assert tokens == [["33", "2", "10", "7"], ["7", "33"]]
    assert all(seq.dtype.name == "int64" for seq in data.sequences)
    assert data.n_interactions == 6


def test_load_reads_latin1_files_too(tmp_path: Path) -> None:
    data = load_ml100k(write_dataset(tmp_path, encoding="latin-1"))
    assert data.item_titles[2] == "Misérables, Les"


def test_load_finds_columns_by_name(tmp_path: Path) -> None:
    write_dataset(tmp_path)
    (tmp_path / "ml-100k.inter").write_text(
        "timestamp:float\titem_id:token\tuser_id:token\n2\t2\t1\n1\t10\t1\n", encoding="utf-8"
    )
    data = load_ml100k(tmp_path)
    assert [[data.item_tokens[i] for i in seq] for seq in data.sequences] == [["10", "2"]]


def make_wheel(path: Path, members: tuple[str, ...] = ("ml-100k.inter", "ml-100k.item")) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("recbole/__init__.py", "")
        for name in members:
            body = INTER if name.endswith("inter") else ITEM
            archive.writestr(f"recbole/dataset_example/ml-100k/{name}", body)
    return path


def test_extract_copies_the_two_files(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path / "recbole-1.2.1-py3-none-any.whl")
    target = extract_ml100k(wheel, tmp_path / "out" / "ml-100k")
    assert sorted(p.name for p in target.iterdir()) == ["ml-100k.inter", "ml-100k.item"]
    assert load_ml100k(target).n_interactions == 6


def test_extract_reports_a_wheel_without_the_data(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path / "recbole-1.2.1-py3-none-any.whl", members=("ml-100k.inter",))
    with pytest.raises(DatasetUnavailable, match="ml-100k.item"):
        extract_ml100k(wheel, tmp_path / "out")


def test_fetch_uses_the_cache_without_running_pip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_dataset(tmp_path / "ml-100k")

    def no_pip(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("pip must not run when the files are cached")

    monkeypatch.setattr("app.training.movielens.subprocess.run", no_pip)
    assert fetch_ml100k(tmp_path) == tmp_path / "ml-100k"


def test_fetch_downloads_the_wheel_and_extracts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commands: list[list[str]] = []

    def fake_pip(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        commands.append(cmd)
        make_wheel(Path(cmd[cmd.index("-d") + 1]) / "recbole-1.2.1-py3-none-any.whl")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr("app.training.movielens.subprocess.run", fake_pip)
    directory = fetch_ml100k(tmp_path / "cache")
    assert directory == tmp_path / "cache" / "ml-100k"
    assert load_ml100k(directory).n_items == 4
    assert commands[0][1:4] == ["-m", "pip", "download"]
    assert {"--no-deps", "--only-binary=:all:", "recbole==1.2.1"} <= set(commands[0])
    assert not list(directory.glob("*.partial"))


def test_fetch_failure_is_explained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_pip(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found")

    monkeypatch.setattr("app.training.movielens.subprocess.run", failing_pip)
    with pytest.raises(DatasetUnavailable, match="No matching distribution"):
        fetch_ml100k(tmp_path)
    assert not (tmp_path / "ml-100k" / "ml-100k.inter").exists()
