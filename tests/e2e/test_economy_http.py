"""The coin economy against the real server: prices, recharges through the simulated store,
regions and ages, daily caps and the guardian lock, rewards, gifts to videos, cash-out, refunds,
and the audit after all of it."""

import asyncio
import secrets
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from giftstream.client import (
    Ack,
    CreditEvent,
    Forbidden,
    GiftEvent,
    InsufficientCoins,
    ServerError,
    SpendingLimit,
)
from giftstream.domain.economy import Economy, load_economy
from giftstream.payments import DECLINES
from giftstream.store import keys
from giftstream.store.connection import Redis, read_stream, text
from giftstream.store.embedded import EmbeddedValkey
from support import (
    Api,
    ServerProcess,
    User,
    audit,
    bearer,
    connected,
    first_event,
    gift_burst,
    poll,
    running,
    serving,
)

RECV_S = 15.0
SETTLE_DEADLINE_S = 20.0
BUNDLED = load_economy()
Json = dict[str, Any]

# --- helpers ----------------------------------------------------------------------------------


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(6)}"


async def make_user(
    api: Api, *, coins: int = 0, region: str = "US", role: str = "viewer", age: int = 30
) -> User:
    r = await api.http.post(
        "/v1/dev/users",
        json={"name": f"t-{role}", "region": region, "role": role, "coins": coins, "age": age},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["age"] == age
    return User(body["user"], body["token"])


async def post(api: Api, path: str, user: User | None, body: Json) -> httpx.Response:
    headers = bearer(user) if user is not None else {}
    return await api.http.post(path, json=body, headers=headers)


async def get(api: Api, path: str, user: User | None = None) -> httpx.Response:
    headers = bearer(user) if user is not None else {}
    return await api.http.get(path, headers=headers)


async def recharge(
    api: Api,
    user: User,
    receipt: str,
    package: str | None = "coins_70",
    *,
    region: str = "US",
    channel: str = "web",
    coins: int | None = None,
) -> httpx.Response:
    body: Json = {"receipt": receipt, "region": region, "channel": channel}
    if package is not None:
        body["package"] = package
    if coins is not None:
        body["coins"] = coins
    return await post(api, "/v1/recharge", user, body)


async def store_event(api: Api, kind: str, receipt: str) -> httpx.Response:
    return await post(api, "/v1/dev/store/events", None, {"type": kind, "receipt": receipt})


async def coins_of(api: Api, user: User) -> int:
    coins: int = (await api.wallet(user))["coins"]
    return coins


async def diamonds_of(api: Api, user: User) -> int:
    diamonds: int = (await api.wallet(user))["diamonds"]
    return diamonds


def error(r: httpx.Response, status: int, code: str) -> str:
    """Assert `r` is the error `code` with HTTP `status`; returns its message."""
    assert r.status_code == status, r.text
    body = r.json()
    assert body["code"] == code, body
    message: str = body["message"]
    assert message
    return message


def ok(r: httpx.Response, status: int = 200) -> Json:
    assert r.status_code == status, r.text
    body: Json = r.json()
    return body


def ok_list(r: httpx.Response) -> list[Json]:
    assert r.status_code == 200, r.text
    body: list[Json] = r.json()
    assert isinstance(body, list), body
    return body


async def ledger(redis: Redis, user: User) -> list[dict[str, str]]:
    entries = await read_stream(redis, keys.user_ledger(user.user))
    return [{text(k): text(v) for k, v in fields.items()} for _, fields in entries]


async def video_of(api: Api, host: User) -> str:
    body = ok(await post(api, "/v1/videos", host, {}))
    assert body["host"] == host.user
    video: str = body["video"]
    return video


async def video_gift(
    api: Api, user: User, video: str, gift: str, request_id: str, count: int = 1
) -> httpx.Response:
    return await post(
        api, f"/v1/videos/{video}/gifts", user, {"id": request_id, "gift": gift, "count": count}
    )


async def set_cap(api: Api, user: User, cap: int | None, **codes: str) -> httpx.Response:
    return await post(api, "/v1/wallet/limits", user, {"daily_cap": cap, **codes})


async def host_with_diamonds(api: Api, diamonds_in_10k: int) -> tuple[User, str]:
    """A host whose room holds `diamonds_in_10k` x 10,000 diamonds, from a whale's video gifts."""
    host = await make_user(api, role="host")
    await api.open_room(host)
    video = await video_of(api, host)
    whale = await make_user(api, coins=10_000 * diamonds_in_10k)
    for n in range(diamonds_in_10k):
        ok(await video_gift(api, whale, video, "interstellar", f"whale-{n}"))
    assert await diamonds_of(api, host) == 10_000 * diamonds_in_10k
    return host, video


# --- a server with promotions active now ------------------------------------------------------

PROMO_CHECKIN_POINTS = 250


def promo_economy_text(now: datetime) -> str:
    """The bundled economy with its promotions replaced by windows around `now`."""
    bundled = (
        Path(__file__).parents[2] / "service" / "giftstream" / "data" / "economy.toml"
    ).read_text()
    head, marker, _ = bundled.partition("# Bonus coins in a time window")
    assert marker, "the bundled economy file changed shape"
    head = head.replace(
        "daily_checkin_points = 50", f"daily_checkin_points = {PROMO_CHECKIN_POINTS}"
    )

    def stamp(moment: datetime) -> str:
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")

    day = timedelta(days=1)
    windows = [
        ("now-all", 15, now - day, now + day, None, None),
        ("now-ios", 20, now - day, now + day, ["ios"], None),
        ("now-br", 30, now - day, now + day, None, ["BR"]),
        ("ended", 50, now - 2 * day, now - day, None, None),
        ("upcoming", 60, now + day, now + 2 * day, None, None),
    ]
    blocks = []
    for ident, percent, starts, ends, channels, regions in windows:
        lines = [
            "[[promotion]]",
            f'id = "{ident}"',
            f'name = "{ident}"',
            f"bonus_percent = {percent}",
            f'starts = "{stamp(starts)}"',
            f'ends = "{stamp(ends)}"',
        ]
        if channels is not None:
            lines.append("channels = [" + ", ".join(f'"{c}"' for c in channels) + "]")
        if regions is not None:
            lines.append("regions = [" + ", ".join(f'"{r}"' for r in regions) + "]")
        blocks.append("\n".join(lines))
    return head + "\n\n".join(blocks) + "\n"


@dataclass(frozen=True)
class PromoServer:
    server: ServerProcess
    economy: Economy
    path: Path


@pytest.fixture(scope="module")
def promo_economy_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("economy") / "economy.toml"
    path.write_text(promo_economy_text(datetime.now(UTC)))
    return path


@pytest.fixture(scope="module")
def promo(valkey: EmbeddedValkey, promo_economy_path: Path) -> Iterator[PromoServer]:
    env = {"GIFTSTREAM_ECONOMY_PATH": str(promo_economy_path)}
    with running(ServerProcess(valkey.url, env=env)) as server:
        yield PromoServer(server, load_economy(promo_economy_path), promo_economy_path)


# --- prices -----------------------------------------------------------------------------------


@pytest.mark.parametrize("region", ["US", "BR", "GB", "JP", "CH", "FR"])
@pytest.mark.parametrize("channel", ["web", "android", "ios"])
async def test_packages_list_exactly_what_a_buyer_pays_in_each_region_and_channel(
    api: Api, region: str, channel: str
) -> None:
    listed = ok_list(await get(api, f"/v1/packages?region={region}&channel={channel}"))

    expected = BUNDLED.price_list(region, channel, datetime.now(UTC))
    assert [p["id"] for p in listed] == [q.package for q in expected]
    for item, quote in zip(listed, expected, strict=True):
        assert (item["coins"], item["price"], item["currency"]) == (
            quote.coins,
            quote.price_text,
            quote.currency,
        )
        assert (item["channel"], item["region"]) == (channel, region)
        assert item["total_coins"] == item["coins"] + item["bonus"]
        per_coin = Decimal(item["price"]) / item["total_coins"]
        assert item["price_per_coin"] == f"{per_coin.quantize(Decimal('0.000001')):f}"


async def test_packages_without_region_or_channel_are_the_default_web_prices(api: Api) -> None:
    listed = ok_list(await get(api, "/v1/packages"))

    assert [(p["id"], p["price"], p["currency"], p["channel"]) for p in listed][:2] == [
        ("coins_70", "0.74", "USD", "web"),
        ("coins_350", "3.64", "USD", "web"),
    ]
    assert listed[-1]["price"] == "174.99"


async def test_the_published_prices_are_served_for_a_few_region_channel_pairs(api: Api) -> None:
    def first(listed: list[Json]) -> tuple[str, str, str]:
        return (listed[0]["price"], listed[0]["currency"], listed[0]["price_per_coin"])

    assert first(ok_list(await get(api, "/v1/packages?region=JP&channel=ios"))) == (
        "200",
        "JPY",
        "2.857143",
    )
    assert first(ok_list(await get(api, "/v1/packages?region=BR&channel=android")))[:2] == (
        "3.79",
        "BRL",
    )
    assert first(ok_list(await get(api, "/v1/packages?region=ch&channel=web")))[:2] == (
        "0.98",
        "CHF",
    )


async def test_packages_in_a_region_where_coins_are_not_sold_are_unavailable(api: Api) -> None:
    error(await get(api, "/v1/packages?region=IN&channel=web"), 403, "unavailable_in_region")


async def test_packages_for_an_unknown_channel_or_bad_region_are_invalid(api: Api) -> None:
    error(await get(api, "/v1/packages?region=US&channel=windows"), 400, "invalid_field")
    error(await get(api, "/v1/packages?region=USA&channel=web"), 400, "invalid_field")


async def test_a_custom_web_amount_is_quoted_at_the_custom_rate(api: Api) -> None:
    us = ok(await get(api, "/v1/packages/quote?region=US&channel=web&coins=1000"))
    jp = ok(await get(api, "/v1/packages/quote?region=JP&channel=web&coins=1000"))

    assert (us["id"], us["coins"], us["price"], us["currency"]) == (None, 1000, "10.60", "USD")
    assert (jp["price"], jp["currency"]) == ("2290", "JPY")
    assert us["total_coins"] == 1000 + us["bonus"]


@pytest.mark.parametrize("channel", ["ios", "android"])
async def test_a_custom_amount_is_refused_on_the_app_stores(api: Api, channel: str) -> None:
    message = error(
        await get(api, f"/v1/packages/quote?region=US&channel={channel}&coins=1000"),
        400,
        "invalid_field",
    )
    assert "web" in message


@pytest.mark.parametrize("coins", ["29", "2500001", "abc", "-5", ""])
async def test_a_custom_amount_out_of_bounds_or_not_a_number_is_refused(
    api: Api, coins: str
) -> None:
    error(await get(api, f"/v1/packages/quote?channel=web&coins={coins}"), 400, "invalid_field")


async def test_a_custom_amount_in_a_region_where_coins_are_not_sold_is_unavailable(
    api: Api,
) -> None:
    error(
        await get(api, "/v1/packages/quote?region=IN&channel=web&coins=100"),
        403,
        "unavailable_in_region",
    )


async def test_the_price_list_in_a_promotion_window_shows_the_bonus_and_the_promotion(
    promo: PromoServer,
) -> None:
    async with Api(promo.server.base_url) as api:
        web = ok_list(await get(api, "/v1/packages?region=US&channel=web"))
        ios = ok_list(await get(api, "/v1/packages?region=US&channel=ios"))
        br = ok_list(await get(api, "/v1/packages?region=BR&channel=web"))

    # Only the most generous active promotion applies; the ended and upcoming ones never.
    assert {(p["coins"], p["bonus"]) for p in web} >= {(70, 10), (700, 105)}
    assert all(p["promotions"] == ["now-all"] for p in web)
    assert all(p["promotions"] == ["now-ios"] for p in ios)
    assert all(p["promotions"] == ["now-br"] for p in br)
    assert [p["bonus"] for p in ios] == [p["coins"] * 20 // 100 for p in ios]
    assert [p["bonus"] for p in br] == [p["coins"] * 30 // 100 for p in br]
    # The price does not change; the price per coin counts the bonus coins.
    assert [p["price"] for p in web] == [
        q.price_text for q in BUNDLED.price_list("US", "web", datetime.now(UTC))
    ]
    seven_hundred = next(p for p in web if p["coins"] == 700)
    assert seven_hundred["total_coins"] == 805
    assert seven_hundred["price_per_coin"] == "0.008932"  # 7.19 / 805


# --- recharge ---------------------------------------------------------------------------------


async def test_a_recharge_credits_exactly_the_package_coins_once(api: Api, redis: Redis) -> None:
    viewer = await make_user(api)
    receipt = unique("paid")
    quote = BUNDLED.quote("US", "web", datetime.now(UTC), package="coins_350")

    body = ok(await recharge(api, viewer, receipt, "coins_350"))

    assert (body["status"], body["receipt"], body["replayed"]) == ("paid", receipt, False)
    assert body["credited"] == quote.total_coins == 350 + quote.bonus
    assert body["coins"] == quote.total_coins
    assert body["purchase"]["id"] == "coins_350"
    assert (body["purchase"]["price"], body["purchase"]["currency"]) == ("3.64", "USD")
    assert await coins_of(api, viewer) == quote.total_coins
    purchases = [e for e in await ledger(redis, viewer) if e["kind"] == "purchase"]
    assert len(purchases) == 1 and purchases[0]["ref"] == receipt
    assert purchases[0]["price"] == "3.64" and purchases[0]["currency"] == "USD"


async def test_a_recharge_of_a_custom_web_amount_credits_that_many_coins(api: Api) -> None:
    viewer = await make_user(api, coins=5, region="GB")
    quote = BUNDLED.quote("GB", "web", datetime.now(UTC), coins=1234)

    body = ok(await recharge(api, viewer, unique("custom"), None, region="GB", coins=1234))

    assert body["credited"] == quote.total_coins
    assert (body["purchase"]["price"], body["purchase"]["currency"]) == (quote.price_text, "GBP")
    assert await coins_of(api, viewer) == 5 + quote.total_coins


async def test_a_recharge_of_a_custom_amount_on_ios_is_refused_and_credits_nothing(
    api: Api,
) -> None:
    viewer = await make_user(api, coins=5)

    error(
        await recharge(api, viewer, unique("custom"), None, channel="ios", coins=1000),
        400,
        "invalid_field",
    )
    error(await recharge(api, viewer, unique("nopkg"), "coins_71"), 400, "invalid_field")
    assert await coins_of(api, viewer) == 5


@pytest.mark.parametrize(
    ("channel", "region", "package", "bonus"),
    [
        ("web", "US", "coins_700", 105),  # now-all 15 %
        ("web", "US", "coins_70", 10),  # 15 % of 70 = 10.5, rounded down
        ("ios", "US", "coins_700", 140),  # now-ios 20 % beats 15 %
        ("android", "JP", "coins_1400", 210),  # 15 %
        ("web", "BR", "coins_700", 210),  # now-br 30 %
    ],
)
async def test_a_recharge_in_a_promotion_window_credits_the_package_plus_its_bonus(
    promo: PromoServer, channel: str, region: str, package: str, bonus: int
) -> None:
    async with Api(promo.server.base_url) as api:
        viewer = await make_user(api, region=region)
        coins = BUNDLED.packages[package].coins

        body = ok(
            await recharge(api, viewer, unique("promo"), package, region=region, channel=channel)
        )

        assert (body["purchase"]["coins"], body["purchase"]["bonus"]) == (coins, bonus)
        assert body["credited"] == coins + bonus
        assert await coins_of(api, viewer) == coins + bonus
        now = datetime.now(UTC)
        assert body["purchase"]["bonus"] == promo.economy.quote(region, channel, now, package).bonus


async def test_a_promotion_bonus_is_posted_to_the_promotions_account_in_the_ledger(
    promo: PromoServer, redis: Redis
) -> None:
    async with Api(promo.server.base_url) as api:
        viewer = await make_user(api)
        receipt = unique("promo")
        ok(await recharge(api, viewer, receipt, "coins_700"))

    (entry,) = [e for e in await ledger(redis, viewer) if e["kind"] == "purchase"]
    postings = set(entry["post"].split(";"))
    assert postings == {
        "platform:sales coins -700",
        "platform:promotions coins -105",
        f"user:{viewer.user} coins 805",
    }


@pytest.mark.parametrize("prefix", ["test-decline", "test-fraud", "test-parental"])
async def test_each_failing_receipt_is_payment_declined_with_its_reason_and_credits_nothing(
    api: Api, redis: Redis, prefix: str
) -> None:
    viewer = await make_user(api, coins=7)
    receipt = unique(prefix)
    entries = len(await ledger(redis, viewer))

    message = error(await recharge(api, viewer, receipt, "coins_350"), 402, "payment_declined")
    again = error(await recharge(api, viewer, receipt, "coins_350"), 402, "payment_declined")

    assert DECLINES[prefix] in message
    assert again == message
    assert await coins_of(api, viewer) == 7
    assert len(await ledger(redis, viewer)) == entries
    error(await get(api, f"/v1/recharge/{receipt}", viewer), 404, "not_found")


async def test_a_late_payment_is_pending_then_credited_exactly_once_when_a_poll_finds_it_settled(
    api: Api, redis: Redis
) -> None:
    viewer = await make_user(api, coins=3)
    receipt = unique("test-late")

    first = ok(await recharge(api, viewer, receipt, "coins_350"), 202)
    assert (first["status"], first["credited"]) == ("pending", 0)
    assert await coins_of(api, viewer) == 3

    async def status() -> Json:
        return ok(await get(api, f"/v1/recharge/{receipt}", viewer))

    settled = await poll(status, lambda s: s["status"] != "pending", SETTLE_DEADLINE_S, "settled")

    total = 350 + BUNDLED.quote("US", "web", datetime.now(UTC), package="coins_350").bonus
    assert (settled["status"], settled["credited"], settled["coins"]) == ("paid", total, 3 + total)
    assert await coins_of(api, viewer) == 3 + total
    # A second poll, a replayed recharge and a late store notification credit nothing more.
    assert ok(await get(api, f"/v1/recharge/{receipt}", viewer)) == settled
    replay = ok(await recharge(api, viewer, receipt, "coins_350"))
    assert (replay["status"], replay["credited"], replay["replayed"]) == ("paid", total, True)
    notified = ok(await store_event(api, "settled", receipt))
    assert (notified["status"], notified["replayed"]) == ("paid", True)
    assert await coins_of(api, viewer) == 3 + total
    purchases = [e for e in await ledger(redis, viewer) if e["kind"] == "purchase"]
    assert [e["ref"] for e in purchases] == [receipt]


async def test_a_late_payment_settled_by_the_store_notification_is_credited_exactly_once(
    api: Api, redis: Redis
) -> None:
    viewer = await make_user(api)
    receipt = unique("test-late")
    ok(await recharge(api, viewer, receipt, "coins_70"), 202)
    total = 70 + BUNDLED.quote("US", "web", datetime.now(UTC), package="coins_70").bonus

    settled = ok(await store_event(api, "settled", receipt))
    again = ok(await store_event(api, "settled", receipt))

    assert (settled["status"], settled["credited"], settled["replayed"]) == ("paid", total, False)
    assert settled["coins"] == total
    assert (again["status"], again["credited"], again["replayed"]) == ("paid", total, True)
    polled = ok(await get(api, f"/v1/recharge/{receipt}", viewer))
    assert (polled["status"], polled["coins"]) == ("paid", total)
    assert await coins_of(api, viewer) == total
    purchases = [e for e in await ledger(redis, viewer) if e["kind"] == "purchase"]
    assert [e["ref"] for e in purchases] == [receipt]


async def test_a_late_payment_the_store_reports_failed_is_never_credited(
    api: Api, redis: Redis
) -> None:
    viewer = await make_user(api, coins=40)
    receipt = unique("test-late")
    ok(await recharge(api, viewer, receipt, "coins_350"), 202)

    failed = ok(await store_event(api, "failed", receipt))
    settled_after = ok(await store_event(api, "settled", receipt))

    assert failed["status"] == "declined"
    assert failed["credited"] == 0
    assert settled_after["status"] == "declined" and settled_after["credited"] == 0
    polled = ok(await get(api, f"/v1/recharge/{receipt}", viewer))
    assert (polled["status"], polled["credited"], polled["coins"]) == ("declined", 0, 40)
    assert await coins_of(api, viewer) == 40
    assert [e for e in await ledger(redis, viewer) if e["kind"] == "purchase"] == []
    # The answer to the store reports the account's balance, as every other answer does.
    assert failed["coins"] == 40, failed


async def test_replaying_a_receipt_returns_the_first_result_and_credits_nothing(
    api: Api, redis: Redis
) -> None:
    viewer = await make_user(api)
    receipt = unique("replay")
    first = ok(await recharge(api, viewer, receipt, "coins_700"))
    entries = len(await ledger(redis, viewer))

    replays = [ok(await recharge(api, viewer, receipt, "coins_700")) for _ in range(3)]

    for replay in replays:
        assert replay["replayed"] is True
        assert {**replay, "replayed": False} == first
    assert await coins_of(api, viewer) == first["coins"]
    assert len(await ledger(redis, viewer)) == entries


async def test_replaying_a_receipt_after_spending_still_returns_the_first_result(
    api: Api,
) -> None:
    host = await make_user(api, role="host")
    video = await video_of(api, host)
    viewer = await make_user(api)
    receipt = unique("replay")
    first = ok(await recharge(api, viewer, receipt, "coins_70"))
    ok(await video_gift(api, viewer, video, "rosa", unique("spend")))

    replay = ok(await recharge(api, viewer, receipt, "coins_70"))

    assert replay["credited"] == first["credited"]
    assert await coins_of(api, viewer) == first["coins"] - 10
    # The first result, as a retried gift gets its original ack, balance included.
    assert {**replay, "replayed": False} == first, (first, replay)


@pytest.mark.parametrize(
    "other",
    [
        {"package": "coins_350"},
        {"package": None, "coins": 70},
        {"package": "coins_70", "channel": "ios"},
    ],
)
async def test_the_same_receipt_for_another_purchase_is_an_idempotency_conflict(
    api: Api, redis: Redis, other: Json
) -> None:
    viewer = await make_user(api)
    receipt = unique("conflict")
    first = ok(await recharge(api, viewer, receipt, "coins_70"))
    entries = len(await ledger(redis, viewer))

    error(await recharge(api, viewer, receipt, **other), 409, "idempotency_conflict")

    assert await coins_of(api, viewer) == first["coins"]
    assert len(await ledger(redis, viewer)) == entries
    assert ok(await recharge(api, viewer, receipt, "coins_70"))["replayed"] is True


async def test_a_late_receipt_presented_again_for_another_amount_is_a_conflict(api: Api) -> None:
    viewer = await make_user(api)
    receipt = unique("test-late")
    ok(await recharge(api, viewer, receipt, "coins_70"), 202)

    error(await recharge(api, viewer, receipt, "coins_700"), 409, "idempotency_conflict")

    settled = ok(await store_event(api, "settled", receipt))
    assert (
        settled["credited"]
        == 70 + BUNDLED.quote("US", "web", datetime.now(UTC), package="coins_70").bonus
    )


async def test_one_receipt_presented_concurrently_ten_times_is_credited_once(
    api: Api, redis: Redis
) -> None:
    viewer = await make_user(api)
    receipt = unique("race")

    answers = await asyncio.gather(
        *(recharge(api, viewer, receipt, "coins_350") for _ in range(10))
    )

    bodies = [ok(r) for r in answers]
    assert sorted(b["replayed"] for b in bodies) == [False] + [True] * 9
    total = bodies[0]["credited"]
    assert all(b["credited"] == total for b in bodies)
    assert await coins_of(api, viewer) == total
    purchases = [e for e in await ledger(redis, viewer) if e["kind"] == "purchase"]
    assert len(purchases) == 1


async def test_one_receipt_presented_concurrently_by_two_users_credits_only_one(
    api: Api,
) -> None:
    users = [await make_user(api) for _ in range(2)]
    receipt = unique("race")

    answers = await asyncio.gather(
        *(recharge(api, users[n % 2], receipt, "coins_70") for n in range(10))
    )

    statuses = Counter(r.status_code for r in answers)
    assert statuses[200] >= 1 and statuses[200] + statuses[409] == 10, statuses
    owners = {n % 2 for n, r in enumerate(answers) if r.status_code == 200}
    assert len(owners) == 1, [r.text for r in answers]
    (owner,) = owners
    total = 70 + BUNDLED.quote("US", "web", datetime.now(UTC), package="coins_70").bonus
    assert await coins_of(api, users[owner]) == total
    assert await coins_of(api, users[1 - owner]) == 0


async def test_concurrent_settle_notifications_credit_a_late_payment_once(api: Api) -> None:
    viewer = await make_user(api)
    receipt = unique("test-late")
    ok(await recharge(api, viewer, receipt, "coins_700"), 202)

    answers = await asyncio.gather(*(store_event(api, "settled", receipt) for _ in range(10)))

    bodies = [ok(r) for r in answers]
    assert sorted(b["replayed"] for b in bodies) == [False] + [True] * 9
    assert await coins_of(api, viewer) == bodies[0]["credited"] >= 700


async def test_concurrent_refund_notifications_claw_back_once(api: Api) -> None:
    viewer = await make_user(api, coins=1000)
    receipt = unique("refund")
    credited = ok(await recharge(api, viewer, receipt, "coins_350"))["credited"]

    answers = await asyncio.gather(*(store_event(api, "refunded", receipt) for _ in range(10)))

    bodies = [ok(r) for r in answers]
    assert sorted(b["replayed"] for b in bodies) == [False] + [True] * 9
    assert {b["clawed_back"] for b in bodies} == {credited}
    assert await coins_of(api, viewer) == 1000


async def test_a_receipt_presented_by_another_user_is_a_conflict_and_credits_neither(
    api: Api,
) -> None:
    owner = await make_user(api)
    thief = await make_user(api)
    receipt = unique("shared")
    first = ok(await recharge(api, owner, receipt, "coins_70"))

    error(await recharge(api, thief, receipt, "coins_70"), 409, "idempotency_conflict")
    error(await recharge(api, thief, receipt, "coins_350"), 409, "idempotency_conflict")

    assert await coins_of(api, thief) == 0
    assert await coins_of(api, owner) == first["coins"]
    error(await get(api, f"/v1/recharge/{receipt}", thief), 404, "not_found")


async def test_a_purchase_from_another_region_is_forbidden_and_flagged_in_the_ledger(
    api: Api, redis: Redis
) -> None:
    viewer = await make_user(api, region="US")
    receipt = unique("vpn")

    message = error(await recharge(api, viewer, receipt, "coins_70", region="BR"), 403, "forbidden")

    assert "region" in message
    assert await coins_of(api, viewer) == 0
    flags = [e for e in await ledger(redis, viewer) if e["kind"] == "flag"]
    assert len(flags) == 1
    assert (flags[0]["reason"], flags[0]["ref"], flags[0]["post"]) == (
        "region_mismatch",
        receipt,
        "",
    )
    # The refused attempt did not use up the receipt: from the right region it is paid.
    assert ok(await recharge(api, viewer, receipt, "coins_70", region="US"))["status"] == "paid"


async def test_a_purchase_in_a_region_where_coins_are_not_sold_is_unavailable_in_region(
    api: Api, redis: Redis
) -> None:
    viewer = await make_user(api, region="IN")

    error(
        await recharge(api, viewer, unique("in"), "coins_70", region="IN"),
        403,
        "unavailable_in_region",
    )

    assert await coins_of(api, viewer) == 0
    assert [e for e in await ledger(redis, viewer) if e["kind"] == "purchase"] == []


async def test_gifts_from_a_region_where_coins_are_not_sold_are_unavailable_in_region(
    server: ServerProcess, api: Api
) -> None:
    host = await make_user(api, role="host")
    room = await api.open_room(host)
    video = await video_of(api, host)
    viewer = await make_user(api, region="IN", coins=100)
    async with connected(server, viewer, receive_events=False) as ws:
        await ws.join(room)
        with pytest.raises(Forbidden) as refused:
            await ws.send_gift(room, "rose", id=unique("in"))

    assert refused.value.code == "unavailable_in_region"
    error(await video_gift(api, viewer, video, "rose", unique("in")), 403, "unavailable_in_region")
    assert await coins_of(api, viewer) == 100
    assert await diamonds_of(api, host) == 0


# --- age --------------------------------------------------------------------------------------


async def test_a_minor_cannot_buy_coins(api: Api, redis: Redis) -> None:
    minor = await make_user(api, age=17)

    message = error(await recharge(api, minor, unique("minor"), "coins_70"), 403, "forbidden")

    assert "18" in message
    assert await coins_of(api, minor) == 0
    assert [e for e in await ledger(redis, minor) if e["kind"] == "purchase"] == []


async def test_an_adult_of_exactly_18_can_buy_coins(api: Api) -> None:
    adult = await make_user(api, age=18)

    assert ok(await recharge(api, adult, unique("adult"), "coins_70"))["status"] == "paid"


async def test_a_minor_cannot_send_gifts_live_or_to_a_video(
    server: ServerProcess, api: Api
) -> None:
    host = await make_user(api, role="host")
    room = await api.open_room(host)
    video = await video_of(api, host)
    minor = await make_user(api, coins=500, age=16)
    async with connected(server, minor, receive_events=False) as ws:
        await ws.join(room)
        with pytest.raises(Forbidden) as refused:
            await ws.send_gift(room, "rose", id=unique("minor"))

    assert refused.value.code == "forbidden"
    error(await video_gift(api, minor, video, "rose", unique("minor")), 403, "forbidden")
    assert await coins_of(api, minor) == 500
    assert await diamonds_of(api, host) == 0


async def test_a_minor_host_cannot_receive_gifts_live_or_on_a_video(
    server: ServerProcess, api: Api
) -> None:
    minor_host = await make_user(api, role="host", age=15)
    room = await api.open_room(minor_host)
    video = await video_of(api, minor_host)
    viewer = await make_user(api, coins=500)
    async with connected(server, viewer, receive_events=False) as ws:
        await ws.join(room)
        with pytest.raises(Forbidden) as refused:
            await ws.send_gift(room, "confetti", id=unique("to-minor"))

    assert refused.value.code == "forbidden"
    error(await video_gift(api, viewer, video, "confetti", unique("to-minor")), 403, "forbidden")
    assert await coins_of(api, viewer) == 500
    assert await diamonds_of(api, minor_host) == 0


# --- the daily cap and the guardian lock -----------------------------------------------------


async def test_the_daily_cap_is_set_by_the_user_and_shown_with_what_is_left(api: Api) -> None:
    viewer = await make_user(api, coins=10)

    limits = ok(await set_cap(api, viewer, 250))

    assert limits == {
        "daily_cap": 250,
        "spent_today": 0,
        "left_today": 250,
        "guardian_lock": False,
    }
    assert ok(await get(api, "/v1/wallet/limits", viewer)) == limits
    assert (await api.wallet(viewer))["daily_cap"] == 250
    cleared = ok(await set_cap(api, viewer, None))
    assert (cleared["daily_cap"], cleared["left_today"]) == (None, None)


async def test_gifts_over_the_daily_cap_are_refused_with_spending_limit_and_change_nothing(
    server: ServerProcess, api: Api, redis: Redis
) -> None:
    host = await make_user(api, role="host")
    room = await api.open_room(host)
    video = await video_of(api, host)
    viewer = await make_user(api, coins=1000)
    ok(await set_cap(api, viewer, 105))
    async with connected(server, viewer, receive_events=False) as ws:
        await ws.join(room)
        first = await ws.send_gift(room, "confetti", id=unique("cap"))
        assert first.coins == 900
        before = (
            await api.wallet(viewer),
            await diamonds_of(api, host),
            len(await ledger(redis, viewer)),
        )

        with pytest.raises(SpendingLimit) as over:
            await ws.send_gift(room, "rosa", id=unique("cap"))
        over_video = await video_gift(api, viewer, video, "finger_heart", unique("cap"), count=2)
        within = await ws.send_gift(room, "finger_heart", id=unique("cap"))

    assert over.value.code == "spending_limit"
    error(over_video, 403, "spending_limit")
    assert before[0]["spent_today"] == 100 and before[0]["coins"] == 900
    assert within.coins == 895
    assert (await api.wallet(viewer))["spent_today"] == 105
    assert await diamonds_of(api, host) == before[1] + 5
    assert len(await ledger(redis, viewer)) == before[2] + 1
    limits = ok(await get(api, "/v1/wallet/limits", viewer))
    assert (limits["spent_today"], limits["left_today"]) == (105, 0)


async def test_lowering_the_cap_below_what_was_spent_today_refuses_every_further_gift(
    api: Api,
) -> None:
    host = await make_user(api, role="host")
    video = await video_of(api, host)
    viewer = await make_user(api, coins=1000)
    ok(await video_gift(api, viewer, video, "confetti", unique("spend")))

    ok(await set_cap(api, viewer, 50))

    error(await video_gift(api, viewer, video, "rose", unique("spend")), 403, "spending_limit")
    assert await coins_of(api, viewer) == 900


async def test_the_daily_cap_is_never_exceeded_under_concurrent_gifts_from_four_connections(
    server: ServerProcess, api: Api
) -> None:
    host = await make_user(api, role="host")
    room = await api.open_room(host)
    viewer = await make_user(api, coins=1000)
    ok(await set_cap(api, viewer, 30))
    # 25 gifts in flight on each of four connections at once.
    answers = await gift_burst(server, viewer, room, 4, 25, "capburst")

    acks = [a for a in answers if isinstance(a, Ack)]
    codes = Counter(a.code for a in answers if isinstance(a, ServerError))
    assert len(answers) == 100
    assert len(acks) == 30, codes
    assert codes == {"spending_limit": 70}
    assert sorted(a.coins for a in acks) == list(range(970, 1000))
    wallet = await api.wallet(viewer)
    assert (wallet["coins"], wallet["spent_today"]) == (970, 30)
    assert await diamonds_of(api, host) == 30


async def test_with_a_guardian_lock_only_the_guardian_code_raises_or_removes_the_cap(
    api: Api,
) -> None:
    viewer = await make_user(api, coins=10)
    locked = ok(await set_cap(api, viewer, 100, new_guardian_code="4321"))
    assert (locked["daily_cap"], locked["guardian_lock"]) == (100, True)

    error(await set_cap(api, viewer, 200), 403, "forbidden")
    error(await set_cap(api, viewer, None), 403, "forbidden")
    error(await set_cap(api, viewer, 200, guardian_code="0000"), 403, "forbidden")
    error(await set_cap(api, viewer, 100, new_guardian_code="9999"), 403, "forbidden")
    assert ok(await get(api, "/v1/wallet/limits", viewer))["daily_cap"] == 100

    assert ok(await set_cap(api, viewer, 100))["daily_cap"] == 100
    assert ok(await set_cap(api, viewer, 40))["daily_cap"] == 40
    assert ok(await set_cap(api, viewer, 0))["daily_cap"] == 0
    assert ok(await set_cap(api, viewer, 500, guardian_code="4321"))["daily_cap"] == 500
    removed = ok(await set_cap(api, viewer, None, guardian_code="4321"))
    assert (removed["daily_cap"], removed["guardian_lock"]) == (None, True)
    # A new code replaces the old one, with the old one.
    ok(await set_cap(api, viewer, 10, guardian_code="4321", new_guardian_code="1111"))
    error(await set_cap(api, viewer, 20, guardian_code="4321"), 403, "forbidden")
    assert ok(await set_cap(api, viewer, 20, guardian_code="1111"))["daily_cap"] == 20


async def test_a_cap_of_zero_refuses_every_gift(api: Api) -> None:
    host = await make_user(api, role="host")
    video = await video_of(api, host)
    viewer = await make_user(api, coins=100)
    ok(await set_cap(api, viewer, 0))

    error(await video_gift(api, viewer, video, "rose", unique("zero")), 403, "spending_limit")
    assert await coins_of(api, viewer) == 100


# --- rewards ----------------------------------------------------------------------------------


async def test_the_daily_check_in_grants_points_once_per_day(api: Api, redis: Redis) -> None:
    viewer = await make_user(api)

    first = ok(await post(api, "/v1/rewards/checkin", viewer, {}))
    second = ok(await post(api, "/v1/rewards/checkin", viewer, {}))

    assert first == {"points": 50, "granted": 50}
    assert second == {"points": 50, "granted": 0}
    rewards = ok(await get(api, "/v1/rewards", viewer))
    assert rewards == {"points": 50, "points_per_coin": 100, "daily_checkin_points": 50}
    assert (await api.wallet(viewer))["points"] == 50
    grants = [e for e in await ledger(redis, viewer) if e["kind"] == "points"]
    assert len(grants) == 1


async def test_exchanging_250_points_gives_2_coins_and_keeps_50_points_idempotently(
    promo: PromoServer,
) -> None:
    async with Api(promo.server.base_url) as api:
        viewer = await make_user(api, coins=1)
        assert ok(await post(api, "/v1/rewards/checkin", viewer, {}))["points"] == 250
        request = unique("swap")

        done = ok(await post(api, "/v1/rewards/exchange", viewer, {"id": request, "points": 250}))
        again = ok(await post(api, "/v1/rewards/exchange", viewer, {"id": request, "points": 250}))
        other = await post(api, "/v1/rewards/exchange", viewer, {"id": request, "points": 100})
        too_few = await post(api, "/v1/rewards/exchange", viewer, {"id": unique("s"), "points": 50})
        too_many = await post(
            api, "/v1/rewards/exchange", viewer, {"id": unique("s"), "points": 300}
        )
        wallet = await api.wallet(viewer)

    assert done == {"coins": 3, "points": 50, "credited": 2, "spent_points": 200, "replayed": False}
    assert again == {**done, "replayed": True}
    error(other, 409, "idempotency_conflict")
    error(too_few, 400, "invalid_field")
    error(too_many, 400, "invalid_field")
    assert (wallet["coins"], wallet["points"]) == (3, 50)


# --- gifts to videos --------------------------------------------------------------------------


async def test_a_gift_to_a_video_debits_the_sender_and_credits_the_host_without_animation(
    server: ServerProcess, api: Api
) -> None:
    host = await make_user(api, role="host")
    room = await api.open_room(host)
    video = await video_of(api, host)
    sender = await make_user(api, coins=1000)
    member = await make_user(api, coins=1)
    request = unique("video")
    async with connected(server, host) as host_ws, connected(server, member) as member_ws:
        await host_ws.join(room)
        await member_ws.join(room)

        sent = ok(await video_gift(api, sender, video, "confetti", request))
        retried = ok(await video_gift(api, sender, video, "confetti", request))

        credit, _ = await first_event(host_ws, lambda e: isinstance(e, CreditEvent), RECV_S)
        # A live gift after it: every event the member got before this one's animation.
        fence = await member_ws.send_gift(room, "rose", id=unique("fence"))
        _, before = await first_event(
            member_ws, lambda e: isinstance(e, GiftEvent) and e.event == fence.event, RECV_S
        )

    assert sent == {"id": request, "event": sent["event"], "coins": 900, "video": video}
    assert retried == sent
    assert isinstance(credit, CreditEvent)
    assert (credit.event, credit.video, credit.diamonds) == (sent["event"], video, 100)
    assert (credit.sender, credit.gift, credit.coins) == (sender.user, "confetti", 100)
    assert [e for e in before if isinstance(e, GiftEvent | CreditEvent)] == []
    assert await coins_of(api, sender) == 900
    assert await diamonds_of(api, host) == 101


async def test_a_gift_to_a_video_of_a_host_who_never_went_live_credits_the_host(
    api: Api,
) -> None:
    host = await make_user(api, role="host")
    video = await video_of(api, host)
    sender = await make_user(api, coins=300)

    sent = ok(await video_gift(api, sender, video, "corgi", unique("video")))

    assert sent["coins"] == 1
    assert await diamonds_of(api, host) == 299


async def test_gifts_to_videos_refuse_unknown_videos_gifts_and_short_balances(api: Api) -> None:
    host = await make_user(api, role="host")
    video = await video_of(api, host)
    sender = await make_user(api, coins=50)

    error(await video_gift(api, sender, "vnope", "rose", unique("v")), 404, "not_found")
    error(await video_gift(api, sender, video, "unicorn", unique("v")), 404, "unknown_gift")
    error(await video_gift(api, sender, video, "confetti", unique("v")), 402, "insufficient_coins")
    error(await video_gift(api, host, video, "rose", unique("v")), 403, "forbidden")
    assert await coins_of(api, sender) == 50
    assert await diamonds_of(api, host) == 0


async def test_a_gift_id_used_live_is_a_conflict_when_sent_again_to_a_video(
    server: ServerProcess, api: Api
) -> None:
    host = await make_user(api, role="host")
    room = await api.open_room(host)
    video = await video_of(api, host)
    viewer = await make_user(api, coins=500)
    request = unique("both")
    async with connected(server, viewer, receive_events=False) as ws:
        await ws.join(room)
        live = await ws.send_gift(room, "confetti", id=request)
    assert (live.id, live.coins) == (request, 400)

    again = await video_gift(api, viewer, video, "confetti", request)

    # Same id, other content (a video instead of the live room): not the same request.
    error(again, 409, "idempotency_conflict")


# --- earnings and cash-out --------------------------------------------------------------------


async def test_earnings_show_diamonds_their_value_and_a_coins_estimate(api: Api) -> None:
    host = await make_user(api, role="host")
    video = await video_of(api, host)
    whale = await make_user(api, coins=5000)
    ok(await video_gift(api, whale, video, "fireworks", unique("e"), count=2))  # 2176 coins

    earnings = ok(await get(api, "/v1/earnings?coins=1000", host))

    assert (earnings["diamonds"], earnings["value"], earnings["currency"]) == (2176, "10.88", "USD")
    assert earnings["diamond_value"] == "0.005"
    assert earnings["minimum_payout"] == {"diamonds": 10_000, "value": "50.00"}
    assert earnings["can_cash_out"] is False
    assert earnings["payouts"] == []
    assert earnings["estimate"] == {
        "coins": 1000,
        "diamonds": 1000,
        "value": "5.00",
        "currency": "USD",
    }
    odd = ok(await get(api, "/v1/earnings?coins=1999", host))["estimate"]
    assert (odd["diamonds"], odd["value"]) == (1999, "9.99")
    error(await get(api, "/v1/earnings?coins=lots", host), 400, "invalid_field")


async def test_a_payout_below_10000_diamonds_is_below_minimum_and_debits_nothing(
    api: Api,
) -> None:
    host, _ = await host_with_diamonds(api, 2)

    error(
        await post(api, "/v1/payouts", host, {"id": unique("p"), "diamonds": 9_999}),
        400,
        "below_minimum",
    )

    assert await diamonds_of(api, host) == 20_000
    assert ok_list(await get(api, "/v1/payouts", host)) == []


async def test_a_payout_above_the_diamonds_held_is_insufficient_diamonds(api: Api) -> None:
    host, _ = await host_with_diamonds(api, 1)

    error(
        await post(api, "/v1/payouts", host, {"id": unique("p"), "diamonds": 10_001}),
        402,
        "insufficient_diamonds",
    )

    assert await diamonds_of(api, host) == 10_000
    assert ok_list(await get(api, "/v1/payouts", host)) == []


async def test_a_payout_debits_the_diamonds_once_and_is_idempotent_on_its_id(
    api: Api,
) -> None:
    host, _ = await host_with_diamonds(api, 2)
    request = unique("payout")

    paid = ok(await post(api, "/v1/payouts", host, {"id": request, "diamonds": 15_000}))
    again = ok(await post(api, "/v1/payouts", host, {"id": request, "diamonds": 15_000}))
    other = await post(api, "/v1/payouts", host, {"id": request, "diamonds": 12_000})

    record = paid["payout"]
    assert (paid["diamonds"], paid["replayed"]) == (5_000, False)
    assert (record["id"], record["diamonds"], record["amount"]) == (request, 15_000, "75.00")
    assert (record["currency"], record["state"]) == ("USD", "paid")
    assert again == {"payout": record, "diamonds": 5_000, "replayed": True}
    error(other, 409, "idempotency_conflict")
    assert await diamonds_of(api, host) == 5_000
    assert ok_list(await get(api, "/v1/payouts", host)) == [record]
    earnings = ok(await get(api, "/v1/earnings", host))
    assert (earnings["diamonds"], earnings["value"], earnings["payouts"]) == (
        5_000,
        "25.00",
        [record],
    )


async def test_concurrent_payouts_never_take_more_diamonds_than_the_host_holds(
    api: Api,
) -> None:
    host, _ = await host_with_diamonds(api, 3)

    answers = await asyncio.gather(
        *(post(api, "/v1/payouts", host, {"id": f"race-{n}", "diamonds": 10_000}) for n in range(8))
    )

    statuses = Counter(r.status_code for r in answers)
    assert statuses == {200: 3, 402: 5}, [r.text for r in answers]
    assert await diamonds_of(api, host) == 0
    assert len(ok_list(await get(api, "/v1/payouts", host))) == 3


async def test_a_viewer_without_a_room_cannot_cash_out(api: Api) -> None:
    viewer = await make_user(api, coins=10)

    error(
        await post(api, "/v1/payouts", viewer, {"id": unique("p"), "diamonds": 10_000}),
        400,
        "below_minimum",
    )
    assert ok_list(await get(api, "/v1/payouts", viewer)) == []


# --- refunds ----------------------------------------------------------------------------------


async def test_a_refund_claws_back_only_unspent_coins_and_gifts_sent_stay_final(
    api: Api, redis: Redis
) -> None:
    host = await make_user(api, role="host")
    video = await video_of(api, host)
    viewer = await make_user(api)
    receipt = unique("refund")
    bought = ok(await recharge(api, viewer, receipt, "coins_70"))
    # 70 coins, plus a bonus if a bundled promotion happens to be active today.
    left = bought["credited"] - 50
    assert left == 20 + BUNDLED.quote("US", "web", datetime.now(UTC), package="coins_70").bonus
    ok(await video_gift(api, viewer, video, "doughnut", unique("r")))
    ok(await video_gift(api, viewer, video, "perfume", unique("r")))
    assert await coins_of(api, viewer) == left

    refund = ok(await store_event(api, "refunded", receipt))
    again = ok(await store_event(api, "refunded", receipt))

    assert refund == {
        "receipt": receipt,
        "status": "refunded",
        "coins": 0,
        "clawed_back": left,
        "unrecovered": 50,
        "replayed": False,
    }
    assert again == {**refund, "replayed": True}
    assert await coins_of(api, viewer) == 0
    assert await diamonds_of(api, host) == 50
    (entry,) = [e for e in await ledger(redis, viewer) if e["kind"] == "refund"]
    assert (entry["ref"], entry["unrecovered"], entry["balance"]) == (receipt, "50", "0")
    assert set(entry["post"].split(";")) == {
        f"user:{viewer.user} coins -{left}",
        f"platform:refunds coins {left}",
    }
    error(await video_gift(api, viewer, video, "rose", unique("r")), 402, "insufficient_coins")
    replay = ok(await recharge(api, viewer, receipt, "coins_70"))
    assert (replay["status"], replay["credited"], replay["replayed"]) == (
        "refunded",
        bought["credited"],
        True,
    )
    assert await coins_of(api, viewer) == 0


async def test_a_refund_of_an_unspent_purchase_claws_back_all_of_it(api: Api) -> None:
    viewer = await make_user(api, coins=15)
    receipt = unique("refund")
    bought = ok(await recharge(api, viewer, receipt, "coins_350"))

    refund = ok(await store_event(api, "refunded", receipt))

    assert (refund["clawed_back"], refund["unrecovered"]) == (bought["credited"], 0)
    assert refund["coins"] == 15
    assert await coins_of(api, viewer) == 15


async def test_refunds_of_unknown_or_unpaid_receipts_change_nothing(api: Api) -> None:
    viewer = await make_user(api, coins=5)
    pending = unique("test-late")
    ok(await recharge(api, viewer, pending, "coins_70"), 202)
    declined = unique("test-decline")
    error(await recharge(api, viewer, declined, "coins_70"), 402, "payment_declined")

    error(await store_event(api, "refunded", unique("never")), 404, "not_found")
    error(await store_event(api, "refunded", pending), 400, "invalid_field")
    error(await store_event(api, "refunded", declined), 404, "not_found")
    error(await store_event(api, "chargeback", pending), 400, "invalid_field")

    assert await coins_of(api, viewer) == 5


# --- the audit --------------------------------------------------------------------------------


async def test_the_audit_is_clean_after_purchases_refunds_caps_rewards_videos_and_payouts(
    fresh_valkey: EmbeddedValkey, promo_economy_path: Path
) -> None:
    env = {"GIFTSTREAM_ECONOMY_PATH": str(promo_economy_path)}
    async with serving(ServerProcess(fresh_valkey.url, env=env)) as (server, api):
        host = await make_user(api, role="host")
        room = await api.open_room(host)
        video = await video_of(api, host)
        viewer = await make_user(api, coins=100)
        whale = await make_user(api, coins=30_000)
        spender = await make_user(api)

        # Purchases: paid with a bonus, replayed, conflicting, declined, late, failed, flagged.
        receipt = unique("a")
        assert ok(await recharge(api, viewer, receipt, "coins_700"))["credited"] == 805
        ok(await recharge(api, viewer, receipt, "coins_700"))
        error(await recharge(api, viewer, receipt, "coins_70"), 409, "idempotency_conflict")
        error(
            await recharge(api, viewer, unique("test-fraud"), "coins_70"), 402, "payment_declined"
        )
        late = unique("test-late")
        ok(await recharge(api, viewer, late, "coins_350", channel="ios"), 202)
        assert ok(await store_event(api, "settled", late))["credited"] == 420
        failed = unique("test-late")
        ok(await recharge(api, viewer, failed, "coins_350"), 202)
        ok(await store_event(api, "failed", failed))
        error(await recharge(api, viewer, unique("vpn"), "coins_70", region="JP"), 403, "forbidden")
        # Rewards.
        ok(await post(api, "/v1/rewards/checkin", viewer, {}))
        ok(await post(api, "/v1/rewards/exchange", viewer, {"id": "x", "points": 250}))
        # Gifts live and to a video, one retried, one over the cap.
        ok(await set_cap(api, viewer, 600, new_guardian_code="77"))
        async with connected(server, viewer, receive_events=False) as ws:
            await ws.join(room)
            first = await ws.send_gift(room, "confetti", id="g1")
            assert await ws.send_gift(room, "confetti", id="g1") == first
            await ws.send_gift(room, "rose", count=5, id="g2")
            with pytest.raises(InsufficientCoins):
                await ws.send_gift(room, "private_jet", id="g3")
        ok(await video_gift(api, viewer, video, "corgi", "g4"))
        error(await video_gift(api, viewer, video, "money_gun", "g5"), 403, "spending_limit")
        # A host with enough diamonds cashes out.
        ok(await video_gift(api, whale, video, "interstellar", "w1"))
        ok(await video_gift(api, whale, video, "interstellar", "w2"))
        ok(await post(api, "/v1/payouts", host, {"id": "p1", "diamonds": 12_000}))
        ok(await post(api, "/v1/payouts", host, {"id": "p1", "diamonds": 12_000}))
        # A refund after spending most of the purchase.
        refunded = unique("r")
        assert ok(await recharge(api, spender, refunded, "coins_70"))["credited"] == 80
        ok(await video_gift(api, spender, video, "perfume", "s1", count=3))
        assert ok(await store_event(api, "refunded", refunded))["clawed_back"] == 20
        ok(await store_event(api, "refunded", refunded))

        code, report = await audit(fresh_valkey.url)

    assert code == 0, report
    assert "audit clean" in report, report
    granted = 100 + 30_000 + 805 + 420 + 2 + 80
    spent = 100 + 5 + 299 + 20_000 + 60
    assert f"coins granted {granted} = held {granted - spent - 20} + spent {spent}" in report
    assert "+ refunded 20" in report, report
    assert f"diamonds credited {spent} = held {spent - 12_000} + paid out 12000" in report
    assert "points issued 250 = held 50 + redeemed 200" in report, report
    assert "gifts debited 6: credited 6, in flight 0" in report, report
