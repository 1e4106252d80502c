// The host view: go live, watch diamonds come in, thank gifters, end the LIVE and see a summary.

import { api } from "./api.js";
import { BattleBar, BattleControls } from "./battles.js";
import { Chests } from "./chests.js";
import { art } from "./gifts.js";
import { randomId } from "./giftstream.js";
import { $, avatar, duration, flash, fmt, h, money, toast } from "./ui.js";

const DIAMOND_VALUE_USD = 0.005; // until GET /v1/earnings says otherwise
const FEED_SIZE = 60;
const VIEWERS_REFRESH_MS = 5000;
const COUNT_UP_MS = 700;

/** What one LIVE brought in: the server's figures when the page joined (`fromServer`), plus
 * every credit after the room offset they count up to. Credits that land before those figures
 * arrive wait, so that none is counted twice. */
class LiveSession {
  constructor() {
    this.startedAt = Date.now();
    this.diamonds = 0;
    this.gifts = 0;
    this.byFrom = new Map();
    // The room offset the server's figures count up to; null until they came.
    this.countedUpTo = null;
    this.waiting = [];
  }

  fromServer(summary) {
    // The server's clock and the browser's may differ: only the elapsed time is taken.
    this.startedAt = Date.now() - summary.duration_ms;
    this.diamonds = summary.diamonds;
    this.gifts = summary.gifts;
    for (const g of summary.top_gifters) {
      this.byFrom.set(g.user, { user: g.user, name: g.name, coins: g.coins });
    }
    this.countedUpTo = summary.offset;
    for (const c of this.waiting.splice(0)) this.add(c);
  }

  /** Count a credit; returns its gifter's entry (null while the server's figures are awaited). */
  add(c) {
    if (this.countedUpTo === null) {
      this.waiting.push(c);
      return null;
    }
    if (c.offset <= this.countedUpTo) return null;
    this.diamonds += c.diamonds;
    this.gifts += c.count;
    const fan = this.byFrom.get(c.from) ?? { user: c.from, name: c.fromName, coins: 0 };
    fan.coins += c.coins ?? c.diamonds;
    this.byFrom.set(c.from, fan);
    return fan;
  }

  topGifters() {
    return [...this.byFrom.values()].sort((a, b) => b.coins - a.coins);
  }
}

