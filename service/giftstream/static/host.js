// The host view: go live, watch diamonds come in, thank gifters, end the LIVE and see a summary.

import { api } from "./api.js";
import { Chests } from "./chests.js";
import { art } from "./gifts.js";
import { $, avatar, duration, flash, fmt, h, money, toast } from "./ui.js";

const DIAMOND_VALUE_USD = 0.005; // until GET /v1/earnings says otherwise
const FEED_SIZE = 60;
const VIEWERS_REFRESH_MS = 5000;
const COUNT_UP_MS = 700;

/** What one LIVE brought in, from its credits. */
class LiveSession {
  constructor() {
    this.startedAt = Date.now();
    this.endedAt = null;
    this.diamonds = 0;
    this.gifts = 0;
    this.byGift = new Map();
    this.byFrom = new Map();
  }

  add(c) {
    this.diamonds += c.diamonds;
    this.gifts += c.count;
    const kind = this.byGift.get(c.gift) ?? { gift: c.gift, name: c.giftName, count: 0, diamonds: 0 };
    kind.count += c.count;
    kind.diamonds += c.diamonds;
    this.byGift.set(c.gift, kind);
    const fan = this.byFrom.get(c.from) ?? { user: c.from, name: c.fromName, gifts: 0, diamonds: 0 };
    fan.gifts += c.count;
    fan.diamonds += c.diamonds;
    this.byFrom.set(c.from, fan);
    return fan;
  }

  topGifters(n = Infinity) {
    return [...this.byFrom.values()].sort((a, b) => b.diamonds - a.diamonds).slice(0, n);
  }

  kinds() {
    return [...this.byGift.values()].sort((a, b) => b.diamonds - a.diamonds);
  }
}

export class HostView {
  constructor({ client, account, stage, effects }) {
    Object.assign(this, { client, account, stage, effects });
    this.room = null;
    this.live = false;
    this.session = null;
    this.total = 0;
    this.shownTotal = 0;
    this.thanked = new Set();
    this.diamondValue = DIAMOND_VALUE_USD;
    this.currency = "USD";
    this.peakViewers = null;
    client.addEventListener("credit", (e) => e.room === this.room && this.#onCredit(e));
    client.addEventListener("gift", (e) => e.room === this.room && this.effects.play(e));
    client.addEventListener("room", (e) => e.room === this.room && this.#onLive(e.live));
    client.addEventListener("joined", (e) => e.room === this.room && this.#setViewers(e.viewers));
    client.addEventListener("frame", (e) => {
      const f = e.frame;
      if (f.t === "viewers" && f.room === this.room && Number.isInteger(f.viewers)) this.#setViewers(f.viewers);
    });
    this.chests = new Chests($("#chests"), client, { canClaim: false });
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
    $("#host-name").textContent = `@${welcome.name ?? welcome.user}`;
    $("#host-avatar").replaceChildren(avatar(welcome.name ?? welcome.user, welcome.user, "md"));
    if (welcome.room) {
      await this.#enter(welcome.room);
      if (this.live) this.#beginSession();
    }
    this.#render();
  }

  async goLive() {
    try {
      const { body } = await api("/v1/rooms", { method: "POST", token: this.account.token });
      await this.#enter(body.room);
      this.live = true;
      this.#beginSession();
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
      // The server's summary adds what the page cannot count: the viewers.
      this.peakViewers = body.summary?.peak_viewers ?? null;
      this.#onLive(false);
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
    this.#setViewers(joined.viewers);
  }

  #beginSession() {
    this.session = new LiveSession();
    this.peakViewers = null;
    this.thanked.clear();
    $("#credit-feed").replaceChildren();
    this.effects.clear();
    this.#renderThanks();
    this.#renderSession();
  }

  #onLive(live) {
    const wasLive = this.live;
    this.live = live;
    if (wasLive && !live && this.session) {
      this.session.endedAt = Date.now();
      this.#showSummary();
    }
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
      this.#renderThanks(fan.gifts === c.count ? fan.user : null);
    }
  }

  #setTotal(total, animate) {
    this.total = total;
    const el = $("#diamond-total");
    el.dataset.diamonds = total;
    $("#money").textContent = money(total * this.diamondValue, this.currency);
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
      $("#money").textContent = money(this.total * this.diamondValue, this.currency);
      $("#diamond-rate").textContent = `${money(this.diamondValue, this.currency, 4)} per diamond`;
    } catch {
      // the default rate stands
    }
  }

  #renderSession() {
    const s = this.session;
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
          h("span", { class: "thank-who" }, h("b", {}, f.name), h("small", {}, `${fmt(f.gifts)} gifts · ${fmt(f.diamonds)} 💎`)),
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

  #showSummary() {
    const s = this.session;
    const dialog = $("#summary");
    $("#summary-duration").textContent = duration(s.endedAt - s.startedAt);
    $("#summary-diamonds").textContent = fmt(s.diamonds);
    $("#summary-money").textContent = money(s.diamonds * this.diamondValue, this.currency);
    $("#summary-gifts").textContent = fmt(s.gifts);
    $("#summary-peak").textContent = this.peakViewers === null ? "—" : fmt(this.peakViewers);
    const kinds = s.kinds();
    $("#summary-kinds").replaceChildren(
      ...kinds.map((k) =>
        h(
          "li",
          { "data-gift": k.gift },
          h("span", { class: "kind-art" }, art(k.gift)),
          h("span", { class: "kind-name" }, k.name),
          h("span", { class: "kind-count" }, `×${fmt(k.count)}`),
          h("span", { class: "kind-diamonds" }, fmt(k.diamonds), h("i", { class: "gem" })),
        ),
      ),
    );
    const medals = ["🥇", "🥈", "🥉"];
    $("#summary-top").replaceChildren(
      ...s.topGifters(5).map((f, i) =>
        h(
          "li",
          { "data-user": f.user },
          h("span", { class: "rank" }, medals[i] ?? String(i + 1)),
          avatar(f.name, f.user, "sm"),
          h("span", { class: "gifter-name" }, f.name),
          h("span", { class: "gifter-coins" }, fmt(f.diamonds), h("i", { class: "gem" })),
        ),
      ),
    );
    $("#summary-nothing").hidden = kinds.length > 0;
    if (!dialog.open) dialog.showModal();
  }
}
