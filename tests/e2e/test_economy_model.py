"""Model-based test of the coin economy: random sequences of recharges (new, replayed,
conflicting, declined, late), gifts live and to a video (new, retried, conflicting, over the
balance, over the cap), cap and guardian-lock changes, payouts and refunds run against the real
service and, side by side, a pure-Python reference model that predicts every answer. The two are
compared after every step; the audit must be clean at the end.

Hypothesis runs in a worker thread with an event loop per example (asyncio.run), so the examples
never touch the event loop pytest-asyncio keeps for the other tests.
"""

import asyncio
import contextlib
import secrets
from collections import Counter
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

import httpx
import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from giftstream.domain.catalog import load_catalog
from giftstream.domain.economy import load_economy
from giftstream.store.embedded import EmbeddedValkey
from giftstream.wire.requests import MAX_GIFT_COUNT as MAX_COUNT
from support import Client, ServerProcess, User, audit, bearer, running

ECONOMY = load_economy()
CATALOG = load_catalog()
MINIMUM_PAYOUT = ECONOMY.minimum_payout_diamonds
RECV_S = 15.0
WHALE_COINS = 60_000
WHALE_GIFT = "interstellar"
Json = dict[str, Any]
T = TypeVar("T")

PACKAGES = ["coins_70", "coins_350", "coins_700", "coins_1400"]
CHANNELS = ["web", "android", "ios"]
GIFTS = ["rose", "finger_heart", "rosa", "doughnut", "confetti"]
CAPS: list[int | None] = [None, 0, 20, 100, 500, 3000]
PAYOUTS = [5_000, 9_999, 10_000, 12_345, 20_000, 10**9]


# --- operations -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recharge:
    kind: Literal["new", "replay", "conflict", "declined", "late"]
    package: str
    channel: str
    pick: int = 0


@dataclass(frozen=True)
class Settle:
    outcome: Literal["settled", "failed"]
    pick: int = 0


@dataclass(frozen=True)
class Gift:
    # to_cap / all_in: exactly what the daily cap still allows / the whole balance (boundaries).
    kind: Literal["new", "retry", "conflict", "over_balance", "over_cap", "to_cap", "all_in"]
    via: Literal["live", "video"]
    gift: str
    count: int
    pick: int = 0


@dataclass(frozen=True)
class SetCap:
    cap: int | None
    with_code: bool


@dataclass(frozen=True)
class SetLock:
    with_code: bool


@dataclass(frozen=True)
class WhaleGift:
    """A big viewer's video gift, so the host has diamonds to cash out."""


@dataclass(frozen=True)
class Payout:
    kind: Literal["new", "replay", "conflict"]
    diamonds: int
    pick: int = 0


@dataclass(frozen=True)
class Refund:
    kind: Literal["purchase", "declined", "unknown"]
    pick: int = 0


Op = Recharge | Settle | Gift | SetCap | SetLock | WhaleGift | Payout | Refund

picks = st.integers(min_value=0, max_value=1000)
operations: st.SearchStrategy[Op] = st.one_of(
    st.builds(
        Recharge,
        kind=st.sampled_from(["new", "replay", "conflict", "declined", "late"]),
        package=st.sampled_from(PACKAGES),
        channel=st.sampled_from(CHANNELS),
        pick=picks,
    ),
    st.builds(Settle, outcome=st.sampled_from(["settled", "failed"]), pick=picks),
    st.builds(
        Gift,
        kind=st.sampled_from(
            ["new", "retry", "conflict", "over_balance", "over_cap", "to_cap", "all_in"]
        ),
        via=st.sampled_from(["live", "video"]),
        gift=st.sampled_from(GIFTS),
        count=st.integers(min_value=1, max_value=4),
        pick=picks,
    ),
    st.builds(SetCap, cap=st.sampled_from(CAPS), with_code=st.booleans()),
    st.builds(SetLock, with_code=st.booleans()),
    st.just(WhaleGift()),
    st.builds(
        Payout,
        kind=st.sampled_from(["new", "replay", "conflict"]),
        diamonds=st.sampled_from(PAYOUTS),
        pick=picks,
    ),
    st.builds(Refund, kind=st.sampled_from(["purchase", "declined", "unknown"]), pick=picks),
)

