"""The coin economy against the real server: the audit is clean after all of it."""

from pathlib import Path

import pytest

from giftstream.store.embedded import EmbeddedValkey
from giftstream_client import InsufficientCoins
from support import ServerProcess, audit, connected, serving
from support.economy import (
    error,
    make_user,
    ok,
    post,
    recharge,
    set_cap,
    store_event,
    unique,
    video_gift,
    video_of,
)

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
