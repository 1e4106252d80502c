"""Buying coins, spending limits, reward points, gifts to videos, earnings and cash-out."""

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from giftstream.domain.economy import CHANNELS, PriceError, UnsoldRegion
from giftstream.errors import InvalidField, NotFound, UnavailableInRegion
from giftstream.gifting import Sender
from giftstream.http.common import (
    current_account,
    int_field,
    json_body,
    path_id,
    query_int,
    required_int,
    required_text,
    runtime_of,
    text_field,
)
from giftstream.store import earnings, rooms
from giftstream.wallet import utc_now
from giftstream.wire import fields
from giftstream.wire.requests import MAX_GIFT_COUNT, SendGift

MAX_RECEIPT_LENGTH = 128
MAX_COINS = 10**12
MAX_GUARDIAN_CODE = 64


def _channel(value: object) -> str:
    if value is None:
        return "web"
    if value not in CHANNELS:
        raise InvalidField(f"'channel' must be one of {', '.join(CHANNELS)}")
    return str(value)


def _region(value: object) -> str:
    if value is None:
        return "*"
    # Either case is taken; only ASCII is put in capitals ("ß".upper() is "SS").
    if isinstance(value, str) and value.isascii():
        value = value.upper()
    return fields.region(value)


async def packages(request: Request) -> Response:
    """The price list for a region and channel: exactly what a buyer pays."""
    runtime = runtime_of(request)
    region = _region(request.query_params.get("region"))
    channel = _channel(request.query_params.get("channel"))
    try:
        quotes = runtime.economy.price_list(region, channel, utc_now())
    except UnsoldRegion as e:
        raise UnavailableInRegion(str(e)) from e
    return JSONResponse([q.public() for q in quotes])


async def quote(request: Request) -> Response:
    """The price of a custom amount of coins (web only)."""
    runtime = runtime_of(request)
    region = _region(request.query_params.get("region"))
    channel = _channel(request.query_params.get("channel"))
    coins = query_int(request, "coins", 0, MAX_COINS)
    if coins is None:
        raise InvalidField("'coins' is required")
    try:
        priced = runtime.economy.quote(region, channel, utc_now(), coins=coins)
    except UnsoldRegion as e:
        raise UnavailableInRegion(str(e)) from e
    except PriceError as e:
        raise InvalidField(str(e)) from e
    return JSONResponse(priced.public())


async def recharge(request: Request) -> Response:
    runtime = runtime_of(request)
    account = await current_account(request)
    body = await json_body(request, {"package", "coins", "region", "channel", "receipt"})
    receipt = required_text(body, "receipt", MAX_RECEIPT_LENGTH)
    package = text_field(body, "package", required=False)
    coins = int_field(body, "coins", 1, MAX_COINS)
    if "region" not in body:
        raise InvalidField("'region' is required")
    done = await runtime.wallet.recharge(
        account,
        _region(body["region"]),
        _channel(body.get("channel")),
        receipt,
        package,
        coins,
        utc_now(),
    )
    return JSONResponse(done.public(), status_code=202 if done.state == "pending" else 200)


async def recharge_status(request: Request) -> Response:
    account = await current_account(request)
    receipt = fields.text(request.path_params["receipt"], "receipt", MAX_RECEIPT_LENGTH)
    status = await runtime_of(request).wallet.recharge_status(account, receipt)
    return JSONResponse(status)


async def store_event(request: Request) -> Response:
    """Dev mode: what a store's server-to-server notification would tell us."""
    runtime = runtime_of(request)
    if not runtime.settings.dev:
        raise NotFound("dev endpoints exist only when the server runs with --dev")
    body = await json_body(request, {"type", "receipt"})
    kind = body.get("type")
    if kind not in ("settled", "failed", "refunded"):
        raise InvalidField("'type' must be 'settled', 'failed' or 'refunded'")
    receipt = required_text(body, "receipt", MAX_RECEIPT_LENGTH)
    return JSONResponse(await runtime.wallet.store_event(str(kind), receipt))


async def get_limits(request: Request) -> Response:
    account = await current_account(request)
    return JSONResponse(await runtime_of(request).wallet.limits(account))


