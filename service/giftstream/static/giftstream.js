// giftstream.js — a browser client for the giftstream protocol (JSON subprotocol), no build step.
//
//   import { GiftstreamClient } from "/static/giftstream.js";
//   const client = new GiftstreamClient(GiftstreamClient.urlFor(location), token);
//   client.addEventListener("gift", (e) => console.log(`${e.fromName} sent ${e.count} × ${e.giftName}`));
//   await client.connect();
//   await client.join(room);
//   const ack = await client.sendGift(room, "rose", 1); // ack.coins: your balance after it
//
// Guarantees, across any number of dropped connections:
// - sendGift (and dropChest) charges at most once: it keeps one idempotency id and re-sends that
//   id after each reconnect until the server answers or refuses; an answer with `retry: true`
//   (`unavailable`: the store failed mid-gift, charged or not) is re-sent the same way, after a
//   wait drawn from the backoff, up to MAX_RETRIES times.
// - "gift" and "credit" events of a room come at most once and in offset order: every reconnect
//   authenticates again and joins each room with `since` = the last {epoch, offset} seen, so
//   nothing is missed (live gift frames the server sheds under load excepted: they are lossy).
// - A reset room history is reported as an "epoch" event before its replay.

export const SUBPROTOCOL = "giftstream.v1+json";
// The server's limit of gifts in flight per connection; more wait here.
export const MAX_GIFTS_IN_FLIGHT = 64;
// Re-sends of a gift answered with `retry: true` before its error is given to the caller.
export const MAX_RETRIES = 8;
// A gift's `ws` while it waits to be re-sent: on no connection, and not to be sent yet.
const WAITING = Symbol("waiting");

export const State = Object.freeze({
  CONNECTING: "connecting",
  OPEN: "open",
  RECONNECTING: "reconnecting",
  CLOSED: "closed",
});

/** A refusal from the server (`code` from docs/protocol.md), or a local failure of the client. */
export class GiftstreamError extends Error {
  constructor(code, message, id = null) {
    super(message);
    this.name = "GiftstreamError";
    this.code = code;
    this.id = id;
  }
}

/**
 * Exponential backoff with full jitter: the wait before reconnect attempt n (from 0) is drawn
 * uniformly from [0, min(maxDelayMs, baseMs × factor^n)], so clients cut off together do not
 * come back together, and no wait exceeds maxDelayMs. After maxAttempts failed attempts in a row
 * the client gives up (state "closed").
 */
export class Backoff {
  constructor({ baseMs = 250, maxDelayMs = 5000, factor = 2, maxAttempts = Infinity } = {}) {
    if (!(baseMs > 0 && baseMs <= maxDelayMs && factor >= 1 && maxAttempts >= 1)) {
      throw new RangeError("Backoff needs 0 < baseMs <= maxDelayMs, factor >= 1, maxAttempts >= 1");
    }
    Object.assign(this, { baseMs, maxDelayMs, factor, maxAttempts });
  }

  ceiling(attempt) {
    return Math.min(this.maxDelayMs, this.baseMs * this.factor ** attempt);
  }

  delay(attempt, random = Math.random) {
    return random() * this.ceiling(attempt);
  }
}

