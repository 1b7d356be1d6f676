"""How big one user's state gets: a user with endless hostile events, measured as it grows."""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator, Sequence

from app.core.records import Event, EventType, Item
from app.core.state import (
    MAX_ID_CHARS,
    MAX_TAG_CHARS,
    StateLimits,
    UserState,
    apply_event,
    encode_state,
    state_size_bound,
)

KINDS = (
    EventType.VIEW,
    EventType.CLICK,
    EventType.SEARCH,
    EventType.PURCHASE,
    EventType.ADD_TO_CART,
)
START_MS = 1_790_000_000_000


def hostile_events(n: int, alphabet: str = "x") -> Iterator[tuple[Event, Item | None]]:
    """``n`` events of one user, each a new item: every id at its schema maximum, padded with
    ``alphabet`` (try 1-, 3- and 4-byte UTF-8 characters), 32 maximal tags per item, and
    searches full of long terms."""

    def long(prefix: str, k: int, chars: int = MAX_ID_CHARS) -> str:
        return f"{prefix}{k}".ljust(chars, alphabet)

    user = long("u", 0)
    for k in range(n):
        kind = KINDS[k % len(KINDS)]
        item_id = long("i", k)
        item = Item(
            item_id,
            "t",
            long("c", k % 500),
            tags=tuple(long(f"t{k % 997}-", j, MAX_TAG_CHARS) for j in range(32)),
        )
        search = kind is EventType.SEARCH
        yield (
            Event(
                event_id=long("e", k),
                user_id=user,
                type=kind,
                event_time_ms=START_MS + k * 1000,
                event_time="-",
                item_id=None if search else item_id,
                query=" ".join(f"w{k}{alphabet * 70}{j}" for j in range(8))[:512]
                if search
                else None,
            ),
            None if search else item,
        )


def sizes(
    n: int, checkpoints: Sequence[int], limits: StateLimits, alphabet: str = "x"
) -> dict[int, int]:
    """Encoded state size, in bytes, after each checkpoint's number of events."""
    wanted = set(checkpoints)
    state: UserState | None = None
    found: dict[int, int] = {}
    for done, (event, item) in enumerate(hostile_events(n, alphabet), start=1):
        state = apply_event(state, event, item, limits, (0, done))
        if done in wanted:
            found[done] = len(encode_state(state))
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/state-size", description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--alphabet", default="x", help="the padding character of every id")
    args = parser.parse_args(argv)
    limits = StateLimits()
    checkpoints = [c for c in (1_000, 10_000, 100_000, 1_000_000, 10_000_000) if c < args.events]
    started = time.perf_counter()
    found = sizes(args.events, [*checkpoints, args.events], limits, args.alphabet)
    print("| events | state bytes |\n|---|---|")
    for count, size in found.items():
        print(f"| {count:,} | {size:,} |")
    print(
        f"\nbound at the default limits (app.core.state.state_size_bound): "
        f"{state_size_bound(limits, top_k=10, impressions=0):,} bytes without attribution "
        f"impressions (these events open none), {state_size_bound(limits, top_k=10):,} with "
        f"16; {time.perf_counter() - started:.0f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
