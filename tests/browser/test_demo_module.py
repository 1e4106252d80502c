"""The browser module (static/giftstream.js) in a real browser, on a page of the server's
origin: resends, resumes, gifts in flight, backoff."""

from collections.abc import Iterator

import pytest
from playwright.async_api import BrowserContext, Page, expect

from giftstream.store.embedded import EmbeddedValkey
from giftstream_client import Client
from support import Api, ServerProcess, running
from support.browser import (
    TIMEOUT_MS,
    go_live,
    live_room,
    named_user,
    open_page,
)

pytestmark = pytest.mark.browser
expect.set_options(timeout=TIMEOUT_MS)


# A client whose WebSocket loses the first ack, as when a connection dies right after the server
# answered: the client must reconnect and send the same gift id again.
LOST_ACK = """async ({ token, room }) => {
  const { Backoff, GiftstreamClient } = await import("/static/giftstream.js");
  let sockets = 0;
  const giftIds = [];
  class LosingSocket extends WebSocket {
    constructor(url, protocols) {
      super(url, protocols);
      const mine = ++sockets;
      const send = this.send.bind(this);
      this.send = (data) => {
        const frame = JSON.parse(data);
        if (frame.t === "gift") giftIds.push(frame.id);
        send(data);
      };
      this.addEventListener("message", (m) => {
        if (mine === 1 && JSON.parse(m.data).t === "ack") {
          m.stopImmediatePropagation();
          this.close();
        }
      });
    }
  }
  const backoff = new Backoff({ baseMs: 50, maxDelayMs: 200 });
  const url = GiftstreamClient.urlFor(location);
  const client = new GiftstreamClient(url, token, { WebSocket: LosingSocket, backoff });
  await client.connect();
  await client.join(room);
  const ack = await client.sendGift(room, "rose", 1);
  client.close();
  return { ack, sockets, giftIds };
}"""

# A scripted server: three connections, each dropped after its frames. The second resumes in the
# same epoch (its replay overlaps what was seen; live frames come in a batch); the third finds
# the room's history reset (a new epoch).
RESUME = """async () => {
  const { Backoff, GiftstreamClient } = await import("/static/giftstream.js");
  const gift = (offset, extra = {}) => ({
    t: "gift", room: "r1", event: `e${offset}`, offset, from: "u2", from_name: "Bo", to: "h",
    gift: "rose", name: "Rose", count: 1, coins: 1, ...extra,
  });
  const joined = (id, epoch, offset) =>
    ({ t: "joined", id, room: "r1", host: "h", live: true, epoch, offset, viewers: 3 });
  const scripts = [
    (s, id) => { s.reply(joined(id, "A", 10), gift(11), gift(12)); s.drop(); },
    (s, id) => {
      s.reply(joined(id, "A", 14), gift(12), gift(13), gift(14));
      s.reply({ t: "batch", room: "r1", frames: [gift(15), gift(16)] });
      s.reply(gift(16, { streak: { id: "e15", repeat: 2, end: true } }));
      s.drop();
    },
    (s, id) => s.reply(joined(id, "B", 2), gift(1), gift(2)),
  ];
  const sockets = [];
  class ScriptedSocket {
    constructor() {
      this.sent = [];
      this.script = scripts[sockets.push(this) - 1];
      setTimeout(() => this.onopen(), 0);
    }
    send(data) {
      const f = JSON.parse(data);
      this.sent.push(f);
      if (f.t === "auth") this.reply({ t: "welcome", id: f.id, user: "u1", coins: 5, diamonds: 0 });
      if (f.t === "join") this.script(this, f.id);
    }
    reply(...frames) {
      for (const f of frames) setTimeout(() => this.onmessage?.({ data: JSON.stringify(f) }), 0);
    }
    drop() { setTimeout(() => this.onclose?.({ code: 1006 }), 0); }
    close() {}
  }
  const backoff = new Backoff({ baseMs: 1, maxDelayMs: 5 });
  const client = new GiftstreamClient("ws://scripted", "t", { WebSocket: ScriptedSocket, backoff });
  const gifts = [], epochs = [], states = [];
  const done = new Promise((resolve) => client.addEventListener("gift", (e) => {
    gifts.push([e.offset, e.replayed, e.closesStreak]);
    if (gifts.length === 9) resolve();
  }));
  client.addEventListener("epoch", (e) => epochs.push([e.oldEpoch, e.newEpoch]));
  client.addEventListener("state", (e) => states.push(e.state));
  await client.connect();
  await client.join("r1");
  await done;
  client.close();
  const since = sockets.map((s) => s.sent.find((f) => f.t === "join").since ?? null);
  return { gifts, epochs, states, since };
}"""

