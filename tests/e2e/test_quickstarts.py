"""The README's and docs/client.md's Python programs, run as written against `giftstream demo`:
a quickstart that drifts from the service fails here. docs/client.md's runs from a venv that
holds the client alone, installed as the document says (`pip install clients/python`)."""

import ast
import asyncio
import re
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from support import ServerProcess, run_child

ROOT = Path(__file__).resolve().parents[2]
# The complete programs of each document (a fragment such as an `except` clause is not one).
PROGRAMS = {"README.md": 1, "docs/client.md": 1}
RUN_TIMEOUT_S = 60.0


def programs(document: str) -> list[str]:
    """The document's ```python blocks that are whole programs (they call asyncio.run)."""
    blocks = re.findall(r"^```python\n(.*?)^```$", (ROOT / document).read_text(), re.M | re.S)
    return [b for b in blocks if "asyncio.run(" in b]


@pytest.fixture(scope="module")
async def demo() -> AsyncIterator[ServerProcess]:
    """`giftstream demo` on a free port, with its embedded Valkey in a folder of its own."""
    data = Path(tempfile.mkdtemp(prefix="gs-"))
    server = ServerProcess(
        redis_url=None, data_dir=data / "data", command="demo", args=["--rooms", "1"]
    )
    await asyncio.to_thread(server.start)
    try:
        yield server
    finally:
        await asyncio.to_thread(server.stop)
        shutil.rmtree(data, ignore_errors=True)


async def run(
    program: str, tmp_path: Path, server: ServerProcess, python: str = sys.executable
) -> str:
    path = tmp_path / "quickstart.py"
    path.write_text(program)
    code, text, _ = await run_child(
        [python, str(path)], env={"DEMO_URL": server.base_url}, timeout_s=RUN_TIMEOUT_S
    )
    assert code == 0, text
    return text


@pytest.mark.parametrize("document", sorted(PROGRAMS))
def test_each_document_still_has_its_complete_programs(document: str) -> None:
    assert len(programs(document)) == PROGRAMS[document]


async def test_the_readme_session_runs_as_written_and_gets_its_ack(
    demo: ServerProcess, tmp_path: Path
) -> None:
    (program,) = programs("README.md")

    out = await run(program, tmp_path, demo)

    frames = [ast.literal_eval(line) for line in out.splitlines()]
    assert [f["t"] for f in frames[:2]] == ["welcome", "joined"], out
    ack = next(f for f in frames if f["t"] == "ack")
    gift = next(f for f in frames if f["t"] == "gift")
    assert len(frames) == 4 and (ack["id"], ack["coins"]) == ("my-gift-1", 95), out
    assert (gift["event"], gift["count"]) == (ack["event"], 5), out


async def test_the_client_quickstart_runs_as_written_and_sees_its_own_gift(
    demo: ServerProcess, tmp_path: Path, client_python: Path
) -> None:
    (program,) = programs("docs/client.md")

    out = await run(program, tmp_path, demo, str(client_python))

    sent, *events = out.splitlines()
    assert re.fullmatch(r"gift e\w+ sent, 97 coins left", sent), out
    event = sent.split()[1]
    assert events and events[-1].startswith("GiftEvent(") and f"event='{event}'" in events[-1]
