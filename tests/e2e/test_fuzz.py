"""A live fuzz run: random and mutated frames against a running server, over both subprotocols and
several connections at once, from a fixed seed so that a failure replays.

The frames and their mutations are in support/fuzz_frames.py, the oracle that decides what the
protocol requires for each in support/fuzz_oracle.py, the connections that send them and check
the answers in support/fuzzer.py. The run keeps a model of the money: each fuzzing viewer's coins
and the host's diamonds change exactly by the gifts acked, every acked gift is in the viewer's
ledger (and nothing else is), and `giftstream audit` is clean at the end. The counts go to a JSON
file in the test's tmp dir.
"""

import asyncio
import json
import time
from pathlib import Path

import pytest

from giftstream.domain.catalog import load_catalog
from giftstream.store import keys
from giftstream.store.connection import connect, read_stream
from giftstream.store.embedded import EmbeddedValkey
from support import Client, ServerProcess, User, audit, serving
from support.fuzz_frames import Scene
from support.fuzz_oracle import CONNECTIONS, LONG_FRAMES, SEED, SHORT_FRAMES, VIEWER_COINS
from support.fuzzer import Fuzzer, Stats

# -- the test --------------------------------------------------------------------------------


async def ledger_gift_events(url: str, user: User) -> list[str]:
    redis = connect(url)
    try:
        entries = await read_stream(redis, keys.user_ledger(user.user))
    finally:
        await redis.aclose()
    return [e[b"ref"].decode() for _, e in entries if e.get(b"kind") == b"gift"]


async def fuzz(valkey: EmbeddedValkey, tmp_path: Path, frames: int) -> None:
    """Fuzz a server of its own with `frames` frames; check it and its money after."""
    server = ServerProcess(valkey.url)
    async with serving(server) as (server, api):
        host = await api.user(role="host")
        room = await api.open_room(host)
        epoch = await room_epoch(server, host, room)
        scene = Scene(room, epoch, host)
        prices = {g["id"]: g["coins"] for g in (await api.http.get("/v1/gifts")).json()}
        viewers = [await api.user(coins=VIEWER_COINS) for _ in range(CONNECTIONS)]
        stats = Stats()
        fuzzers = [Fuzzer(i, server, scene, v, prices, stats) for i, v in enumerate(viewers)]
        started = time.monotonic()
        each = -(-frames // CONNECTIONS)  # at least `frames` in all
        await asyncio.gather(*(f.run(each) for f in fuzzers))
        elapsed = time.monotonic() - started

        figures = {**stats.figures(), "seconds": round(elapsed, 1)}
        report = tmp_path / "fuzz.json"
        report.write_text(json.dumps(figures, indent=2))
        print(
            f"\nfuzz: seed {SEED}, {stats.frames} frames in {elapsed:.1f} s:"
            f" {stats.answered}/{stats.decodable} decodable answered,"
            f" closes {dict(sorted(stats.closes.items()))}, {stats.reconnects} reconnects,"
            f" {stats.acked_gifts} gifts acked ({stats.coins_spent} coins),"
            f" {len(stats.failures)} failures; figures in {report}"
        )

        # The server is up, and serves a newcomer.
        assert (await api.http.get("/healthz")).status_code == 200
        ready = await api.http.get("/readyz")
        assert ready.status_code == 200, ready.text

        # Money moved only by acked gifts.
        for fuzzer in fuzzers:
            wallet = await api.wallet(fuzzer.viewer)
            assert wallet["coins"] == fuzzer.wallet.coins, (fuzzer.name, wallet)
            events = await ledger_gift_events(valkey.url, fuzzer.viewer)
            acked = sorted(event for event, _, _ in fuzzer.wallet.acked.values())
            assert sorted(events) == acked, fuzzer.name
        rate = load_catalog(None).rate
        diamonds = stats.coins_spent * rate.numerator // rate.denominator
        assert (await api.wallet(host))["diamonds"] == diamonds

        newcomer = await api.user(coins=10)
        client = await Client.open(server.ws_url)
        try:
            await client.auth(newcomer)
            await client.join(room)
            ack = await client.gift(room, "rose", "after-the-fuzz")
            assert ack["t"] == "ack" and ack["coins"] == 9, ack
        finally:
            await client.close()

    code, report_text = await audit(valkey.url)
    assert code == 0 and "audit clean" in report_text, report_text
    assert stats.frames >= frames
    shown = "\n".join(stats.failures[:40])
    assert not stats.failures, f"{len(stats.failures)} failures, the first ones:\n{shown}"
    assert stats.answered == stats.decodable


async def room_epoch(server: ServerProcess, host: User, room: str) -> str:
    client = await Client.open(server.ws_url)
    try:
        await client.auth(host)
        joined = await client.join(room)
    finally:
        await client.close()
    epoch: str = joined["epoch"]
    return epoch


@pytest.fixture
def long_run(request: pytest.FixtureRequest) -> None:
    """Long runs only when asked for: `pytest -m slow`."""
    if "slow" not in str(request.config.getoption("markexpr", "")):
        pytest.skip("a long run: select it with -m slow")


async def test_10000_fuzzed_frames_are_each_answered_or_closed_and_move_no_money_but_acked_gifts(
    fresh_valkey: EmbeddedValkey, tmp_path: Path
) -> None:
    await fuzz(fresh_valkey, tmp_path, SHORT_FRAMES)


@pytest.mark.slow
@pytest.mark.timeout(3600)
async def test_100000_fuzzed_frames_are_each_answered_or_closed_and_move_no_money_but_acked_gifts(
    long_run: None, fresh_valkey: EmbeddedValkey, tmp_path: Path
) -> None:
    await fuzz(fresh_valkey, tmp_path, LONG_FRAMES)
