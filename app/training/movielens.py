"""MovieLens-100K, read from the copy that the ``recbole`` wheel on PyPI ships (never committed)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from app.core.records import Item
from app.training.features import data_items
from app.training.sequences import SequenceData

# GroupLens itself is out of reach from our machines; PyPI is not, and RecBole's wheel carries
# the data set in its atomic-file format.
WHEEL = "recbole==1.2.1"
MEMBERS = ("ml-100k.inter", "ml-100k.item")
_PREFIX = "recbole/dataset_example/ml-100k/"


class DatasetUnavailable(RuntimeError):
    """The data set could not be downloaded or the download did not contain it."""


def fetch_ml100k(cache_dir: Path) -> Path:
    """``cache_dir/ml-100k`` holding ``ml-100k.inter`` and ``ml-100k.item``, fetched once.

    When both files are there already, nothing is downloaded. Otherwise ``pip download`` fetches
    the recbole wheel (no dependencies) into a temporary directory and the two files are
    extracted from it. Raises :class:`DatasetUnavailable` when that fails.
    """
    target = cache_dir / "ml-100k"
    if all((target / name).is_file() for name in MEMBERS):
        return target
    with tempfile.TemporaryDirectory(prefix="liverank-ml100k-") as tmp:
        cmd = [
            sys.executable,
            *("-m", "pip", "download", "--no-deps", "--only-binary=:all:"),
            *("--disable-pip-version-check", WHEEL, "-d", tmp),
        ]
        # A fixed argument list run without a shell: nothing here comes from outside.
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)  # noqa: S603
        if done.returncode != 0:
            tail = "\n".join(done.stderr.strip().splitlines()[-5:])
            raise DatasetUnavailable(
                f"could not download {WHEEL} (which ships ML-100K) with pip "
                f"(exit status {done.returncode}); is PyPI reachable?\n{tail}"
            )
        wheels = sorted(Path(tmp).glob("recbole-*.whl"))
        if not wheels:
            raise DatasetUnavailable(f"pip reported success but left no recbole wheel in {tmp}")
        return extract_ml100k(wheels[0], target)


def extract_ml100k(wheel: Path, target: Path) -> Path:
    """Copy ML-100K's ``.inter`` and ``.item`` files out of a recbole wheel into ``target``.

    Each file is written under a temporary name and renamed, so an interrupted run never leaves
    a truncated file that :func:`fetch_ml100k` would take for a finished one.
    """
    target.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as archive:
        for name in MEMBERS:
            try:
                info = archive.getinfo(_PREFIX + name)
            except KeyError:
                raise DatasetUnavailable(f"{wheel.name} has no {_PREFIX + name}") from None
            partial = target / f"{name}.partial"
            with archive.open(info) as src, partial.open("wb") as dst:
                shutil.copyfileobj(src, dst)
            partial.replace(target / name)
    return target


def _read_atomic(path: Path) -> tuple[dict[str, int], list[list[str]]]:
    """A RecBole atomic file: the column index of each field name (``user_id`` of
    ``user_id:token``) and the rows, split on tabs."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")  # RecBole's copy
    except UnicodeDecodeError:
        text = raw.decode("latin-1")  # GroupLens' original files
    lines = text.splitlines()
    if not lines:
        raise ValueError(f"{path} is empty")
    columns = {field.split(":", 1)[0]: i for i, field in enumerate(lines[0].split("\t"))}
    return columns, [line.split("\t") for line in lines[1:] if line]


def _token_order(token: str) -> tuple[int, int, str]:
    """Integer tokens in numeric order, then any others in string order."""
    return (0, int(token), "") if token.isdigit() else (1, 0, token)


def load_ml100k(directory: Path) -> SequenceData:
    """ML-100K's ratings as implicit interaction sequences (every rating counts, as in RecBole).

    Each user's interactions are ordered by timestamp; equal timestamps keep the order of the
    ``.inter`` file (a stable sort). Items (those of the ``.item`` file and any rated item missing
    there, which gets an empty title and no genres) are indexed 1..n and users 0..m-1 in
    ascending id order: numeric for integer ids, as all of ML-100K's are, so item index equals
    movie id. Titles and genres (the ``class`` column) come from the ``.item`` file; the
    original ids stay in ``item_tokens`` and ``user_tokens``.
    """
    item_columns, item_rows = _read_atomic(directory / "ml-100k.item")
    title_at, class_at = item_columns.get("movie_title"), item_columns.get("class")
    described: dict[str, tuple[str, tuple[str, ...]]] = {}
    for row in item_rows:
        title = row[title_at] if title_at is not None else ""
        genres = tuple(row[class_at].split()) if class_at is not None else ()
        described.setdefault(row[item_columns["item_id"]], (title, genres))

    columns, rows = _read_atomic(directory / "ml-100k.inter")
    user_at, item_at, time_at = columns["user_id"], columns["item_id"], columns["timestamp"]
    item_tokens = sorted(described.keys() | {row[item_at] for row in rows}, key=_token_order)
    index = {token: i for i, token in enumerate(item_tokens, start=1)}
    user_tokens = sorted({row[user_at] for row in rows}, key=_token_order)
    user_index = {token: u for u, token in enumerate(user_tokens)}
    users = np.fromiter((user_index[row[user_at]] for row in rows), np.int64, count=len(rows))
    items = np.fromiter((index[row[item_at]] for row in rows), np.int64, count=len(rows))
    stamps = np.fromiter((float(row[time_at]) for row in rows), np.float64, count=len(rows))

    # Stable sorts, by time and then by user: per user in time order, ties in file order.
    order = np.argsort(stamps, kind="stable")
    order = order[np.argsort(users[order], kind="stable")]
    bounds = np.cumsum(np.bincount(users, minlength=len(user_tokens)))[:-1]
    sequences: list[NDArray[np.int64]] = np.split(items[order], bounds)
    times_ms = (stamps[order] * 1000.0).astype(np.int64)
    return SequenceData(
        times=tuple(np.split(times_ms, bounds)),
        n_items=len(item_tokens),
        item_tokens=("", *item_tokens),
        item_titles=("", *(described.get(t, ("", ()))[0] for t in item_tokens)),
        item_genres=((), *(described.get(t, ("", ()))[1] for t in item_tokens)),
        user_tokens=tuple(user_tokens),
        sequences=tuple(sequences),
    )


def movielens_catalog(data: SequenceData) -> list[Item]:
    """ML-100K's movies as catalog items (item id = movie id, the model package's keys): the first
    genre is the category, the others are tags, the popularity prior is the rating count in the
    training part of the leave-one-out split (each user's last two ratings left out, as training
    leaves them out: no future information, and the number the model learned from)."""
    counts = np.bincount(
        np.concatenate([s[:-2] if len(s) >= 3 else s for s in data.sequences]),
        minlength=data.n_items + 1,
    )
    return data_items(data, counts, untitled="Movie")
