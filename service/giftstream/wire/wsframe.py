"""WebSocket frames from server to client (RFC 6455 §5.2), built once and written as they are.

A server's frames are unmasked, so the bytes of one message are the same for every connection:
a room event is framed once per subprotocol and the same bytes go to each member.
"""

import struct

OPCODE_TEXT = 0x1
OPCODE_BINARY = 0x2
_FIN = 0x80
_LEN_16 = 126
_LEN_64 = 127


def server_frame(payload: bytes | str) -> bytes:
    """One unfragmented, unmasked message: binary for bytes, text for str (UTF-8)."""
    if isinstance(payload, str):
        data, opcode = payload.encode(), OPCODE_TEXT
    else:
        data, opcode = payload, OPCODE_BINARY
    size = len(data)
    if size < _LEN_16:
        header = bytes((_FIN | opcode, size))
    elif size < 1 << 16:
        header = struct.pack("!BBH", _FIN | opcode, _LEN_16, size)
    else:
        header = struct.pack("!BBQ", _FIN | opcode, _LEN_64, size)
    return header + data
