"""The storefront in a real browser (Debian's chromium through Playwright) against a real worker:
a search shows its ranked results, each click the next items, live, with their latency."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Page, async_playwright

from app.core.settings import Settings
from app.dev.storefront import Storefront
from app.dev.synthetic import make_catalog
from tests.integration.kafka_io import KafkaIO
from tests.integration.worker_process import WorkerProcess, isolated_settings, running_worker

pytestmark = pytest.mark.integration

# Synthetic: eight genres, jazz among them, so "jazz" has a right answer to check.
CATALOG = make_catalog(400)
GENRE = {item.item_id: item.category for item in CATALOG}
# Generous: the machine may be busy; nothing here measures speed (the page's figures are printed).
ANSWER_S = 60.0
TOP = 5

# What the page shows after its latest update: the list as rendered and the latency it displays.
READ_LIST = """() => {
  const latency = document.getElementById("latency");
  return {
    updates: Number(document.getElementById("live").dataset.updates || 0),
    kind: document.getElementById("recs").dataset.kind,
    title: document.getElementById("live-title").textContent,
    items: [...document.querySelectorAll("#recs a.card")].map((a) => ({
      id: a.dataset.itemId,
      genre: a.querySelector(".meta").textContent.split(" · ")[0],
    })),
    ms: Number(latency.dataset.ms),
    pipelineMs: Number(latency.dataset.pipelineMs),
    shown: latency.textContent,
  };
}"""


def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.fail(
            "chromium is not installed: scripts/setup installs it (apt-get install chromium); "
            "this test drives it through Playwright and never downloads a browser of its own"
        )
    return path


@pytest.fixture(scope="module")
def settings(bootstrap: str, module_tmp: Path) -> Settings:
    return isolated_settings(bootstrap, module_tmp)


@pytest.fixture(scope="module")
def worker(settings: Settings, kafka: KafkaIO, module_tmp: Path) -> Iterator[WorkerProcess]:
    with running_worker(settings, kafka, CATALOG, module_tmp / "worker.log") as proc:
        yield proc


async def next_list(page: Page, seen: int) -> dict[str, Any]:
    """The page's list once it has updated past ``seen`` updates."""
    await page.wait_for_function(
        "seen => Number(document.getElementById('live').dataset.updates || 0) > seen",
        arg=seen,
        timeout=ANSWER_S * 1000,
    )
    shown: dict[str, Any] = await page.evaluate(READ_LIST)
    return shown


def ids(shown: dict[str, Any]) -> list[str]:
    return [item["id"] for item in shown["items"]]


async def test_search_and_clicks_show_live_ranked_lists(
    settings: Settings,
    worker: WorkerProcess,
    tmp_path: Path,
    record_property: Any,
) -> None:
    path = chromium()
    started = time.monotonic()
    latencies: list[tuple[str, float, float]] = []
    errors: list[str] = []
    async with Storefront(settings, CATALOG, answer_timeout_s=ANSWER_S) as shop:
        url = await shop.start()
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=path, headless=True)
            try:
                page = await browser.new_page(viewport={"width": 1280, "height": 1000})
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                await page.goto(url)
                await page.wait_for_selector("#catalog-items a.card")
                await page.wait_for_selector("#status.up")

                # A search: its results, ranked, with jazz first.
                await page.fill("#query", "jazz")
                await page.press("#query", "Enter")
                found = await next_list(page, 0)
                assert found["kind"] == "search"
                assert found["title"] == "Results for “jazz”"
                top = found["items"][:TOP]
                assert len(top) == TOP
                # The genre the page shows is the catalog's, and it is jazz.
                assert [item["genre"] for item in top] == [GENRE[item["id"]] for item in top]
                assert {item["genre"] for item in top} == {"jazz"}
                latencies.append(("search", found["ms"], found["pipelineMs"]))

                # A click on the first result: its page, and the next items instead.
                first = ids(found)[0]
                await page.locator(f'#recs a.card[data-item-id="{first}"]').click()
                await page.wait_for_url(f"**/item/{first}")
                after = await next_list(page, found["updates"])
                assert after["kind"] == "next_items"
                assert await page.text_content("#item h1") == shop.shelf.by_id[first].title
                assert after["items"]
                assert ids(after) != ids(found)
                assert first not in ids(after)
                latencies.append(("click", after["ms"], after["pipelineMs"]))

                # A click on a recommended item: the list changes again, showing neither.
                second = ids(after)[0]
                await page.locator(f'#recs a.card[data-item-id="{second}"]').click()
                await page.wait_for_url(f"**/item/{second}")
                again = await next_list(page, after["updates"])
                assert again["kind"] == "next_items"
                assert again["items"]
                assert ids(again) != ids(after)
                assert not {first, second} & set(ids(again))
                latencies.append(("click", again["ms"], again["pipelineMs"]))

                for shot in [tmp_path / "storefront.png", os.environ.get("STOREFRONT_SCREENSHOT")]:
                    if shot:
                        await page.screenshot(path=str(shot))
            finally:
                await browser.close()
    assert errors == []
    # The figures the page displayed, for people to read: not asserted (no test depends on speed).
    wall_s = time.monotonic() - started
    for i, (kind, ms, pipeline_ms) in enumerate(latencies):
        record_property(f"latency_{i}_{kind}_ms", ms)
        print(
            f"[storefront] {kind}: {ms:.1f} ms from the action to the list on the page "
            f"({pipeline_ms:.1f} ms publish to answer at the server)"
        )
    print(f"[storefront] {wall_s:.1f} s in the storefront; screenshot in {tmp_path}")