# 70 gifts at once on a connection that answers none until told.
IN_FLIGHT = """async () => {
  const { GiftstreamClient } = await import("/static/giftstream.js");
  let socket;
  class SilentSocket {
    constructor() { socket = this; this.gifts = []; setTimeout(() => this.onopen(), 0); }
    send(data) {
      const f = JSON.parse(data);
      if (f.t === "gift") this.gifts.push(f.id);
      if (f.t === "auth") {
        const welcome = { t: "welcome", id: f.id, user: "u1", coins: 100, diamonds: 0 };
        setTimeout(() => this.onmessage({ data: JSON.stringify(welcome) }), 0);
      }
    }
    close() {}
  }
  const client = new GiftstreamClient("ws://silent", "t", { WebSocket: SilentSocket });
  await client.connect();
  const acks = Array.from({ length: 70 }, () => client.sendGift("r1", "rose"));
  const before = socket.gifts.length;
  const ack = { t: "ack", id: socket.gifts[0], event: "e1", coins: 99 };
  socket.onmessage({ data: JSON.stringify(ack) });
  const first = await acks[0];
  const after = socket.gifts.length;
  client.close();
  await Promise.allSettled(acks);
  return { before, after, first };
}"""

BACKOFF = """async () => {
  const { Backoff } = await import("/static/giftstream.js");
  const backoff = new Backoff({ baseMs: 250, maxDelayMs: 5000 });
  const attempts = [...Array(12).keys()];
  return {
    ceilings: attempts.map((n) => backoff.delay(n, () => 1)),
    floors: attempts.map((n) => backoff.delay(n, () => 0)),
    drawn: attempts.map((n) => backoff.delay(n)),
  };
}"""


async def module_page(context: BrowserContext, server: ServerProcess) -> Page:
    """A page of the server's origin that runs no app: the module alone."""
    page = await context.new_page()
    await page.goto(f"{server.base_url}/healthz")
    return page


async def test_the_module_resends_a_gift_whose_ack_was_lost_and_it_is_charged_once(
    context: BrowserContext, page_server: ServerProcess, page_api: Api
) -> None:
    room = await live_room(page_api)
    fan = await page_api.user(coins=100)
    page = await module_page(context, page_server)

    result = await page.evaluate(LOST_ACK, {"token": fan.token, "room": room})

    assert result["sockets"] == 2
    first, again = result["giftIds"]
    assert first == again
    assert result["ack"]["coins"] == 99
    assert (await page_api.wallet(fan))["coins"] == 99


# Every gift's first answer is `unavailable` (the server loses the debit's reply): the module
# re-sends the same id by itself and resolves with the one ack.
UNAVAILABLE_ONCE = """async ({ token, room }) => {
  const { Backoff, GiftstreamClient } = await import("/static/giftstream.js");
  const giftIds = [];
  const errors = [];
  class WatchedSocket extends WebSocket {
    constructor(url, protocols) {
      super(url, protocols);
      const send = this.send.bind(this);
      this.send = (data) => {
        const frame = JSON.parse(data);
        if (frame.t === "gift") giftIds.push(frame.id);
        send(data);
      };
      this.addEventListener("message", (m) => {
        const frame = JSON.parse(m.data);
        if (frame.t === "error") errors.push([frame.code, frame.retry]);
      });
    }
  }
  const backoff = new Backoff({ baseMs: 50, maxDelayMs: 200 });
  const url = GiftstreamClient.urlFor(location);
  const client = new GiftstreamClient(url, token, { WebSocket: WatchedSocket, backoff });
  await client.connect();
  await client.join(room);
  const ack = await client.sendGift(room, "rose", 1, { id: "page-retries" });
  client.close();
  return { ack, giftIds, errors };
}"""


