"""A small web storefront on the live worker: catalog, search and item pages, each search and
click published with the client library and its ranked list shown as it arrives, timed.

``scripts/demo --web`` serves it next to the demo's broker and worker.
"""

from __future__ import annotations

from app.dev.storefront.server import Storefront, serve

__all__ = ["Storefront", "serve"]
