"""The client (clients/python) keeps its own copy of what it shares with the server, so that it
needs no server code: its error codes, subprotocol names, id bound, version and dependency
bounds. Each copy is held here to the server's, so the two cannot drift apart."""

import ast
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

import giftstream_client
from giftstream.errors import ERRORS
from giftstream.wire import codec as server_codec
from giftstream.wire.fields import MAX_ID_LENGTH
from giftstream_client import _client, _codec

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "clients" / "python"


def project(folder: Path) -> dict[str, object]:
    table: dict[str, object] = tomllib.loads((folder / "pyproject.toml").read_text())["project"]
    return table


def bounds(folder: Path) -> dict[str, str]:
    deps = project(folder)["dependencies"]
    assert isinstance(deps, list)
    return {r.name: str(r.specifier) for r in map(Requirement, deps)}


def test_the_client_knows_every_error_code_of_the_server_and_no_other() -> None:
    client_codes = {code.name: code.value for code in giftstream_client.ErrorCode}
    server_codes = {code.name: code.value for code in ERRORS}

    assert client_codes == server_codes


def test_the_client_speaks_the_server_subprotocols_under_their_names() -> None:
    assert _codec.MSGPACK.subprotocol == server_codec.MSGPACK.subprotocol
    assert _codec.JSON.subprotocol == server_codec.JSON.subprotocol
    assert (_codec.MSGPACK.binary, _codec.JSON.binary) == (True, False)


def test_the_client_and_the_server_encode_a_frame_alike() -> None:
    frame = {"t": "gift", "id": "é-1", "room": "r1", "gift": "rose", "count": 3}

    assert _codec.MSGPACK.encode(frame) == server_codec.MSGPACK.encode(frame)
    assert _codec.JSON.encode(frame) == server_codec.JSON.encode(frame)


def test_the_client_bounds_a_gift_id_as_the_server_does() -> None:
    assert _client.MAX_ID_LENGTH == MAX_ID_LENGTH


def test_the_client_has_the_server_version_and_its_dependency_bounds() -> None:
    server = bounds(ROOT)

    assert project(CLIENT)["version"] == project(ROOT)["version"]
    client = bounds(CLIENT)
    assert set(client) == {"websockets", "msgpack"}
    assert client == {name: server[name] for name in client}


def test_no_module_of_the_client_imports_the_server() -> None:
    for path in (CLIENT / "giftstream_client").glob("*.py"):
        tree = ast.parse(path.read_text())
        imported = [
            name
            for node in ast.walk(tree)
            for name in (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
        ]
        assert not [n for n in imported if n.split(".")[0] == "giftstream"], path