/** A random idempotency id: crypto.randomUUID where the page is a secure context. */
export function randomId() {
  if (globalThis.crypto?.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

// -- typed events ------------------------------------------------------------------------------

export class StateEvent extends Event {
  constructor(state, previous, { attempt = 0, delayMs = 0, error = null } = {}) {
    super("state");
    Object.assign(this, { state, previous, attempt, delayMs, error });
  }
}

export class WelcomeEvent extends Event {
  constructor(f) {
    super("welcome");
    this.user = f.user;
    this.coins = f.coins;
    this.diamonds = f.diamonds;
    this.name = f.name ?? null;
    this.region = f.region ?? null;
    this.role = f.role ?? null;
    this.room = f.room ?? null;
  }
}

export class JoinedEvent extends Event {
  constructor(f, resumed) {
    super("joined");
    this.room = f.room;
    this.host = f.host;
    // The host's display name (an extension; the id when the server does not send it).
    this.hostName = f.host_name ?? f.host;
    this.session = f.session ?? null;
    this.live = f.live;
    this.epoch = f.epoch;
    this.offset = f.offset;
    this.viewers = f.viewers;
    // The LIVE battle the room is in, while one is open (an extension), else null.
    this.battle = f.battle ?? null;
    // True when the client joined again after a reconnect.
    this.resumed = resumed;
  }
}

export class GiftEvent extends Event {
  constructor(f, replayed) {
    super("gift");
    this.room = f.room;
    this.event = f.event;
    this.offset = f.offset;
    this.from = f.from;
    this.fromName = f.from_name ?? f.from;
    this.to = f.to;
    this.gift = f.gift;
    this.giftName = f.name ?? f.gift;
    this.count = f.count;
    this.coins = f.coins;
    this.diamonds = f.diamonds ?? null;
    this.streak = f.streak ?? null;
    this.badge = f.badge ?? null;
    this.ts = f.ts ?? null;
    // From the room's history (a resume or a `recent` join), not live.
    this.replayed = replayed;
  }

  /** The live-only frame that closes a streak: it repeats the streak's last tap. */
  get closesStreak() {
    return Boolean(this.streak?.end);
  }
}

export class CreditEvent extends Event {
  constructor(f, replayed) {
    super("credit");
    this.room = f.room;
    this.event = f.event;
    this.offset = f.offset;
    this.from = f.from;
    this.fromName = f.from_name ?? f.from;
    this.gift = f.gift;
    this.giftName = f.name ?? f.gift;
    this.count = f.count;
    this.coins = f.coins ?? null;
    this.diamonds = f.diamonds;
    this.total = f.total;
    this.ts = f.ts ?? null;
    this.replayed = replayed;
  }
}

export class RoomStateEvent extends Event {
  constructor(room, live) {
    super("room");
    Object.assign(this, { room, live });
  }
}

export class EpochChangeEvent extends Event {
  constructor(room, oldEpoch, newEpoch) {
    super("epoch");
    Object.assign(this, { room, oldEpoch, newEpoch });
  }
}

/** An `error` frame that answers no request of this client. */
export class ServerErrorEvent extends Event {
  constructor(error) {
    super("servererror");
    this.error = error;
  }
}

/** A treasure chest dropped in a room: claimable from opensAt to closesAt (server ms). */
export class ChestEvent extends Event {
  constructor(f) {
    super("chest");
    this.room = f.room;
    this.chest = f.chest;
    this.from = f.from;
    this.fromName = f.from_name ?? f.from;
    this.coins = f.coins;
    this.opensAt = f.opens_at;
    this.closesAt = f.closes_at;
  }
}

/** How a chest was shared: `shares` lists the first 20 [{user, name, coins}]. */
export class ChestResultEvent extends Event {
  constructor(f) {
    super("chestresult");
    this.room = f.room;
    this.chest = f.chest;
    this.from = f.from;
    this.coins = f.coins;
    this.claimants = f.claimants;
    this.share = f.share;
    this.remainder = f.remainder;
    this.returned = f.returned;
    this.shares = f.shares ?? [];
  }
}

/** Any other server frame (extensions such as `viewers` or `leaderboard`), as received. */
export class FrameEvent extends Event {
  constructor(frame) {
    super("frame");
    this.frame = frame;
  }
}

// -- the client --------------------------------------------------------------------------------

const HISTORY_FRAMES = new Set(["gift", "credit"]);
// Answers to the idempotent requests (gifts, chest drops), matched by id.
const IDEMPOTENT_ANSWERS = new Set(["ack", "dropped"]);

export class GiftstreamClient extends EventTarget {
  #url;
  #token;
  #backoff;
  #WebSocket;
  #random;
  #heartbeatMs;
  #state = State.CLOSED;
  #ws = null;
  #ready = false; // authenticated on #ws
  #attempt = 0;
  #timer = null;
  #heartbeat = null;
  #pingOut = null;
  #seq = 0;
  #idPrefix = `~${randomId().slice(0, 8)}-`;
  #welcome = null;
  #connectWaiters = [];
  #requests = new Map(); // id → {resolve, reject}: auth, leave, ping (one connection)
  #joinIds = new Map(); // id → room
  #rooms = new Map(); // room → {name, epoch, offset, joinedOffset, live, recent, priming, ...}
  #gifts = new Map(); // id → {frame, resolve, reject, ws}: gifts and chest drops
  #extras;
  #clockOffsetMs = 0;

  /**
   * url: the server's WebSocket URL (see urlFor); token: the user's token.
   * Options: backoff (a Backoff), heartbeatMs (a ping this often; no pong by the next one
   * drops the connection), extras (receive the server's extension frames: room state, viewer
   * counts, chests, batches; default true), WebSocket and random (to substitute in tests).
   */
  constructor(url, token, options = {}) {
    super();
    this.#url = url;
    this.#token = token;
    this.#backoff = options.backoff ?? new Backoff();
    this.#WebSocket = options.WebSocket ?? globalThis.WebSocket;
    this.#random = options.random ?? Math.random;
    this.#heartbeatMs = options.heartbeatMs ?? 15000;
    this.#extras = options.extras ?? true;
  }

  /** ws(s)://host/v1/ws for a page served by the giftstream server itself. */
  static urlFor(location) {
    return `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}/v1/ws`;
  }

  get state() {
    return this.#state;
  }

  /** The latest `welcome` (every reconnect authenticates again), or null. */
  get welcome() {
    return this.#welcome;
  }

  /** The current WebSocket, or null between connections (for diagnostics). */
  get socket() {
    return this.#ws;
  }

  /** Where the client is in a joined room: {epoch, offset}, or null. */
  position(room) {
    const st = this.#rooms.get(room);
    return st && st.epoch !== null ? { epoch: st.epoch, offset: st.offset } : null;
  }

  /** The server's clock (ms), from the latest ping: chest countdowns use it. */
  serverNow() {
    return Date.now() + this.#clockOffsetMs;
  }

  /**
   * Connect and authenticate. Resolves with the first WelcomeEvent; a connection that cannot
   * be made is retried per the backoff. Rejects with code `unauthenticated` for a refused token.
   */
  connect() {
    const done = new Promise((resolve, reject) => this.#connectWaiters.push({ resolve, reject }));
    if (this.#state === State.CLOSED) {
      this.#attempt = 0;
      this.#setState(State.CONNECTING);
      this.#open();
    } else if (this.#welcome && this.#ready) {
      this.#settleConnect(null);
    }
    return done;
  }

  /** Close for good: pending gifts and joins reject with code `closed`. */
  close() {
    this.#finish(null);
  }

  /** While waiting to reconnect: try now (e.g. when the browser is back online). */
  reconnectNow() {
    if (this.#state !== State.RECONNECTING || this.#ws) return;
    clearTimeout(this.#timer);
    this.#open();
  }

  /**
   * Join a room: its events come from now on, and the client joins it again after every
   * reconnect. `recent` > 0 also replays up to that many of the room's latest history events
   * (marked `replayed`). Resolves with the JoinedEvent; rejects e.g. with code `not_found`.
   */
  join(room, { recent = 0 } = {}) {
    let st = this.#rooms.get(room);
    if (!st) {
      st = {
        name: room,
        epoch: null,
        offset: 0,
        joinedOffset: 0,
        live: null,
        recent,
        priming: false,
        joinedOnce: false,
        waiters: [],
      };
      this.#rooms.set(room, st);
      if (this.#ready) this.#sendJoin(st);
    } else if (st.joinedOnce) {
      return Promise.resolve(st.lastJoined);
    }
    return new Promise((resolve, reject) => st.waiters.push({ resolve, reject }));
  }

  /** Leave a room: no more of its events, and no join after a reconnect. */
  async leave(room) {
    const st = this.#rooms.get(room);
    if (!st) return;
    this.#rooms.delete(room);
    this.#rejectAll(st.waiters, new GiftstreamError("left", `left room '${room}'`));
    if (!this.#ready) return;
    try {
      const answer = await this.#ask({ t: "leave", room });
      if (answer.t === "error" && answer.code !== "not_in_room") throw toError(answer);
    } catch (e) {
      if (e.code !== "dropped") throw e;
    }
  }

  /**
   * Send `count` of `gift` to the room's host. Resolves with the ack {id, event, coins}
   * (coins: the sender's balance right after this gift); rejects with the server's error
   * (`insufficient_coins`, `room_not_live`, ...). `id` is the idempotency key (random when
   * omitted): whatever happens to connections, the gift is charged at most once.
   */
  sendGift(room, gift, count = 1, { id = randomId() } = {}) {
    return this.#idempotent({ t: "gift", id, room, gift, count });
  }

  /**
   * Drop a treasure chest of `coins` into a room. Resolves with {id, room, chest, coins,
   * opensAt, closesAt} (coins: the dropper's balance after it); charged at most once, like a gift.
   */
  async dropChest(room, coins, { id = randomId() } = {}) {
    const f = await this.#idempotent({ t: "drop_chest", id, room, coins });
    return { id, room: f.room, chest: f.chest, coins: f.coins, opensAt: f.opens_at, closesAt: f.closes_at };
  }

  /** Claim a chest while it is open. Resolves with your place among the claimants (1 = first). */
  async claim(room, chest) {
    if (!this.#ready) throw new GiftstreamError("offline", "not connected: try again in a moment");
    const answer = await this.#ask({ t: "claim", room, chest });
    if (answer.t === "error") throw toError(answer);
    return answer.order;
  }

  /**
   * A host's LIVE battle request: `battle_invite` {rooms, duration_s?}, or `battle_accept`,
   * `battle_decline`, `battle_end` {battle}. Resolves with the battle's state (as a `battle`
   * frame shows it); rejects with the server's error (`in_battle`, `battle_over`, ...). The
   * battle's frames come as `frame` events.
   */
  async battleRequest(t, fields) {
    if (!this.#ready) throw new GiftstreamError("offline", "not connected: try again in a moment");
    const answer = await this.#ask({ t, ...fields });
    if (answer.t === "error") throw toError(answer);
    return answer;
  }

  #idempotent(frame) {
    if (this.#state === State.CLOSED) {
      return Promise.reject(new GiftstreamError("closed", "the client is closed"));
    }
    if (this.#gifts.has(frame.id)) {
      return Promise.reject(new GiftstreamError("duplicate_id", `'${frame.id}' is in flight`));
    }
    return new Promise((resolve, reject) => {
      this.#gifts.set(frame.id, { frame, resolve, reject, ws: null, retries: 0 });
      this.#pumpGifts();
    });
  }

  // -- connection lifecycle --------------------------------------------------------------------

  #setState(state, detail = {}) {
    const previous = this.#state;
    this.#state = state;
    if (previous !== state || detail.attempt) {
      this.dispatchEvent(new StateEvent(state, previous, detail));
    }
  }

  #open() {
    this.#timer = null;
    let ws;
    try {
      ws = new this.#WebSocket(this.#url, [SUBPROTOCOL]);
    } catch (e) {
      this.#finish(new GiftstreamError("bad_url", String(e)));
      return;
    }
    this.#ws = ws;
    this.#ready = false;
    ws.onopen = () => this.#handshake(ws);
    ws.onmessage = (m) => this.#onMessage(ws, m.data);
    ws.onclose = () => this.#drop(ws);
    ws.onerror = () => this.#drop(ws);
  }

  async #handshake(ws) {
    let answer;
    try {
      const auth = { t: "auth", token: this.#token };
      if (this.#extras) auth.extras = true;
      answer = await this.#ask(auth);
    } catch {
      return; // dropped: #drop schedules the next attempt
    }
    if (answer.t === "error") {
      // A refused token stays refused; any other failure may pass on the next attempt.
      if (answer.code === "unauthenticated") this.#finish(toError(answer));
      else this.#drop(ws);
      return;
    }
    this.#ready = true;
    this.#attempt = 0;
    this.#welcome = new WelcomeEvent(answer);
    this.dispatchEvent(this.#welcome);
    for (const st of this.#rooms.values()) this.#sendJoin(st);
    this.#setState(State.OPEN);
    this.#settleConnect(null);
    this.#pumpGifts();
    this.#startHeartbeat(ws);
  }

  /** The connection `ws` is gone (closed, failed, or silent): reconnect unless closed. */
  #drop(ws) {
    if (ws !== this.#ws) return;
    this.#detach();
    if (this.#state === State.CLOSED) return;
    if (this.#attempt >= this.#backoff.maxAttempts) {
      this.#finish(
        new GiftstreamError("connection_failed", `gave up after ${this.#attempt} attempts`),
      );
      return;
    }
    const delayMs = this.#backoff.delay(this.#attempt, this.#random);
    this.#attempt += 1;
    this.#setState(State.RECONNECTING, { attempt: this.#attempt, delayMs });
    this.#timer = setTimeout(() => this.#open(), delayMs);
  }

  #detach() {
    const ws = this.#ws;
    this.#ws = null;
    this.#ready = false;
    clearInterval(this.#heartbeat);
    this.#pingOut = null;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      try {
        ws.close(1000);
      } catch {
        // already closing
      }
    }
    const dropped = new GiftstreamError("dropped", "the connection dropped");
    for (const { reject } of this.#requests.values()) reject(dropped);
    this.#requests.clear();
    this.#joinIds.clear();
    // Unanswered gifts are sent again, with the same id, on the next connection.
    for (const g of this.#gifts.values()) g.ws = null;
  }

  #finish(error) {
    clearTimeout(this.#timer);
    this.#timer = null;
    this.#detach();
    this.#setState(State.CLOSED, { error });
    const closed = error ?? new GiftstreamError("closed", "the client is closed");
    this.#settleConnect(closed);
    for (const g of this.#gifts.values()) g.reject(closed);
    this.#gifts.clear();
    for (const st of this.#rooms.values()) this.#rejectAll(st.waiters, closed);
  }

  #settleConnect(error) {
    const waiters = this.#connectWaiters;
    this.#connectWaiters = [];
    for (const w of waiters) {
      if (error) w.reject(error);
      else w.resolve(this.#welcome);
    }
  }

  #rejectAll(waiters, error) {
    for (const w of waiters.splice(0)) w.reject(error);
  }

  #startHeartbeat(ws) {
    // A connection that died without a close (a sleeping laptop, a lost network) is noticed
    // by the missing pong, and replaced. Each pong also tells the server's clock.
    const ping = () => {
      if (this.#pingOut !== null) {
        this.#drop(ws);
        return;
      }
      const sent = Date.now();
      this.#pingOut = this.#ask({ t: "ping" }).then(
        (pong) => {
          this.#pingOut = null;
          if (typeof pong.ts === "number") this.#clockOffsetMs = pong.ts - (sent + Date.now()) / 2;
        },
        () => {},
      );
    };
    ping();
    this.#heartbeat = setInterval(ping, this.#heartbeatMs);
  }

  // -- sending ---------------------------------------------------------------------------------

  #nextId() {
    this.#seq += 1;
    return `${this.#idPrefix}${this.#seq}`;
  }

  #send(frame) {
    this.#ws.send(JSON.stringify(frame));
  }

  /** Send a request on the current connection; resolves with its answer or error frame. */
  #ask(frame) {
    const id = this.#nextId();
    return new Promise((resolve, reject) => {
      this.#requests.set(id, { resolve, reject });
      this.#send({ ...frame, id });
    });
  }

  #sendJoin(st) {
    const id = this.#nextId();
    const frame = { t: "join", id, room: st.name };
    if (st.epoch !== null) frame.since = { epoch: st.epoch, offset: st.offset };
    this.#joinIds.set(id, st.name);
    this.#send(frame);
  }

  #pumpGifts() {
    if (!this.#ready) return;
    let inFlight = 0;
    for (const g of this.#gifts.values()) if (g.ws === this.#ws) inFlight += 1;
    for (const g of this.#gifts.values()) {
      if (inFlight >= MAX_GIFTS_IN_FLIGHT) return;
      if (g.ws === this.#ws || g.ws === WAITING) continue;
      g.ws = this.#ws;
      inFlight += 1;
      this.#send(g.frame);
    }
  }

  // -- receiving -------------------------------------------------------------------------------

  #onMessage(ws, data) {
    if (ws !== this.#ws) return;
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return; // the server sends JSON; anything else is not ours to act on
    }
    this.#dispatch(frame);
  }

  #dispatch(frame) {
    if (frame === null || typeof frame !== "object") return;
    const t = frame.t;
    if (t === "batch") {
      for (const inner of frame.frames ?? []) this.#dispatch(inner);
      return;
    }
    if (HISTORY_FRAMES.has(t)) {
      this.#onHistoryEvent(frame);
    } else if (t === "joined") {
      this.#onJoined(frame);
    } else if (IDEMPOTENT_ANSWERS.has(t) || (t === "error" && this.#gifts.has(frame.id))) {
      this.#onGiftAnswer(frame);
      return;
    } else if (t === "room") {
      const st = this.#rooms.get(frame.room);
      if (st) {
        st.live = frame.live;
        this.dispatchEvent(new RoomStateEvent(frame.room, frame.live));
      }
    } else if (t === "error" && this.#joinIds.has(frame.id)) {
      this.#onJoinRefused(frame);
      return;
    } else if (t === "chest" || t === "chest_result") {
      if (this.#rooms.has(frame.room)) {
        this.dispatchEvent(t === "chest" ? new ChestEvent(frame) : new ChestResultEvent(frame));
      }
    } else if (!["welcome", "left", "error", "pong", "claimed", "battle_state"].includes(t)) {
      this.dispatchEvent(new FrameEvent(frame));
    }
    const request = this.#requests.get(frame.id);
    if (request) {
      this.#requests.delete(frame.id);
      request.resolve(frame);
    } else if (t === "error") {
      this.dispatchEvent(new ServerErrorEvent(toError(frame)));
    }
  }

  #onJoined(f) {
    const st = this.#rooms.get(f.room);
    if (!st) return; // left meanwhile
    this.#joinIds.delete(f.id);
    if (st.epoch === null) {
      if (st.recent > 0 && f.offset > 0) {
        // Join again from a little before now; events until that answer are replayed by it.
        st.epoch = f.epoch;
        st.offset = Math.max(0, f.offset - st.recent);
        st.recent = 0;
        st.priming = true;
        this.#sendJoin(st);
        return;
      }
      st.offset = f.offset;
    } else if (st.epoch !== f.epoch) {
      // The history was reset: the server replays the new epoch's whole history.
      this.dispatchEvent(new EpochChangeEvent(f.room, st.epoch, f.epoch));
      st.offset = 0;
    }
    const liveChanged = st.live !== null && st.live !== f.live;
    const resumed = st.joinedOnce;
    Object.assign(st, {
      epoch: f.epoch,
      live: f.live,
      joinedOffset: f.offset,
      priming: false,
      joinedOnce: true,
    });
    st.lastJoined = new JoinedEvent(f, resumed);
    this.dispatchEvent(st.lastJoined);
    // The live-only `room` frame may have been sent while this client was away.
    if (liveChanged) this.dispatchEvent(new RoomStateEvent(f.room, f.live));
    for (const w of st.waiters.splice(0)) w.resolve(st.lastJoined);
  }

  #onJoinRefused(f) {
    const room = this.#joinIds.get(f.id);
    this.#joinIds.delete(f.id);
    const st = this.#rooms.get(room);
    if (!st) return;
    this.#rooms.delete(room);
    this.#rejectAll(st.waiters, toError(f));
  }

  #onHistoryEvent(f) {
    const st = this.#rooms.get(f.room);
    if (!st || st.priming || !st.joinedOnce) return;
    if (f.t === "gift" && f.streak?.end) {
      // Live-only, repeating its last tap's offset: not a duplicate, and no offset to advance.
      this.dispatchEvent(new GiftEvent(f, false));
      return;
    }
    if (typeof f.offset !== "number" || f.offset <= st.offset) return; // seen already
    st.offset = f.offset;
    const replayed = f.offset <= st.joinedOffset;
    this.dispatchEvent(f.t === "gift" ? new GiftEvent(f, replayed) : new CreditEvent(f, replayed));
  }

  #onGiftAnswer(f) {
    const g = this.#gifts.get(f.id);
    if (!g) return; // answered already (a re-sent gift's first answer came late)
    if (f.t === "error" && f.retry === true && g.retries < MAX_RETRIES) {
      // The store failed mid-gift: charged or not, only the same id re-sent can tell.
      const delayMs = this.#backoff.delay(g.retries, this.#random);
      g.retries += 1;
      g.ws = WAITING;
      setTimeout(() => {
        if (this.#gifts.get(f.id) !== g || g.ws !== WAITING) return;
        g.ws = null;
        this.#pumpGifts();
      }, delayMs);
      this.#pumpGifts();
      return;
    }
    this.#gifts.delete(f.id);
    if (f.t === "ack") g.resolve({ id: f.id, event: f.event, coins: f.coins });
    else if (f.t === "dropped") g.resolve(f);
    else g.reject(toError(f));
    this.#pumpGifts();
  }
}

function toError(f) {
  return new GiftstreamError(f.code ?? "internal", f.message ?? "the server refused", f.id ?? null);
}
