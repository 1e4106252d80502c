"""A connection's membership of one room: where its live and replayed events meet.

Offsets make delivery exactly once: per history kind (`gift`, `credit`), an event at or below
the last offset delivered is a duplicate (the replay and the live stream overlap at the seam)
and is dropped. While the membership replays history, live frames wait in `pending` and are
released in order after.
"""

from dataclasses import dataclass, field
from typing import Any

from giftstream.realtime.frames import Encoded, batch, history_offset
from giftstream.realtime.outbound import Outbound
from giftstream.wire.codec import Codec


@dataclass(eq=False)
class Member:
    room: str
    user: str
    name: str
    is_host: bool
    codec: Codec
    outbound: Outbound
    # Receives the room frames beyond protocol v1, and `batch` frames.
    extras: bool = False
    # When it joined (ms since 1970): only members present when a chest opens may claim it.
    joined_ms: int = 0
    last_offsets: dict[str, int] = field(default_factory=dict)
    replaying: bool = True
    pending: list[tuple[Encoded, bool]] = field(default_factory=list)

    def resume_from(self, offset: int) -> None:
        self.last_offsets = {"gift": offset, "credit": offset}

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

    def deliver(self, event: Encoded, lossless: bool) -> None:
        """Deliver a live frame; it waits while the membership replays history."""
        if self.replaying:
            self.pending.append((event, lossless))
        else:
            self.replay(event, lossless)

    def replay(self, event: Encoded, lossless: bool) -> None:
        """Deliver now, each history event at most once and in order."""
        seen = any(low <= self.last_offsets.get(k, 0) for k, (low, _) in event.offsets.items())
        if seen:
            # Only at a seam: this member has had part of it; send it the rest.
            fresh = [f for f in _frames(event) if self._is_new(f) and self.wants(f.get("t"))]
            if not fresh:
                return
            event = batch(self.room, fresh)
        for kind, (_, high) in event.offsets.items():
            self.last_offsets[kind] = max(self.last_offsets.get(kind, 0), high)
        self.outbound.put(event.for_codec(self.codec), lossless)

    def _is_new(self, frame: dict[str, Any]) -> bool:
        found = history_offset(frame)
        return found is None or found[1] > self.last_offsets.get(found[0], 0)

    def finish_replay(self) -> None:
        self.replaying = False
        pending, self.pending = self.pending, []
        for event, lossless in pending:
            self.replay(event, lossless)


def _frames(event: Encoded) -> list[dict[str, Any]]:
    if event.frame.get("t") == "batch":
        frames: list[dict[str, Any]] = event.frame["frames"]
        return frames
    return [event.frame]
