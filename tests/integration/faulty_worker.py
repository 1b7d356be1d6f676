"""``python -m tests.integration.faulty_worker worker``: a real liverank worker whose events
agent meets a fault when it takes a record whose value is ``FAULT:crash`` (raises),
``FAULT:hang`` (awaits forever, the event loop still turning) or ``FAULT:block`` (blocks the
event loop). A fault fires only while the file named by the environment variable
``FAULT_ONCE_FILE`` exists, and deletes it: a restarted worker meets the same record as an
ordinary malformed one (a dead letter)."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import faust

from app.cli import main
from app.streams.agents import batching

FAULT_ONCE_FILE = "FAULT_ONCE_FILE"


def install(flag: Path) -> None:
    original = batching.take_batches

    async def take_batches(
        stream: faust.Stream[Any], *args: Any, **kwargs: Any
    ) -> AsyncIterator[Any]:
        async for batch in original(stream, *args, **kwargs):
            for event in batch:
                value = event.message.value or b""
                if not (isinstance(value, bytes) and value.startswith(b"FAULT:")):
                    continue
                if not flag.exists():
                    continue
                flag.unlink()
                kind = value[len(b"FAULT:") :]
                if kind == b"crash":
                    raise RuntimeError("injected crash")
                if kind == b"hang":
                    await asyncio.Event().wait()
                if kind == b"block":
                    time.sleep(3600)
            yield batch

    batching.take_batches = take_batches  # the injected fault


if __name__ == "__main__":
    install(Path(os.environ[FAULT_ONCE_FILE]))
    sys.exit(main())