# One sequence that is sure to reach every rule, whatever the random ones do.
EVERY_RULE: list[Op] = [
    Recharge("new", "coins_350", "web"),
    Recharge("replay", "coins_350", "web"),
    Recharge("conflict", "coins_700", "web"),
    Recharge("declined", "coins_70", "ios"),
    Recharge("late", "coins_70", "android"),
    Recharge("conflict", "coins_350", "android", pick=1),
    Settle("settled"),
    Recharge("late", "coins_700", "web"),
    Settle("failed"),
    Gift("new", "live", "confetti", 1),
    Gift("retry", "live", "confetti", 1),
    Gift("conflict", "live", "confetti", 1),
    Gift("new", "video", "rosa", 2),
    Gift("retry", "video", "rosa", 2, pick=1),
    Gift("over_balance", "video", "rose", 1),
    SetLock(with_code=False),
    SetCap(200, with_code=False),
    SetCap(500, with_code=False),
    SetCap(250, with_code=True),
    Gift("to_cap", "video", "rose", 1),
    Gift("over_cap", "live", "rose", 1),
    SetCap(None, with_code=False),
    SetCap(20, with_code=False),
    Gift("new", "live", "rose", 3),
    WhaleGift(),
    WhaleGift(),
    Payout("new", 9_999),
    Payout("new", 10**9),
    Payout("new", 12_345),
    Payout("replay", 0),
    Payout("conflict", 0),
    Refund("purchase"),
    Refund("purchase"),
    Refund("declined"),
    Refund("unknown"),
    Refund("purchase", pick=2),
    SetCap(None, with_code=True),
    Recharge("new", "coins_70", "web"),
    Gift("all_in", "live", "rose", 1),
    Gift("new", "video", "rose", 1),
]


# --- the reference model ----------------------------------------------------------------------


@dataclass
class Purchase:
    receipt: str
    package: str
    channel: str
    credited: int  # what the purchase credits when paid (coins + bonus)
    state: Literal["paid", "pending", "declined", "refunded"]
    clawed_back: int = 0
    unrecovered: int = 0


@dataclass
class SentGift:
    via: Literal["live", "video"]
    gift: str
    count: int
    event: str
    coins: int  # the balance the ack carried


@dataclass
class PaidOut:
    diamonds: int
    record: Json


@dataclass
class Expected:
    """What the service must answer: an HTTP status or a frame type, and an error code."""

    ok: bool
    code: str | None = None


@dataclass
class Model:
    coins: int
    whale: int = WHALE_COINS
    diamonds: int = 0
    cap: int | None = None
    lock: str | None = None
    spent: int = 0
    purchases: list[Purchase] = field(default_factory=list)
    declined: list[str] = field(default_factory=list)
    gifts: dict[str, SentGift] = field(default_factory=dict)
    payouts: dict[str, PaidOut] = field(default_factory=dict)

    # Each rule mirrors one documented rule of docs/economy.md.

    def gift_outcome(self, cost: int) -> Expected:
        if cost > self.coins:
            return Expected(False, "insufficient_coins")
        if self.cap is not None and self.spent + cost > self.cap:
            return Expected(False, "spending_limit")
        return Expected(True)

    def spend(self, cost: int) -> None:
        self.coins -= cost
        self.spent += cost
        self.diamonds += cost  # one diamond per coin (bundled rate 1/1)

    def cap_outcome(self, cap: int | None, with_code: bool) -> Expected:
        current = self.cap
        loosens = (cap is None and current is not None) or (
            cap is not None and current is not None and cap > current
        )
        if self.lock is not None and loosens and not with_code:
            return Expected(False, "forbidden")
        return Expected(True)

    def payout_outcome(self, diamonds: int) -> Expected:
        if diamonds < MINIMUM_PAYOUT:
            return Expected(False, "below_minimum")
        if diamonds > self.diamonds:
            return Expected(False, "insufficient_diamonds")
        return Expected(True)


def total_coins(package: str, channel: str) -> int:
    return ECONOMY.quote("US", channel, datetime.now(UTC), package=package).total_coins


def cost_of(gift: str, count: int) -> int:
    found = CATALOG.get(gift)
    assert found is not None, gift
    return found.coins * count


def nth(items: list[T], pick: int) -> T | None:
    return items[pick % len(items)] if items else None


# --- the service side -------------------------------------------------------------------------


