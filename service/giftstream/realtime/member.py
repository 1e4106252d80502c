"""A connection's membership of one room: where its live and replayed events meet.

Offsets make delivery exactly once: an event at or below the last offset delivered is a
duplicate (the replay and the live stream overlap at the seam) and is dropped. While the
membership replays history, live events wait in `pending` and are released in order after.
"""

from dataclasses import dataclass, field

from giftstream.realtime.frames import Encoded
from giftstream.realtime.outbound import Outbound
from giftstream.wire.codec import Codec


@dataclass(eq=False)
class Member:
    room: str
    user: str
    is_host: bool
    codec: Codec
    outbound: Outbound
    last_offset: int = 0
    replaying: bool = True
    pending: list[tuple[Encoded, bool]] = field(default_factory=list)

    def wants(self, kind: object) -> bool:
        """Every member gets the room's frames; only the host gets its `credit` frames."""
        return kind != "credit" or self.is_host

    def deliver(self, event: Encoded, lossless: bool) -> None:
        """Deliver a live frame; it waits while the membership replays history."""
        if self.replaying:
            self.pending.append((event, lossless))
        else:
            self.replay(event, lossless)

    def replay(self, event: Encoded, lossless: bool) -> None:
        """Deliver now; a frame with an `offset` is delivered at most once, in order."""
        if event.offset is not None:
            if event.offset <= self.last_offset:
                return
            self.last_offset = event.offset
        self.outbound.put(event.for_codec(self.codec), lossless)

    def finish_replay(self) -> None:
        self.replaying = False
        pending, self.pending = self.pending, []
        for event, lossless in pending:
            self.replay(event, lossless)
