"""The worker's event loop setting: uvloop by default, asyncio on request, for every loop made
after it (faust's and its consumer thread's), and a clear error otherwise."""

from __future__ import annotations

import asyncio
import builtins
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from app.core.settings import Settings, SettingsError
from app.streams.main import loop_name, use_event_loop


@pytest.fixture(autouse=True)
def _restore_policy() -> Iterator[None]:
    policy = asyncio.get_event_loop_policy()
    yield
    asyncio.set_event_loop_policy(policy)


def _new_loop_name() -> str:
    loop = asyncio.new_event_loop()
    try:
        return loop_name(loop)
    finally:
        loop.close()


def test_uvloop_is_the_default() -> None:
    assert Settings().event_loop == "uvloop"
    use_event_loop(Settings().event_loop)
    assert _new_loop_name() == "uvloop"


def test_a_thread_gets_the_chosen_loop_too() -> None:
    # mode's ServiceThread (faust's consumer thread) makes its loop with new_event_loop().
    use_event_loop("uvloop")
    names: list[str] = []
    thread = threading.Thread(target=lambda: names.append(_new_loop_name()))
    thread.start()
    thread.join()
    assert names == ["uvloop"]


def test_asyncio_goes_back_to_the_standard_loop() -> None:
    use_event_loop("uvloop")
    use_event_loop("asyncio")
    assert _new_loop_name() == "asyncio"
    loop = asyncio.new_event_loop()
    try:
        assert isinstance(loop, asyncio.BaseEventLoop)
    finally:
        loop.close()


def test_the_chosen_loop_runs_a_coroutine() -> None:
    use_event_loop("uvloop")

    async def running() -> str:
        await asyncio.sleep(0.001)
        return loop_name(asyncio.get_running_loop())

    loop = asyncio.new_event_loop()
    try:
        assert loop.run_until_complete(running()) == "uvloop"
    finally:
        loop.close()


def test_an_unknown_loop_is_refused() -> None:
    with pytest.raises(SettingsError, match="uvloop or asyncio"):
        use_event_loop("trio")


def test_uvloop_missing_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def without_uvloop(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "uvloop":
            raise ImportError("No module named 'uvloop'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_uvloop)
    before = asyncio.get_event_loop_policy()
    with pytest.raises(SettingsError, match="LIVERANK_EVENT_LOOP=asyncio"):
        use_event_loop("uvloop")
    assert asyncio.get_event_loop_policy() is before