@dataclass
class World:
    http: httpx.AsyncClient
    ws: Client
    viewer: User
    host: User
    whale: User
    room: str
    video: str
    tag: str
    counter: int = 0

    def fresh(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}-{self.tag}-{self.counter}"


async def create_user(http: httpx.AsyncClient, coins: int, role: str = "viewer") -> User:
    r = await http.post(
        "/v1/dev/users", json={"name": f"m-{role}", "region": "US", "role": role, "coins": coins}
    )
    assert r.status_code == 200, r.text
    return User(r.json()["user"], r.json()["token"])


@contextlib.asynccontextmanager
async def world(server: ServerProcess, start_coins: int) -> AsyncIterator[World]:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10.0) as http:
        viewer = await create_user(http, start_coins)
        host = await create_user(http, 0, "host")
        whale = await create_user(http, WHALE_COINS)
        r = await http.post("/v1/rooms", headers=bearer(host))
        assert r.status_code == 200, r.text
        room = r.json()["room"]
        r = await http.post("/v1/videos", json={}, headers=bearer(host))
        assert r.status_code == 200, r.text
        video = r.json()["video"]
        ws = await Client.open(server.ws_url)
        try:
            await ws.auth(viewer)
            await ws.join(room)
            yield World(http, ws, viewer, host, whale, room, video, secrets.token_hex(4))
        finally:
            await ws.close()


