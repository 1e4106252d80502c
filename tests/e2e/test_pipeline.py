"""The gift path's auto-pipeline against a real Valkey: commands issued together share one
round trip, each gets its own reply or error, and deferred commands ride along or linger."""

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.exceptions import ResponseError

from giftstream import metrics
from giftstream.store.connection import Redis, connect
from giftstream.store.embedded import EmbeddedValkey
from giftstream.store.pipeline import AutoPipeline

LINGER_S = 0.05


@pytest.fixture
async def redis(valkey: EmbeddedValkey) -> AsyncIterator[Redis]:
    client = connect(valkey.url)
    yield client
    await client.aclose()


def counted(name: str) -> float:
    return metrics.REGISTRY.get_sample_value(name) or 0.0


def round_trips() -> float:
    return counted("giftstream_redis_round_trips_total")


def commands() -> float:
    return counted("giftstream_redis_commands_total")


async def test_commands_issued_together_share_one_round_trip_and_get_their_own_replies(
    redis: Redis,
) -> None:
    pipe = AutoPipeline(redis, max_in_flight=4, max_commands=512, linger_s=LINGER_S)
    trips, sent = round_trips(), commands()
    replies = await asyncio.gather(*(pipe.execute_command("ECHO", f"m{i}") for i in range(100)))
    assert replies == [f"m{i}".encode() for i in range(100)]
    assert (round_trips() - trips, commands() - sent) == (1, 100)


async def test_an_error_reply_fails_only_its_own_caller(redis: Redis) -> None:
    pipe = AutoPipeline(redis, max_in_flight=4, max_commands=512, linger_s=LINGER_S)
    results = await asyncio.gather(
        pipe.execute_command("ECHO", "before"),
        pipe.execute_command("FCALL", "no_such_function", 0),
        pipe.execute_command("ECHO", "after"),
        return_exceptions=True,
    )
    assert results[0] == b"before" and results[2] == b"after"
    assert isinstance(results[1], ResponseError)


async def test_commands_issued_while_the_pipelines_are_out_go_together_in_the_next(
    redis: Redis,
) -> None:
    pipe = AutoPipeline(redis, max_in_flight=1, max_commands=512, linger_s=LINGER_S)
    trips = round_trips()
    first = asyncio.ensure_future(pipe.execute_command("ECHO", "first"))
    await asyncio.sleep(0)  # the first pipeline is out now
    later = [asyncio.ensure_future(pipe.execute_command("ECHO", str(i))) for i in range(50)]
    await asyncio.gather(first, *later)
    assert round_trips() - trips == 2


async def test_a_pipeline_holds_at_most_max_commands(redis: Redis) -> None:
    pipe = AutoPipeline(redis, max_in_flight=4, max_commands=10, linger_s=LINGER_S)
    trips = round_trips()
    await asyncio.gather(*(pipe.execute_command("ECHO", str(i)) for i in range(35)))
    assert round_trips() - trips == 4


async def test_a_deferred_command_rides_with_the_next_pipeline(redis: Redis) -> None:
    pipe = AutoPipeline(redis, max_in_flight=4, max_commands=512, linger_s=60.0)
    await redis.set("pipeline:deferred", "1")
    trips = round_trips()
    pipe.defer("DEL", "pipeline:deferred")
    await pipe.execute_command("ECHO", "carrier")
    assert round_trips() - trips == 1
    assert await redis.exists("pipeline:deferred") == 0


async def test_a_deferred_command_alone_goes_after_the_linger(redis: Redis) -> None:
    pipe = AutoPipeline(redis, max_in_flight=4, max_commands=512, linger_s=LINGER_S)
    await redis.delete("pipeline:alone")
    pipe.defer("RPUSH", "pipeline:alone", "settled")
    assert await redis.llen("pipeline:alone") == 0  # nothing sent it yet
    # BLPOP returns once the deferred command has reached the store, with nothing else sent.
    assert await redis.blpop(["pipeline:alone"], timeout=5) == (b"pipeline:alone", b"settled")


async def test_close_sends_what_is_deferred(redis: Redis) -> None:
    pipe = AutoPipeline(redis, max_in_flight=4, max_commands=512, linger_s=60.0)
    await redis.set("pipeline:closing", "1")
    pipe.defer("DEL", "pipeline:closing")
    await pipe.aclose()
    assert await redis.exists("pipeline:closing") == 0


async def test_close_sends_what_is_deferred_behind_a_full_set_of_pipelines(redis: Redis) -> None:
    pipe = AutoPipeline(redis, max_in_flight=1, max_commands=512, linger_s=60.0)
    await redis.set("pipeline:behind", "1")
    trips = round_trips()
    first = asyncio.ensure_future(pipe.execute_command("ECHO", "first"))
    for _ in range(10):  # a few turns of the loop: queued, flushed, sent
        if round_trips() > trips:
            break
        await asyncio.sleep(0)
    assert round_trips() == trips + 1  # the only pipeline allowed is out now
    pipe.defer("DEL", "pipeline:behind")
    await pipe.aclose()
    assert await first == b"first"
    assert await redis.exists("pipeline:behind") == 0