@pytest.fixture(scope="module")
def lossy_page_server(valkey: EmbeddedValkey) -> Iterator[ServerProcess]:
    """A server whose every new debit runs and then loses its reply (a store failure)."""
    env = {"GIFTSTREAM_FAULTS": "lose_debit_reply"}
    with running(ServerProcess(valkey.url, env=env)) as s:
        yield s


async def test_the_module_resends_a_gift_answered_unavailable_and_it_is_charged_once(
    context: BrowserContext, lossy_page_server: ServerProcess
) -> None:
    api = Api(lossy_page_server.base_url)
    try:
        room = await live_room(api)
        fan = await api.user(coins=100)
        page = await module_page(context, lossy_page_server)

        result = await page.evaluate(UNAVAILABLE_ONCE, {"token": fan.token, "room": room})

        assert result["errors"] == [["unavailable", True]]
        assert result["giftIds"] == ["page-retries", "page-retries"]
        assert result["ack"]["coins"] == 99
        assert (await api.wallet(fan))["coins"] == 99
    finally:
        await api.aclose()


async def test_the_module_resumes_with_since_drops_duplicates_and_reports_a_new_epoch(
    context: BrowserContext, page_server: ServerProcess
) -> None:
    page = await module_page(context, page_server)

    result = await page.evaluate(RESUME)

    assert result["since"] == [None, {"epoch": "A", "offset": 12}, {"epoch": "A", "offset": 16}]
    # [offset, replayed, closes a streak]: 12 is not delivered twice, the batch is unpacked,
    # and the new epoch's history starts again from 1.
    assert result["gifts"] == [
        [11, False, False],
        [12, False, False],
        [13, True, False],
        [14, True, False],
        [15, False, False],
        [16, False, False],
        [16, False, True],
        [1, True, False],
        [2, True, False],
    ]
    assert result["epochs"] == [["A", "B"]]
    assert result["states"][:5] == ["connecting", "open", "reconnecting", "open", "reconnecting"]


async def test_the_module_keeps_at_most_64_gifts_in_flight(
    context: BrowserContext, page_server: ServerProcess
) -> None:
    page = await module_page(context, page_server)

    result = await page.evaluate(IN_FLIGHT)

    assert result["before"] == 64
    assert result["after"] == 65
    assert result["first"]["coins"] == 99


async def test_the_module_backoff_is_full_jitter_under_a_bounded_ceiling(
    context: BrowserContext, page_server: ServerProcess
) -> None:
    page = await module_page(context, page_server)

    result = await page.evaluate(BACKOFF)

    ceilings = [250, 500, 1000, 2000, 4000] + [5000] * 7
    assert result["ceilings"] == ceilings
    assert result["floors"] == [0] * 12
    assert all(0 <= d <= c for d, c in zip(result["drawn"], ceilings, strict=True))


async def test_the_host_studio_shows_the_earnings_history_from_the_ledger(
    context: BrowserContext, page_server: ServerProcess, page_api: Api
) -> None:
    page = await open_page(context, f"{page_server.base_url}/?host=1")
    room = await go_live(page)
    fan = await named_user(page_api.http, "Lea", coins=1_000)
    async with Client(page_server.ws_url, fan.token, receive_events=False) as client:
        await client.join(room)
        await client.send_gift(room, "rose", 3)
        await client.send_gift(room, "finger_heart", 1)
    # Archived to PostgreSQL, then read back by the page: newest first.
    rows = page.locator("#earnings-history li")
    await expect(rows).to_have_count(2)
    await expect(rows.first).to_contain_text("+5 💎 from a gift of 5 coins")
    await expect(rows.last).to_contain_text("+3 💎 from a gift of 3 coins")
