"""What every HTTP handler shares: the runtime, authentication, body parsing, error bodies."""

import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from giftstream import metrics, tokens
from giftstream.errors import (
    ERRORS,
    GiftstreamError,
    InvalidField,
    PayloadTooLarge,
    Unauthenticated,
    Unavailable,
    UnsupportedMediaType,
)
from giftstream.runtime import Runtime
from giftstream.store import accounts
from giftstream.store.accounts import Account
from giftstream.store.connection import STORE_UNAVAILABLE
from giftstream.wire import fields
from giftstream.wire.codec import Undecodable, decode_json_body
from giftstream.wire.fields import MAX_ID_LENGTH

Handler = Callable[[Request], Awaitable[Response]]


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def error_response(error: GiftstreamError) -> JSONResponse:
    metrics.ERRORS.labels(error.code.value).inc()
    # Always encodable, whatever client text a message quotes.
    message = error.message.encode("utf-8", "replace").decode("utf-8")
    body: dict[str, Any] = {"code": error.code.value, "message": message}
    if error.retry:
        body["retry"] = True
    spec = ERRORS[error.code]
    headers = {"connection": "close"} if spec.http_close else None
    return JSONResponse(body, status_code=spec.http, headers=headers)


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


def _is_json(content_type: str) -> bool:
    media = content_type.partition(";")[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


async def _read_body(request: Request) -> bytes:
    """The body, refused once it passes `max_body_bytes` (announced or counted as it comes),
    never read in full past that."""
    limit = runtime_of(request).settings.max_body_bytes
    too_large = PayloadTooLarge(f"the body must be at most {limit} bytes")
    announced = request.headers.get("content-length")
    if announced is not None and (
        fields.DIGITS.fullmatch(announced) is None or int(announced) > limit
    ):
        raise too_large
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
    except ClientDisconnect as e:
        raise InvalidField("the body was cut off") from e
    return b"".join(chunks)


async def json_body(request: Request, allowed: set[str]) -> dict[str, Any]:
    content_type = request.headers.get("content-type")
    # Without a Content-Type a program's JSON is taken; a browser always names one, and a
    # form or text/plain (a cross-site post without a preflight) is refused.
    if content_type is not None and not _is_json(content_type):
        raise UnsupportedMediaType("send the body as JSON, with 'Content-Type: application/json'")
    try:
        body = decode_json_body(await _read_body(request))
    except Undecodable as e:
        raise InvalidField(f"the body must be a JSON object: {e}") from e
    if not isinstance(body, dict):
        raise InvalidField("the body must be a JSON object")
    unknown = set(body) - allowed
    if unknown:
        names = ", ".join(sorted(fields.quoted(name) for name in unknown))
        raise InvalidField(f"unknown fields: {names}")
    return body


def path_id(request: Request, name: str) -> str:
    """A path parameter that names a room, user or video."""
    return fields.ident(request.path_params[name], name)


def query_int(request: Request, name: str, low: int, high: int) -> int | None:
    raw = request.query_params.get(name)
    return None if raw is None else fields.digits(raw, name, low, high)


def text_field(
    body: dict[str, Any], name: str, *, required: bool = True, max_length: int = MAX_ID_LENGTH
) -> str | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if value is None:
        raise InvalidField(f"'{name}' is required")
    return fields.text(value, name, max_length)


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
    return fields.integer(value, name, low, high)


def required_int(body: dict[str, Any], name: str, low: int, high: int) -> int:
    value = int_field(body, name, low, high)
    if value is None:
        raise InvalidField(f"'{name}' is required")
    return value