export class HostView {
  constructor({ client, account, stage, effects, catalog }) {
    Object.assign(this, { client, account, stage, effects, catalog });
    this.room = null;
    this.live = false;
    this.session = null;
    this.sessionId = null;
    this.summaryShown = null;
    this.total = 0;
    this.shownTotal = 0;
    this.thanked = new Set();
    this.diamondValue = DIAMOND_VALUE_USD;
    this.currency = "USD";
    this.minimumPayout = null;
    client.addEventListener("credit", (e) => e.room === this.room && this.#onCredit(e));
    client.addEventListener("gift", (e) => e.room === this.room && this.effects.play(e));
    client.addEventListener("room", (e) => e.room === this.room && this.#onLive(e.live));
    client.addEventListener("joined", (e) => e.room === this.room && this.#setViewers(e.viewers));
    client.addEventListener("frame", (e) => {
      const f = e.frame;
      if (f.t === "viewers" && f.room === this.room && Number.isInteger(f.viewers)) this.#setViewers(f.viewers);
      if (f.t === "session_summary" && f.room === this.room) this.#showSummary(f);
    });
    this.chests = new Chests($("#chests"), client, { canClaim: false });
    this.battleBar = new BattleBar($("#battle"), client);
    this.battles = new BattleControls($("#battle-card"), client);
    $("#cashout-btn").addEventListener("click", () => this.cashOut());
    $("#golive-btn").addEventListener("click", () => this.goLive());
    $("#end-live").addEventListener("click", () => this.endLive());
    $("#summary-again").addEventListener("click", () => {
      $("#summary").close();
      this.goLive();
    });
    setInterval(() => this.#tick(), 1000);
    setInterval(() => this.#refreshViewers(), VIEWERS_REFRESH_MS);
  }

  async start(welcome) {
    this.#setTotal(welcome.diamonds, false);
    this.#loadEarnings();
    $("#stream-title").textContent = "Your LIVE";
    $("#host-name").textContent = welcome.name ?? welcome.user;
    $("#host-avatar").replaceChildren(avatar(welcome.name ?? welcome.user, welcome.user, "md"));
    if (welcome.room) {
      await this.#enter(welcome.room);
      if (this.live) await this.#beginSession();
    }
    this.#render();
  }

  async goLive() {
    try {
      const { body } = await api("/v1/rooms", { method: "POST", token: this.account.token });
      await this.#enter(body.room);
      this.live = true;
      this.sessionId = body.session;
      await this.#beginSession();
      this.#render();
      toast("You are LIVE! Share your viewer link.", "success");
    } catch (e) {
      toast(`Could not go live: ${e.message}`, "error");
    }
  }

  async endLive() {
    if (!this.room) return;
    $("#end-live").disabled = true;
    try {
      const { body } = await api(`/v1/rooms/${encodeURIComponent(this.room)}/end`, {
        method: "POST",
        token: this.account.token,
      });
      this.#onLive(false);
      if (body.summary) this.#showSummary(body.summary);
    } catch (e) {
      toast(`Could not end the LIVE: ${e.message}`, "error");
    } finally {
      $("#end-live").disabled = false;
    }
  }

  async #enter(room) {
    this.room = room;
    this.chests.watch(room);
    this.stage.setScene(room);
    $("#stage").dataset.room = room;
    const link = `${location.origin}/?room=${encodeURIComponent(room)}`;
    $("#viewer-link").href = link;
    $("#host-room").textContent = room;
    const joined = await this.client.join(room);
    this.live = joined.live;
    this.sessionId = joined.session;
    this.#setViewers(joined.viewers);
    this.battleBar.watch(room, joined.battle);
    this.battles.watch(room);
  }

  /** A LIVE under way: its figures so far come from the server (the page may join late). */
  async #beginSession() {
    const session = new LiveSession();
    this.session = session;
    this.summaryShown = null;
    this.thanked.clear();
    $("#credit-feed").replaceChildren();
    $("#credits-empty").hidden = false;
    this.effects.clear();
    this.#renderThanks();
    this.#renderSession();
    try {
      const path = `/v1/rooms/${encodeURIComponent(this.room)}/sessions/${this.sessionId}`;
      const { body } = await api(path);
      if (this.session !== session) return;
      session.fromServer(body);
    } catch {
      // Counted from here on, then.
      session.fromServer({ duration_ms: 0, diamonds: 0, gifts: 0, top_gifters: [], offset: 0 });
    }
    this.#renderSession();
    this.#renderThanks();
    this.#tick();
  }

  #onLive(live) {
    const wasLive = this.live;
    this.live = live;
    if (wasLive && !live) this.#fetchSummary();
    this.#render();
  }

  #render() {
    $("#golive").hidden = this.live;
    $("#studio").hidden = !this.live;
    $("#stage-offline").hidden = this.live;
    $("#stage").classList.toggle("is-ended", !this.live);
  }

  // -- credits ---------------------------------------------------------------------------------

  #onCredit(c) {
    this.#setTotal(c.total, true);
    const fan = this.session ? this.session.add(c) : null;
    const time = new Date(c.ts ?? Date.now()).toLocaleTimeString([], { hourCycle: "h23" });
    const item = h(
      "li",
      { class: `credit${c.diamonds >= 1000 ? " big" : ""}`, "data-event": c.event },
      avatar(c.fromName, c.from, "sm"),
      h(
        "span",
        { class: "credit-text" },
        h("b", {}, c.fromName),
        h("span", {}, ` sent ${c.count > 1 ? `${fmt(c.count)} × ` : ""}${c.giftName} `),
        h("span", { class: "credit-art" }, art(c.gift)),
        h("small", {}, time),
      ),
      h("span", { class: "credit-diamonds" }, `+${fmt(c.diamonds)}`, h("i", { class: "gem" })),
    );
    const feed = $("#credit-feed");
    feed.prepend(item);
    while (feed.children.length > FEED_SIZE) feed.lastElementChild.remove();
    $("#credits-empty").hidden = true;
    if (fan) {
      this.#renderSession();
      this.#renderThanks(fan.coins === (c.coins ?? c.diamonds) ? fan.user : null);
    }
  }

