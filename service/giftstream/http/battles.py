"""LIVE battles over HTTP: invite, accept, decline, end early, and the battle's state."""

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from giftstream.battles import Battles
from giftstream.http.common import current_account, json_body, path_id, runtime_of
from giftstream.wire.requests import battle_invite


def _battles(request: Request) -> Battles:
    runtime = runtime_of(request)
    return Battles(runtime.redis, runtime.settings)


async def invite(request: Request) -> Response:
    account = await current_account(request)
    body = await json_body(request, {"rooms", "duration_s"})
    return JSONResponse(await _battles(request).invite(account, battle_invite(body)))


async def get_battle(request: Request) -> Response:
    return JSONResponse(await _battles(request).view(path_id(request, "battle")))


async def accept(request: Request) -> Response:
    account = await current_account(request)
    return JSONResponse(await _battles(request).accept(account, path_id(request, "battle")))


async def decline(request: Request) -> Response:
    account = await current_account(request)
    return JSONResponse(await _battles(request).decline(account, path_id(request, "battle")))


async def end(request: Request) -> Response:
    account = await current_account(request)
    return JSONResponse(await _battles(request).end(account, path_id(request, "battle")))