class Replay:
    """Replays operations against the service and the model, comparing after every step."""

    def __init__(self, w: World, model: Model, seen: Counter[str]) -> None:
        self.w = w
        self.m = model
        self.seen = seen

    async def post(self, path: str, user: User | None, body: Json) -> httpx.Response:
        headers = bearer(user) if user is not None else {}
        return await self.w.http.post(path, json=body, headers=headers)

    def check(self, r: httpx.Response, expected: Expected, what: str) -> Json:
        body: Json = r.json()
        if expected.ok:
            assert r.status_code in (200, 202), f"{what}: expected success, got {r.text}"
        else:
            assert r.status_code >= 400, f"{what}: expected {expected.code}, got {r.text}"
            assert body.get("code") == expected.code, f"{what}: expected {expected.code}: {body}"
        self.seen[f"{what}:{'ok' if expected.ok else expected.code}"] += 1
        return body

    # -- recharges ---------------------------------------------------------------------------

    async def recharge(self, op: Recharge) -> None:
        m, w = self.m, self.w
        kind = op.kind
        settled = [p for p in m.purchases if p.state in ("paid", "refunded")]
        if (kind == "replay" and not settled) or (kind == "conflict" and not m.purchases):
            kind = "new"
        if kind == "declined":
            receipt = nth(m.declined, op.pick) if op.pick % 2 and m.declined else None
            receipt = receipt or w.fresh("test-decline")
            r = await self.recharge_call(receipt, op.package, op.channel)
            self.check(r, Expected(False, "payment_declined"), "recharge declined")
            if receipt not in m.declined:
                m.declined.append(receipt)
            return
        if kind == "replay":
            p = nth(settled, op.pick)
            assert p is not None
            body = self.check(
                await self.recharge_call(p.receipt, p.package, p.channel),
                Expected(True),
                "recharge replay",
            )
            # The balance field of a replay is checked by test_economy_http; here, the rest.
            assert (body["status"], body["credited"], body["replayed"]) == (
                p.state,
                p.credited,
                True,
            ), body
            return
        if kind == "conflict":
            p = nth(m.purchases, op.pick)
            assert p is not None
            package = next(x for x in PACKAGES if x != p.package)
            r = await self.recharge_call(p.receipt, package, p.channel)
            self.check(r, Expected(False, "idempotency_conflict"), "recharge conflict")
            return
        late = kind == "late"
        receipt = w.fresh("test-late" if late else "paid")
        credited = total_coins(op.package, op.channel)
        body = self.check(
            await self.recharge_call(receipt, op.package, op.channel),
            Expected(True),
            "recharge late" if late else "recharge new",
        )
        if late:
            assert (body["status"], body["credited"]) == ("pending", 0), body
            m.purchases.append(Purchase(receipt, op.package, op.channel, credited, "pending"))
            return
        m.coins += credited
        m.purchases.append(Purchase(receipt, op.package, op.channel, credited, "paid"))
        assert (body["status"], body["credited"], body["coins"], body["replayed"]) == (
            "paid",
            credited,
            m.coins,
            False,
        ), body

    async def recharge_call(self, receipt: str, package: str, channel: str) -> httpx.Response:
        body = {"receipt": receipt, "package": package, "region": "US", "channel": channel}
        return await self.post("/v1/recharge", self.w.viewer, body)

    async def settle(self, op: Settle) -> None:
        pending = [p for p in self.m.purchases if p.state == "pending"]
        p = nth(pending, op.pick)
        if p is None:
            return
        r = await self.post(
            "/v1/dev/store/events", None, {"type": op.outcome, "receipt": p.receipt}
        )
        body = self.check(r, Expected(True), f"store {op.outcome}")
        if op.outcome == "settled":
            p.state = "paid"
            self.m.coins += p.credited
            assert (body["status"], body["credited"], body["coins"]) == (
                "paid",
                p.credited,
                self.m.coins,
            ), body
        else:
            p.state = "declined"
            assert (body["status"], body["credited"]) == ("declined", 0), body

    # -- gifts -------------------------------------------------------------------------------

    async def gift(self, op: Gift) -> None:
        m = self.m
        kind, via, gift, count = op.kind, op.via, op.gift, op.count
        same_via = [i for i, g in m.gifts.items() if g.via == via]
        if kind in ("retry", "conflict") and not same_via:
            kind = "new"
        if kind in ("retry", "conflict"):
            request_id = nth(same_via, op.pick)
            assert request_id is not None
            sent = m.gifts[request_id]
            if kind == "retry":
                answer = await self.send_gift(via, request_id, sent.gift, sent.count)
                self.expect_gift(answer, Expected(True), "gift retry")
                assert (answer["event"], answer["coins"]) == (sent.event, sent.coins), answer
            else:
                answer = await self.send_gift(via, request_id, sent.gift, sent.count + 1)
                self.expect_gift(answer, Expected(False, "idempotency_conflict"), "gift conflict")
            return
        if kind == "over_balance":
            gift, count = "tiktok_universe", 5
        elif kind == "over_cap" and m.cap is not None:
            gift, count = "rose", max(1, min(m.cap - m.spent + 1, MAX_COUNT))
        elif kind == "to_cap" and m.cap is not None:
            gift, count = "rose", max(1, min(m.cap - m.spent, MAX_COUNT))
        elif kind == "all_in":
            gift, count = "rose", max(1, min(m.coins, MAX_COUNT))
        request_id = self.w.fresh("g")
        cost = cost_of(gift, count)
        expected = m.gift_outcome(cost)
        answer = await self.send_gift(via, request_id, gift, count)
        self.expect_gift(answer, expected, f"gift {kind}")
        if expected.ok:
            m.spend(cost)
            assert answer["coins"] == m.coins, answer
            m.gifts[request_id] = SentGift(via, gift, count, answer["event"], answer["coins"])

    async def send_gift(self, via: str, request_id: str, gift: str, count: int) -> Json:
        """The answer as a dict with `ok`, and `code` or `event`/`coins`."""
        if via == "video":
            r = await self.post(
                f"/v1/videos/{self.w.video}/gifts",
                self.w.viewer,
                {"id": request_id, "gift": gift, "count": count},
            )
            body: Json = r.json()
            return {"ok": r.status_code == 200, "status": r.status_code, **body}
        await self.w.ws.send(
            {"t": "gift", "id": request_id, "room": self.w.room, "gift": gift, "count": count}
        )
        frame = await self.w.ws.answer(request_id, RECV_S)
        return {"ok": frame["t"] == "ack", **frame}

    def expect_gift(self, answer: Json, expected: Expected, what: str) -> None:
        if expected.ok:
            assert answer["ok"], f"{what}: expected an ack, got {answer}"
        else:
            assert not answer["ok"], f"{what}: expected {expected.code}, got {answer}"
            assert answer["code"] == expected.code, f"{what}: expected {expected.code}: {answer}"
        self.seen[f"{what}:{'ok' if expected.ok else expected.code}"] += 1

    async def whale_gift(self) -> None:
        cost = cost_of(WHALE_GIFT, 1)
        r = await self.post(
            f"/v1/videos/{self.w.video}/gifts",
            self.w.whale,
            {"id": self.w.fresh("w"), "gift": WHALE_GIFT, "count": 1},
        )
        if cost > self.m.whale:
            self.check(r, Expected(False, "insufficient_coins"), "whale gift")
            return
        body = self.check(r, Expected(True), "whale gift")
        self.m.whale -= cost
        self.m.diamonds += cost
        assert body["coins"] == self.m.whale, body

    # -- limits ------------------------------------------------------------------------------

    async def set_cap(self, op: SetCap) -> None:
        m = self.m
        body: Json = {"daily_cap": op.cap}
        if op.with_code and m.lock is not None:
            body["guardian_code"] = m.lock
        expected = m.cap_outcome(op.cap, op.with_code and m.lock is not None)
        answer = self.check(
            await self.post("/v1/wallet/limits", self.w.viewer, body), expected, "set cap"
        )
        if expected.ok:
            m.cap = op.cap
            assert (answer["daily_cap"], answer["guardian_lock"]) == (m.cap, m.lock is not None)

    async def set_lock(self, op: SetLock) -> None:
        m = self.m
        code = self.w.fresh("code")
        body: Json = {"daily_cap": m.cap, "new_guardian_code": code}
        if op.with_code and m.lock is not None:
            body["guardian_code"] = m.lock
        allowed = m.lock is None or op.with_code
        expected = Expected(True) if allowed else Expected(False, "forbidden")
        self.check(await self.post("/v1/wallet/limits", self.w.viewer, body), expected, "lock")
        if allowed:
            m.lock = code

    # -- cash-out ----------------------------------------------------------------------------

    async def payout(self, op: Payout) -> None:
        m = self.m
        kind = op.kind if m.payouts else "new"
        if kind == "new":
            request_id, diamonds = self.w.fresh("p"), op.diamonds
        else:
            picked = nth(list(m.payouts), op.pick)
            assert picked is not None
            request_id = picked
            done = m.payouts[request_id].diamonds
            diamonds = done if kind == "replay" else done + 1
        r = await self.post("/v1/payouts", self.w.host, {"id": request_id, "diamonds": diamonds})
        if kind == "conflict":
            self.check(r, Expected(False, "idempotency_conflict"), "payout conflict")
            return
        if kind == "replay":
            body = self.check(r, Expected(True), "payout replay")
            assert body["payout"] == m.payouts[request_id].record, body
            assert (body["diamonds"], body["replayed"]) == (m.diamonds, True), body
            return
        expected = m.payout_outcome(diamonds)
        body = self.check(r, expected, "payout new")
        if expected.ok:
            m.diamonds -= diamonds
            record = body["payout"]
            value = f"{ECONOMY.diamonds_value(diamonds):f}"
            assert (record["id"], record["diamonds"], record["amount"]) == (
                request_id,
                diamonds,
                value,
            ), body
            assert (body["diamonds"], body["replayed"]) == (m.diamonds, False), body
            m.payouts[request_id] = PaidOut(diamonds, record)

    # -- refunds -----------------------------------------------------------------------------

    async def refund(self, op: Refund) -> None:
        m = self.m
        p = nth(m.purchases, op.pick)
        if op.kind == "purchase" and p is not None:
            await self.refund_purchase(p)
            return
        declined = nth(m.declined, op.pick)
        if op.kind == "declined" and declined is not None:
            receipt, what = declined, "refund declined"
        else:
            receipt, what = self.w.fresh("never"), "refund unknown"
        r = await self.post("/v1/dev/store/events", None, {"type": "refunded", "receipt": receipt})
        self.check(r, Expected(False, "not_found"), what)

    async def refund_purchase(self, p: Purchase) -> None:
        m = self.m
        r = await self.post(
            "/v1/dev/store/events", None, {"type": "refunded", "receipt": p.receipt}
        )
        what = f"refund purchase {p.state}"
        if p.state in ("pending", "declined"):
            self.check(r, Expected(False, "invalid_field"), what)
            return
        body = self.check(r, Expected(True), what)
        replayed = p.state == "refunded"
        if not replayed:
            p.clawed_back = min(m.coins, p.credited)
            p.unrecovered = p.credited - p.clawed_back
            p.state = "refunded"
            m.coins -= p.clawed_back
        assert (body["clawed_back"], body["unrecovered"], body["replayed"]) == (
            p.clawed_back,
            p.unrecovered,
            replayed,
        ), body
        assert body["coins"] == m.coins, body

    # -- the comparison ----------------------------------------------------------------------

    async def compare(self) -> None:
        m, w = self.m, self.w
        viewer = await self.wallet(w.viewer)
        host = await self.wallet(w.host)
        whale = await self.wallet(w.whale)
        assert (viewer["coins"], viewer["spent_today"], viewer["daily_cap"]) == (
            m.coins,
            m.spent,
            m.cap,
        ), viewer
        assert viewer["coins"] >= 0
        assert host["diamonds"] == m.diamonds, host
        assert whale["coins"] == m.whale, whale
        r = await w.http.get("/v1/payouts", headers=bearer(w.host))
        assert r.status_code == 200, r.text
        assert sorted(p["id"] for p in r.json()) == sorted(m.payouts), r.text

    async def wallet(self, user: User) -> Json:
        r = await self.w.http.get("/v1/wallet", headers=bearer(user))
        assert r.status_code == 200, r.text
        body: Json = r.json()
        return body

    async def run(self, ops: list[Op]) -> None:
        for step, op in enumerate(ops):
            try:
                await self.apply(op)
                await self.compare()
            except AssertionError as e:
                raise AssertionError(f"step {step} of {ops}:\n  {op}\n  {e}") from e

    async def apply(self, op: Op) -> None:
        match op:
            case Recharge():
                await self.recharge(op)
            case Settle():
                await self.settle(op)
            case Gift():
                await self.gift(op)
            case SetCap():
                await self.set_cap(op)
            case SetLock():
                await self.set_lock(op)
            case WhaleGift():
                await self.whale_gift()
            case Payout():
                await self.payout(op)
            case Refund():
                await self.refund(op)