  #setTotal(total, animate) {
    this.total = total;
    const el = $("#diamond-total");
    el.dataset.diamonds = total;
    $("#money").textContent = money(total * this.diamondValue, this.currency);
    this.#renderCashOut();
    if (!animate) {
      this.shownTotal = total;
      el.textContent = fmt(total);
      return;
    }
    flash($(".earnings"), "glow");
    const from = this.shownTotal;
    const started = performance.now();
    const step = (now) => {
      if (this.total !== total) return; // a newer total took over
      const k = Math.min(1, Math.max(0, now - started) / COUNT_UP_MS);
      this.shownTotal = Math.round(from + (total - from) * (1 - (1 - k) ** 3));
      el.textContent = fmt(this.shownTotal);
      if (k < 1) requestAnimationFrame(step);
    };
    requestAnimationFrame(step);
  }

  async #loadEarnings() {
    try {
      const { body } = await api("/v1/earnings", { token: this.account.token });
      this.diamondValue = Number(body.diamond_value) || DIAMOND_VALUE_USD;
      this.currency = body.currency ?? "USD";
      this.minimumPayout = body.minimum_payout;
      $("#money").textContent = money(this.total * this.diamondValue, this.currency);
      $("#diamond-rate").textContent = `${money(this.diamondValue, this.currency, 4)} per diamond`;
      this.#renderPayouts(body.payouts);
    } catch {
      // the default rate stands
    }
  }

  // -- cash-out --------------------------------------------------------------------------------

  /** Cash out every diamond (POST /v1/payouts, one id per click: a retry cannot pay twice). */
  async cashOut() {
    const button = $("#cashout-btn");
    button.disabled = true;
    try {
      const { body } = await api("/v1/payouts", {
        method: "POST",
        token: this.account.token,
        body: { id: `cashout-${randomId()}`, diamonds: this.total },
      });
      this.#setTotal(body.diamonds, false);
      toast(`Cashed out ${fmt(body.payout.diamonds)} diamonds: ${money(Number(body.payout.amount), body.payout.currency)} is on its way.`, "success");
      await this.#loadPayouts();
    } catch (e) {
      toast(e.message, "error");
    } finally {
      this.#renderCashOut();
    }
  }

  async #loadPayouts() {
    if (this.minimumPayout === null) return;
    try {
      const { body } = await api("/v1/payouts", { token: this.account.token });
      this.#renderPayouts(Array.isArray(body) ? body : body.payouts);
    } catch {
      // the next credit or cash-out reads them again
    }
  }

  #renderPayouts(payouts = []) {
    const list = $("#payout-list");
    list.replaceChildren(
      ...[...payouts]
        .sort((a, b) => b.ts - a.ts)
        .map((p) =>
          h(
            "li",
            { class: "payout", "data-payout": p.id },
            h("span", { class: "payout-amount" }, money(Number(p.amount), p.currency)),
            h("span", { class: "payout-diamonds" }, fmt(p.diamonds), h("i", { class: "gem" })),
            h("small", {}, new Date(p.ts).toLocaleString([], { hourCycle: "h23" })),
          ),
        ),
    );
    $("#payouts-empty").hidden = payouts.length > 0;
    this.#renderCashOut();
  }

  #renderCashOut() {
    const button = $("#cashout-btn");
    const minimum = this.minimumPayout;
    button.disabled = !minimum || this.total < minimum.diamonds;
    button.textContent = `Cash out ${money(this.total * this.diamondValue, this.currency)}`;
    $("#cashout-note").textContent = minimum
      ? `Minimum ${fmt(minimum.diamonds)} diamonds (${money(Number(minimum.value), this.currency)})`
      : "";
  }

  #renderSession() {
    const s = this.session;
    if (!s) return;
    $("#session-diamonds").textContent = `+${fmt(s.diamonds)}`;
    $("#session-money").textContent = money(s.diamonds * this.diamondValue, this.currency);
    $("#session-gifts").textContent = fmt(s.gifts);
    $("#session-gifters").textContent = fmt(s.byFrom.size);
  }

  #renderThanks(fresh = null) {
    const fans = this.session ? this.session.topGifters() : [];
    $("#thank-list").replaceChildren(
      ...fans.map((f) => {
        const done = this.thanked.has(f.user);
        const item = h(
          "li",
          { class: `thank${done ? " done" : ""}${f.user === fresh ? " fresh" : ""}`, "data-user": f.user },
          avatar(f.name, f.user, "sm"),
          h("span", { class: "thank-who" }, h("b", {}, f.name), h("small", {}, `${fmt(f.coins)} coins given`)),
          h(
            "button",
            {
              class: "btn tiny",
              type: "button",
              onclick: () => {
                this.thanked.add(f.user);
                toast(`You thanked ${f.name} ❤️`, "success");
                this.#renderThanks();
              },
            },
            done ? "Thanked ✓" : "Thank ❤️",
          ),
        );
        return item;
      }),
    );
    $("#thanks-empty").hidden = fans.length > 0;
  }

  // -- viewers and the clock -------------------------------------------------------------------

  #setViewers(n) {
    const el = $("#viewer-count");
    el.textContent = fmt(n);
    el.dataset.viewers = n;
    $("#host-viewers").textContent = fmt(n);
  }

  async #refreshViewers() {
    if (!this.live) return;
    try {
      const rooms = (await api("/v1/rooms")).body;
      const mine = rooms.find((r) => r.room === this.room);
      if (mine) this.#setViewers(mine.viewers);
    } catch {
      // the next refresh may work
    }
  }

  #tick() {
    if (this.session && this.live) $("#live-timer").textContent = duration(Date.now() - this.session.startedAt);
  }

  // -- the end ---------------------------------------------------------------------------------

  /** The ended session's summary from the server (the `room` frame may come before it). */
  async #fetchSummary() {
    const room = this.room;
    const session = this.sessionId;
    try {
      const { body } = await api(`/v1/rooms/${encodeURIComponent(room)}/sessions/${session}`);
      if (!body.live && room === this.room) this.#showSummary(body);
    } catch {
      // The /end answer or the session_summary frame brings it too.
    }
  }

  /** The server's summary of an ended session: figures, gifts by kind, top gifters, peak. */
  #showSummary(summary) {
    if (summary.live || this.summaryShown === summary.session) return;
    this.summaryShown = summary.session;
    const dialog = $("#summary");
    $("#summary-duration").textContent = duration(summary.duration_ms);
    $("#summary-diamonds").textContent = fmt(summary.diamonds);
    $("#summary-money").textContent = money(summary.diamonds * this.diamondValue, this.currency);
    $("#summary-gifts").textContent = fmt(summary.gifts);
    $("#summary-peak").textContent = fmt(summary.peak_viewers ?? 0);
    const kinds = [...summary.gifts_by_kind].sort((a, b) => b.count - a.count);
    $("#summary-kinds").replaceChildren(
      ...kinds.map((k) =>
        h(
          "li",
          { "data-gift": k.gift },
          h("span", { class: "kind-art" }, art(k.gift)),
          h("span", { class: "kind-name" }, this.catalog.get(k.gift)?.name ?? k.gift),
          h("span", { class: "kind-count" }, `×${fmt(k.count)}`),
        ),
      ),
    );
    const medals = ["🥇", "🥈", "🥉"];
    $("#summary-top").replaceChildren(
      ...summary.top_gifters.slice(0, 5).map((f, i) =>
        h(
          "li",
          { "data-user": f.user },
          h("span", { class: "rank" }, medals[i] ?? String(i + 1)),
          avatar(f.name, f.user, "sm"),
          h("span", { class: "gifter-name" }, f.name),
          h("span", { class: "gifter-coins" }, h("i", { class: "coin" }), fmt(f.coins)),
        ),
      ),
    );
    // No gifts: a line says so, and no empty headings.
    $("#summary-nothing").hidden = kinds.length > 0;
    $("#summary-cols").hidden = kinds.length === 0;
    if (!dialog.open) dialog.showModal();
  }
}
