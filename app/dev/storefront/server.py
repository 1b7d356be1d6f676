"""The storefront's web server: pages and catalog over HTTP, actions and answers over a websocket.

Each search and click the page sends is published with the client library's publisher, and its
ranked list is pushed back over the same websocket as soon as the reader sees it.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
import uuid
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import orjson
from aiohttp import WSMsgType, web

from app.client import (
    AsyncEventPublisher,
    Delivery,
    InvalidEvent,
    PublishError,
    RecommendationReader,
    RecommendationTimeout,
)
from app.core.records import Item
from app.core.settings import Settings
from app.dev.storefront.shop import (
    Action,
    BadAction,
    Search,
    Shelf,
    item_doc,
    parse_action,
    ranked_doc,
)

STATIC = Path(__file__).parent / "static"
# How many items the catalog page lists at most.
CATALOG_PAGE = 60


def _json(doc: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(doc), status=status, content_type="application/json")


class Storefront:
    """The storefront for one catalog: an aiohttp application with its publisher and reader.

    ``start`` opens the reader (before anything is published, so no answer is missed) and the
    publisher, and serves on ``host:port`` (port 0: any free one); ``close`` ends both.
    """

    def __init__(
        self, settings: Settings, catalog: Sequence[Item], *, answer_timeout_s: float = 20.0
    ) -> None:
        self.settings = settings
        self.shelf = Shelf(catalog)
        self.answer_timeout_s = answer_timeout_s
        self.url = ""
        self._index = (STATIC / "index.html").read_bytes()
        self._reader: RecommendationReader | None = None
        self._events: AsyncEventPublisher | None = None
        self._runner: web.AppRunner | None = None
        self._sockets: weakref.WeakSet[web.WebSocketResponse] = weakref.WeakSet()
        self._tasks: set[asyncio.Task[None]] = set()

    def application(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/", self._page)
        app.router.add_get("/item/{item_id}", self._page)
        app.router.add_get("/api/catalog", self._catalog)
        app.router.add_get("/api/items/{item_id}", self._item)
        app.router.add_get("/ws", self._socket)
        app.router.add_static("/static", STATIC)
        app.on_shutdown.append(self._close_sockets)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve; the storefront's URL."""
        reader = RecommendationReader(self.settings)
        await asyncio.to_thread(reader.start)
        self._reader = reader
        self._events = AsyncEventPublisher(self.settings)
        self._runner = web.AppRunner(self.application(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = self._runner.addresses[0][1] if port == 0 else port
        self.url = f"http://{host}:{bound}/"
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._events is not None:
            await self._events.close()
            self._events = None
        if self._reader is not None:
            await asyncio.to_thread(self._reader.close)
            self._reader = None

    async def __aenter__(self) -> Storefront:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ HTTP

    async def _page(self, request: web.Request) -> web.Response:
        # One page; its script shows the catalog or the item named in the path.
        return web.Response(body=self._index, content_type="text/html", charset="utf-8")

    async def _catalog(self, request: web.Request) -> web.Response:
        genre = request.query.get("genre") or None
        items = self.shelf.popular(CATALOG_PAGE, genre)
        return _json(
            {
                "size": len(self.shelf),
                "genres": self.shelf.genres(),
                "items": [item_doc(i) for i in items],
            }
        )

    async def _item(self, request: web.Request) -> web.Response:
        item = self.shelf.get(request.match_info["item_id"])
        if item is None:
            return _json({"error": "no such item"}, status=404)
        return _json(item_doc(item))

    # ------------------------------------------------------------------ websocket

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=30)
        await ws.prepare(request)
        self._sockets.add(ws)
        # The page keeps its shopper's id; a page without one is a new shopper.
        user_id = request.query.get("user") or f"web-{uuid.uuid4().hex[:10]}"
        await ws.send_str(orjson.dumps({"type": "hello", "user": user_id}).decode())
        async for msg in ws:
            if msg.type is not WSMsgType.TEXT:
                continue
            try:
                action = parse_action(orjson.loads(msg.data))
            except (orjson.JSONDecodeError, BadAction) as exc:
                await self._send(ws, {"type": "error", "message": str(exc)})
                continue
            # Published here, in the order the shopper acted; answered as each arrives.
            sent = await self._publish(ws, user_id, action)
            if sent is not None:
                task = asyncio.create_task(self._answer(ws, action, sent))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        return ws

    def _clients(self) -> tuple[AsyncEventPublisher, RecommendationReader]:
        if self._events is None or self._reader is None:
            raise RuntimeError("the storefront is not started")
        return self._events, self._reader

    async def _publish(
        self, ws: web.WebSocketResponse, user_id: str, action: Action
    ) -> Delivery | None:
        events, _ = self._clients()
        context = {"device": "web", "source": "storefront"}
        try:
            if isinstance(action, Search):
                return await events.search(user_id, action.query, context=context)
            return await events.click(user_id, action.item_id, context=context)
        except (InvalidEvent, PublishError) as exc:
            await self._send(ws, {"type": "error", "id": action.action_id, "message": str(exc)})
            return None

    async def _answer(self, ws: web.WebSocketResponse, action: Action, sent: Delivery) -> None:
        _, reader = self._clients()
        try:
            rec = await reader.wait_for(sent.event_id, self.answer_timeout_s)
        except RecommendationTimeout as exc:
            await self._send(ws, {"type": "error", "id": action.action_id, "message": str(exc)})
            return
        # The event time is this process's clock at publication: same clock, no skew.
        pipeline_ms = time.time_ns() / 1e6 - rec.event_time_ms
        await self._send(ws, ranked_doc(action, rec, self.shelf, pipeline_ms))

    async def _send(self, ws: web.WebSocketResponse, doc: object) -> None:
        if not ws.closed:
            with contextlib.suppress(ConnectionError):
                await ws.send_str(orjson.dumps(doc).decode())

    async def _close_sockets(self, app: web.Application) -> None:
        for ws in list(self._sockets):
            await ws.close(code=1001, message=b"storefront stopping")


def serve(
    settings: Settings,
    catalog: Sequence[Item],
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    out: TextIO = sys.stdout,
) -> None:
    """Run the storefront until SIGINT or SIGTERM."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with Storefront(settings, catalog) as shop:
            url = await shop.start(host, port)
            print(
                f"storefront: {url} ({len(shop.shelf)} items); Ctrl-C stops", file=out, flush=True
            )
            await stop.wait()

    asyncio.run(main())
