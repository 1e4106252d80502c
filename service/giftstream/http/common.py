"""What every HTTP handler shares: the runtime, authentication, body parsing, error bodies."""

import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from giftstream import metrics, tokens
from giftstream.errors import (
    HTTP_STATUS,
    GiftstreamError,
    InvalidField,
    Unauthenticated,
    Unavailable,
)
from giftstream.runtime import Runtime
from giftstream.store import accounts
from giftstream.store.accounts import Account
from giftstream.store.connection import STORE_UNAVAILABLE
from giftstream.wire.requests import MAX_ID_LENGTH

Handler = Callable[[Request], Awaitable[Response]]


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def error_response(error: GiftstreamError) -> JSONResponse:
    metrics.ERRORS.labels(error.code.value).inc()
    body: dict[str, Any] = {"code": error.code.value, "message": error.message}
    if error.retry:
        body["retry"] = True
    return JSONResponse(body, status_code=HTTP_STATUS[error.code])


def handles_errors(endpoint: Handler) -> Handler:
    async def wrapped(request: Request) -> Response:
        try:
            return await endpoint(request)
        except GiftstreamError as e:
            return error_response(e)
        except STORE_UNAVAILABLE:
            return error_response(
                Unavailable(
                    "the store failed while handling this request, which may or may not have"
                    " taken effect: send it again (same receipt or id) to learn the outcome"
                )
            )

    return wrapped


def authenticate(request: Request) -> tokens.Claims:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated("send the token as 'Authorization: Bearer <token>'")
    return tokens.verify(token.strip(), runtime_of(request).secret, int(time.time()))


async def current_account(request: Request) -> Account:
    claims = authenticate(request)
    account = await accounts.get_account(runtime_of(request).redis, claims.user)
    if account is None:
        raise Unauthenticated("the token names a user that does not exist")
    return account


async def json_body(request: Request, allowed: set[str]) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError as e:
        raise InvalidField("the body must be a JSON object") from e
    if not isinstance(body, dict):
        raise InvalidField("the body must be a JSON object")
    unknown = set(body) - allowed
    if unknown:
        raise InvalidField(f"unknown fields: {', '.join(sorted(unknown))}")
    return body


def text_field(
    body: dict[str, Any], name: str, *, required: bool = True, max_length: int = MAX_ID_LENGTH
) -> str | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= max_length or not value.isprintable():
        raise InvalidField(f"'{name}' must be printable text of 1 to {max_length} characters")
    return value


def required_text(body: dict[str, Any], name: str, max_length: int = MAX_ID_LENGTH) -> str:
    value = text_field(body, name, max_length=max_length)
    assert value is not None
    return value


def int_field(
    body: dict[str, Any], name: str, low: int, high: int, *, default: int | None = None
) -> int | None:
    value = body.get(name, default)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise InvalidField(f"'{name}' must be an integer from {low} to {high}")
    return value


def required_int(body: dict[str, Any], name: str, low: int, high: int) -> int:
    value = int_field(body, name, low, high)
    if value is None:
        raise InvalidField(f"'{name}' is required")
    return value