async def set_limits(request: Request) -> Response:
    runtime = runtime_of(request)
    account = await current_account(request)
    body = await json_body(request, {"daily_cap", "guardian_code", "new_guardian_code"})
    if "daily_cap" not in body:
        raise InvalidField("'daily_cap' is required (an integer, or null for no limit)")
    cap = int_field(body, "daily_cap", 0, MAX_COINS)
    await runtime.wallet.set_limits(
        account,
        cap,
        text_field(body, "guardian_code", required=False, max_length=MAX_GUARDIAN_CODE),
        text_field(body, "new_guardian_code", required=False, max_length=MAX_GUARDIAN_CODE),
    )
    fresh = await current_account(request)
    return JSONResponse(await runtime.wallet.limits(fresh))


async def rewards(request: Request) -> Response:
    runtime = runtime_of(request)
    account = await current_account(request)
    return JSONResponse(
        {
            "points": account.points,
            "points_per_coin": runtime.economy.points_per_coin,
            "daily_checkin_points": runtime.economy.daily_checkin_points,
        }
    )


async def check_in(request: Request) -> Response:
    account = await current_account(request)
    return JSONResponse(await runtime_of(request).wallet.check_in(account))


async def exchange(request: Request) -> Response:
    account = await current_account(request)
    body = await json_body(request, {"id", "points"})
    request_id = required_text(body, "id")
    points = required_int(body, "points", 1, MAX_COINS)
    return JSONResponse(await runtime_of(request).wallet.exchange(account, request_id, points))


async def create_video(request: Request) -> Response:
    runtime = runtime_of(request)
    account = await current_account(request)
    if account.room is None:
        opened = await rooms.open_room(
            runtime.redis,
            account.id,
            account.age >= runtime.economy.minimum_age,
            account.region,
            account.name,
        )
        await rooms.end_room(
            runtime.redis, opened.room, account.id, runtime.settings.room_history_ttl_s
        )
        room = opened.room
    else:
        room = account.room
    video = await earnings.create_video(runtime.redis, room, account.id)
    return JSONResponse({"video": video.id, "host": video.host, "room": video.room})


async def gift_video(request: Request) -> Response:
    runtime = runtime_of(request)
    account = await current_account(request)
    video_id = path_id(request, "video")
    video = await earnings.get_video(runtime.redis, video_id)
    if video is None:
        raise NotFound(f"there is no video '{video_id}'")
    body = await json_body(request, {"id", "gift", "count"})
    req = SendGift(
        id=required_text(body, "id"),
        room=video.room,
        gift=required_text(body, "gift"),
        count=int_field(body, "count", 1, MAX_GIFT_COUNT, default=1) or 1,
    )
    state = await rooms.room_state(runtime.redis, video.room)
    sender = Sender(account.id, account.name, account.region, account.age)
    ack = await runtime.gifting.send(
        sender, req, video.host, state.receives if state else True, video=video.id
    )
    return JSONResponse({"id": ack.id, "event": ack.event, "coins": ack.coins, "video": video.id})


async def get_earnings(request: Request) -> Response:
    runtime = runtime_of(request)
    account = await current_account(request)
    diamonds = await rooms.host_diamonds(runtime.redis, account.room)
    body = await runtime.wallet.earnings(account, diamonds)
    coins = query_int(request, "coins", 0, MAX_COINS)
    if coins is not None:
        body["estimate"] = runtime.wallet.estimate(coins)
    return JSONResponse(body)


async def create_payout(request: Request) -> Response:
    account = await current_account(request)
    body = await json_body(request, {"id", "diamonds"})
    request_id = required_text(body, "id")
    diamonds = required_int(body, "diamonds", 1, MAX_COINS)
    return JSONResponse(await runtime_of(request).wallet.payout(account, request_id, diamonds))


async def list_payouts(request: Request) -> Response:
    runtime = runtime_of(request)
    account = await current_account(request)
    if account.room is None:
        return JSONResponse([])
    return JSONResponse(await earnings.payouts(runtime.redis, account.room))
