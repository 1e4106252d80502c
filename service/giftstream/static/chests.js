// Treasure chests on the stage: a countdown, a claim window, and how the coins were shared.

import { $, fmt, h, toast } from "./ui.js";

const TICK_MS = 250;
const RESULT_SHOWN_MS = 7000;

const CLAIM_ERRORS = {
  chest_not_open: "The chest is not open yet.",
  chest_closed: "Too late: the chest has closed.",
  not_present: "Only viewers who were here when it opened can claim it.",
  already_claimed: "You already claimed this chest.",
  forbidden: "You cannot claim your own chest.",
};

export class Chests {
  /** canClaim: this view may claim; onSettled(event): a chest this user had a part in settled. */
  constructor(container, client, { canClaim, onSettled = () => {} }) {
    Object.assign(this, { container, client, canClaim, onSettled });
    this.shown = new Map(); // chest id → {el, event, claimed, timer}
    this.room = null;
    client.addEventListener("chest", (e) => e.room === this.room && this.#show(e));
    client.addEventListener("chestresult", (e) => e.room === this.room && this.#settle(e));
  }

  /** Show the chests of this room only. */
  watch(room) {
    this.room = room;
    for (const c of this.shown.values()) clearInterval(c.timer);
    this.shown.clear();
    this.container.replaceChildren();
  }

  #mine(e) {
    return e.from === this.client.welcome?.user;
  }

  #show(e) {
    if (this.shown.has(e.chest)) return;
    const claim = h("button", { class: "btn tiny chest-claim", type: "button", disabled: true }, "Claim");
    const el = h(
      "div",
      { class: "chest", "data-chest": e.chest, "data-state": "waiting" },
      h("span", { class: "chest-art", "aria-hidden": "true" }, "🧰"),
      h(
        "span",
        { class: "chest-text" },
        h("b", {}, this.#mine(e) ? "Your chest" : `${e.fromName}'s chest`),
        h("small", { class: "chest-coins" }, `${fmt(e.coins)} coins`),
        h("small", { class: "chest-when" }, ""),
      ),
      this.canClaim && !this.#mine(e) ? claim : null,
    );
    const entry = { el, event: e, claimed: false, timer: null };
    claim.addEventListener("click", () => this.#claim(entry, claim));
    this.shown.set(e.chest, entry);
    this.container.append(el);
    entry.timer = setInterval(() => this.#tick(entry, claim), TICK_MS);
    this.#tick(entry, claim);
  }

  #tick(entry, claim) {
    const { el, event } = entry;
    const now = this.client.serverNow();
    const seconds = (ms) => `${Math.max(0, Math.ceil(ms / 1000))} s`;
    let state = "closed";
    let when = "sharing…";
    if (now < event.opensAt) {
      state = "waiting";
      when = `opens in ${seconds(event.opensAt - now)}`;
    } else if (now < event.closesAt) {
      state = "open";
      when = `open! closes in ${seconds(event.closesAt - now)}`;
    }
    el.dataset.state = entry.claimed ? "claimed" : state;
    $(".chest-when", el).textContent = when;
    claim.disabled = state !== "open" || entry.claimed;
    if (state === "closed") clearInterval(entry.timer);
  }

  async #claim(entry, claim) {
    claim.disabled = true;
    try {
      const order = await this.client.claim(entry.event.room, entry.event.chest);
      entry.claimed = true;
      entry.el.dataset.state = "claimed";
      claim.textContent = `Claimed #${order}`;
      toast("Claimed! Your share arrives when the chest closes.", "success");
    } catch (e) {
      toast(CLAIM_ERRORS[e.code] ?? e.message, "error");
      claim.disabled = false;
    }
  }

  #settle(e) {
    const entry = this.shown.get(e.chest);
    if (!entry) return;
    clearInterval(entry.timer);
    const me = this.client.welcome?.user;
    const mine = e.shares.find((s) => s.user === me);
    let text;
    if (e.returned) text = `nobody claimed it: ${fmt(e.coins)} coins went back`;
    else if (mine) text = `you got ${fmt(mine.coins)} coins!`;
    else text = `${fmt(e.claimants)} ${e.claimants === 1 ? "viewer" : "viewers"} shared ${fmt(e.coins)} coins`;
    entry.el.dataset.state = "done";
    $(".chest-when", entry.el).textContent = text;
    $(".chest-claim", entry.el)?.remove();
    if (entry.claimed || this.#mine(entry.event)) this.onSettled(e);
    setTimeout(() => {
      entry.el.remove();
      this.shown.delete(e.chest);
    }, RESULT_SHOWN_MS);
  }
}
