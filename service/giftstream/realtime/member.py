"""A connection's membership of one room: where its live and replayed events meet.

Offsets make delivery exactly once: per history kind (`gift`, `credit`), an event at or below
the last offset delivered is a duplicate (the replay and the live stream overlap at the seam)
and is dropped. While the membership replays history, live frames wait in `pending` and are
released in order after.

No I/O here: what passes the filter goes to the member's `Sink` (the connection's Outbound).
"""

from dataclasses import dataclass, field
from typing import Any, Protocol

from giftstream.realtime.frames import Encoded, batch, history_offset
from giftstream.wire.codec import Codec


class Sink(Protocol):
    """Where a member's framed messages go (realtime.outbound.Outbound)."""

    def put(self, frame: bytes, lossless: bool) -> None: ...
    def put_all(self, frames: list[tuple[bytes, bool]]) -> None: ...
    def keeps_lossy(self) -> bool: ...


@dataclass(eq=False, slots=True)
class Member:
    room: str
    user: str
    name: str
    is_host: bool
    codec: Codec
    outbound: Sink
    # Receives the room frames beyond protocol v1, and `batch` frames.
    extras: bool = False
    # When it joined (ms since 1970): only members present when a chest opens may claim it.
    joined_ms: int = 0
    last_offsets: dict[str, int] = field(default_factory=dict)
    replaying: bool = True
    pending: list[tuple[Encoded, bool]] = field(default_factory=list)

    def resume_from(self, offset: int) -> None:
        self.last_offsets = {"gift": offset, "credit": offset}

    def resume_after(self, epoch: str, offset: int, room_epoch: str) -> int:
        """Resume after the client's last offset in `epoch`; returns the offset to replay the
        history after. An offset of another epoch (the room's history was reset) means nothing:
        the whole history is replayed."""
        start = offset if epoch == room_epoch else 0
        self.resume_from(start)
        return start

    @property
    def last_offset(self) -> int:
        return min(self.last_offsets.values(), default=0)

    def wants(self, kind: object) -> bool:
        """Every member gets `gift` frames, the host its `credit` frames, and members that
        opted in the extension frames."""
        if kind == "gift":
            return True
        if kind == "credit":
            return self.is_host
        if kind == "session_summary":
            return self.is_host and self.extras
        return self.extras

    def deliver(self, events: list[tuple[Encoded, bool]]) -> None:
        """Deliver live frames, in one write; they wait while the membership replays history."""
        if self.replaying:
            self.pending.extend(events)
            return
        out = []
        for event, lossless in events:
            # A message mixing lossless frames with lossy ones goes as its lossless frames alone
            # when the lossy ones would only deepen the backlog of a member behind.
            if event.essential is not None and not self.outbound.keeps_lossy():
                event = event.essential
            framed = self._admit(event)
            if framed is not None:
                out.append((framed, lossless))
        self.outbound.put_all(out)

    def replay(self, event: Encoded, lossless: bool) -> None:
        """Deliver now, each history event at most once and in order."""
        framed = self._admit(event)
        if framed is not None:
            self.outbound.put(framed, lossless)

    def _admit(self, event: Encoded) -> bytes | None:
        """The bytes to send of `event` (None when all of it was delivered before), counted as
        delivered."""
        last = self.last_offsets
        seen = False
        for kind, (low, _) in event.offsets.items():  # a loop: cheaper than any() of a genexpr
            if low <= last.get(kind, 0):
                seen = True
                break
        if seen:
            # Only at a seam: this member has had part of it; send it the rest.
            fresh = [f for f in _frames(event) if self._is_new(f) and self.wants(f.get("t"))]
            if not fresh:
                return None
            event = batch(self.room, fresh)
        for kind, (_, high) in event.offsets.items():
            if high > last.get(kind, 0):
                last[kind] = high
        return event.framed(self.codec)

    def _is_new(self, frame: dict[str, Any]) -> bool:
        found = history_offset(frame)
        return found is None or found[1] > self.last_offsets.get(found[0], 0)

    def finish_replay(self) -> None:
        self.replaying = False
        pending, self.pending = self.pending, []
        self.deliver(pending)


def _frames(event: Encoded) -> list[dict[str, Any]]:
    if event.frame.get("t") == "batch":
        frames: list[dict[str, Any]] = event.frame["frames"]
        return frames
    return [event.frame]