async def replay_against(
    server: ServerProcess, start_coins: int, ops: list[Op], seen: Counter[str]
) -> None:
    async with world(server, start_coins) as w:
        await Replay(w, Model(coins=start_coins), seen).run(ops)


@pytest.mark.timeout(600)
def test_random_money_operations_answer_as_the_reference_model_and_keep_the_audit_clean(
    fresh_valkey: EmbeddedValkey,
) -> None:
    seen: Counter[str] = Counter()
    examples: list[int] = []

    with running(ServerProcess(fresh_valkey.url)) as server:

        @settings(
            max_examples=20,
            deadline=None,
            derandomize=True,
            database=None,
            # No shrinking: each example runs against the real service, and a failure already
            # names the step and the whole sequence; derandomize makes it reproducible.
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(
            start_coins=st.sampled_from([0, 40, 1000]),
            ops=st.lists(operations, min_size=8, max_size=25),
        )
        @example(start_coins=0, ops=EVERY_RULE)
        def sequences(start_coins: int, ops: list[Op]) -> None:
            examples.append(len(ops))
            asyncio.run(replay_against(server, start_coins, ops, seen))

        with ThreadPoolExecutor(max_workers=1) as pool:
            pool.submit(sequences).result()
            # In the worker thread too: asyncio.run here would reset this thread's event loop.
            code, report = pool.submit(asyncio.run, audit(fresh_valkey.url)).result()

    assert len(examples) >= 10, examples
    # Every rule was exercised at least once (the explicit example guarantees it).
    for outcome in [
        "recharge new:ok",
        "recharge replay:ok",
        "recharge conflict:idempotency_conflict",
        "recharge declined:payment_declined",
        "recharge late:ok",
        "store settled:ok",
        "store failed:ok",
        "gift new:ok",
        "gift retry:ok",
        "gift conflict:idempotency_conflict",
        "gift over_balance:insufficient_coins",
        "gift over_cap:spending_limit",
        "gift to_cap:ok",
        "gift all_in:ok",
        "set cap:forbidden",
        "set cap:ok",
        "lock:ok",
        "whale gift:ok",
        "payout new:ok",
        "payout new:below_minimum",
        "payout new:insufficient_diamonds",
        "payout replay:ok",
        "payout conflict:idempotency_conflict",
        "refund purchase paid:ok",
        "refund purchase refunded:ok",
        "refund purchase declined:invalid_field",
        "refund declined:not_found",
        "refund unknown:not_found",
    ]:
        assert seen[outcome] > 0, (outcome, seen)
    assert code == 0, report
    assert "audit clean" in report, report
