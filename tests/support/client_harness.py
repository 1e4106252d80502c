"""What the client tests share: a quick backoff, polling, and the room history from the store."""

from collections.abc import Sized

from giftstream_client import Backoff, CreditEvent, Event, GiftEvent

from .waiting import eventually

# Reconnects within a tenth of a second, and keeps trying through a test's offline windows.
QUICK = Backoff(base_s=0.01, max_delay_s=0.1, max_attempts=10_000, max_elapsed_s=30.0)
# Not streakable: no streak-closing frames among the events.
GIFT = "confetti"
GIFT_COINS = 100
WAIT_S = 15.0


async def grown(items: Sized, by: int, within_s: float = WAIT_S) -> None:
    """Wait until `items` has grown by `by` from its length now."""
    target = len(items) + by
    await eventually(lambda: len(items) >= target, within_s)


def positions(events: list[Event]) -> list[tuple[str, int, str]]:
    """(type, offset, event id) of the gift and credit events, as the history names them."""
    return [
        ("gift" if isinstance(e, GiftEvent) else "credit", e.offset, e.event)
        for e in events
        if isinstance(e, GiftEvent | CreditEvent)
    ]
