"""Server frames built once: every size of header, both opcodes, parsed back by websockets."""

from collections.abc import Generator

from hypothesis import given
from hypothesis import strategies as st
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from giftstream.wire.wsframe import server_frame


def parse(data: bytes) -> tuple[Frame, bytes]:
    """The first frame in `data` as a client parses it, and the bytes after it."""
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    parser: Generator[None, None, Frame] = Frame.parse(reader.read_exact, mask=False)
    try:
        next(parser)
    except StopIteration as done:
        return done.value, bytes(reader.buffer)
    raise AssertionError("the frame is incomplete")


def test_each_length_encoding_parses_back_to_the_same_binary_message() -> None:
    for size in (0, 1, 125, 126, 127, 65535, 65536, 70000):
        frame, rest = parse(server_frame(b"x" * size))
        assert (frame.opcode, frame.fin, len(frame.data), rest) == (Opcode.BINARY, True, size, b"")


def test_a_str_payload_is_a_text_message_in_utf8() -> None:
    frame, _ = parse(server_frame("héllo 🌹"))
    assert frame.opcode is Opcode.TEXT
    assert bytes(frame.data).decode() == "héllo 🌹"


@given(st.lists(st.binary(max_size=300), min_size=1, max_size=5))
def test_messages_written_back_to_back_parse_one_by_one(payloads: list[bytes]) -> None:
    rest = b"".join(server_frame(p) for p in payloads)
    for payload in payloads:
        frame, rest = parse(rest)
        assert frame.data == payload
    assert rest == b""
