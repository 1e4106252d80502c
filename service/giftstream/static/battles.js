// LIVE battles: the split score bar with its countdown and the winner banner on the stage, and
// the host studio's invite, accept, decline and end (docs/rooms.md#live-battles).

import { api } from "./api.js";
import { $, fmt, h, toast } from "./ui.js";

const TICK_MS = 250;
const ROOMS_REFRESH_MS = 5000;
const RESULT_SHOWN_MS = 12000;
const BATTLE_FRAMES = new Set(["battle", "battle_score"]);

const BATTLE_ERRORS = {
  in_battle: "That room is already in a battle.",
  battle_over: "This battle is no longer open to that.",
  not_in_battle: "Your room is not in this battle.",
  room_not_live: "That room is not live.",
};

/** The score bar of the room on the stage: one segment per side, this room's first. */
export class BattleBar {
  constructor(container, client) {
    Object.assign(this, { container, client });
    this.room = null;
    this.state = null; // the latest `battle` or `battle_score` frame of the room's battle
    this.timer = null;
    this.hideTimer = null;
    client.addEventListener("frame", (e) => this.#onFrame(e.frame));
  }

  /** Show the battle of this room (`battle`: the id from `joined`, if it is in one). */
  async watch(room, battle = null) {
    this.room = room;
    this.#clear();
    if (!battle) return;
    try {
      const { body } = await api(`/v1/battles/${encodeURIComponent(battle)}`);
      if (this.room === room && !this.state) this.#onFrame(body);
    } catch {
      // The next frame of the battle shows it.
    }
  }

  #mine(f) {
    return (f.sides ?? []).some((s) => s.room === this.room);
  }

  #onFrame(f) {
    if (!BATTLE_FRAMES.has(f.t) && f.t !== "battle_state") return;
    if (!this.#mine(f)) return;
    const state = f.t === "battle_score" ? "score" : f.state;
    if (state === "invited" || state === "declined") return;
    // A score never goes back: a late lossy frame of an ended battle is ignored.
    if (this.state?.battle === f.battle && this.state.state === "ended" && state !== "ended") return;
    this.state = { ...f, state };
    this.#render();
  }

  #clear() {
    clearInterval(this.timer);
    clearTimeout(this.hideTimer);
    this.state = null;
    this.container.hidden = true;
    this.container.replaceChildren();
  }

  #sides() {
    const sides = [...this.state.sides];
    sides.sort((a, b) => (b.room === this.room) - (a.room === this.room));
    return sides;
  }

  #render() {
    const f = this.state;
    const sides = this.#sides();
    const total = sides.reduce((sum, s) => sum + s.score, 0);
    const ended = f.state === "ended";
    this.container.hidden = false;
    this.container.dataset.battle = f.battle;
    this.container.dataset.state = ended ? "ended" : "live";
    const bar = h(
      "div",
      { class: "battle-bar" },
      sides.map((s, i) =>
        h(
          "span",
          {
            class: `battle-side side-${i}${s.room === this.room ? " mine" : ""}`,
            "data-room": s.room,
            style: { "flex-grow": String(total ? Math.max(s.score / total, 0.08) : 1) },
          },
          h("b", { class: "battle-score" }, fmt(s.score)),
        ),
      ),
    );
    const clock = h("span", { class: "battle-clock" }, "");
    const head = h("div", { class: "battle-head" }, h("span", { class: "battle-title" }, "⚔ LIVE battle"), clock);
    const parts = [head, bar];
    if (ended) parts.push(this.#banner(f, sides));
    this.container.replaceChildren(...parts);
    clearInterval(this.timer);
    if (ended) {
      clock.textContent = "ended";
      clearTimeout(this.hideTimer);
      this.hideTimer = setTimeout(() => this.#clear(), RESULT_SHOWN_MS);
    } else {
      const tick = () => {
        const left = Math.max(0, Math.ceil((f.ends_at - this.client.serverNow()) / 1000));
        clock.textContent = `${Math.floor(left / 60)}:${String(left % 60).padStart(2, "0")}`;
      };
      tick();
      this.timer = setInterval(tick, TICK_MS);
    }
  }

  #banner(f, sides) {
    let text;
    if (f.draw) text = "It's a draw!";
    else if (f.winner === this.room) text = "This room wins!";
    else text = "The other room wins";
    if (f.reason === "forfeit") text += f.forfeit === this.room ? " (this room left)" : " (by forfeit)";
    const tops = sides.map((s) =>
      h(
        "li",
        { "data-room": s.room },
        (s.top ?? []).length
          ? s.top.map((t) => `${t.name ?? t.user} ${fmt(t.coins)}`).join(" · ")
          : "no gifts",
      ),
    );
    return h(
      "div",
      { class: "battle-banner", "data-winner": f.winner ?? "", "data-draw": String(Boolean(f.draw)) },
      h("b", {}, text),
      h("ol", { class: "battle-tops" }, tops),
    );
  }
}

/** The host studio's battle card: invite a live room, answer an invite, end early. */
export class BattleControls {
  constructor(card, client) {
    Object.assign(this, { card, client });
    this.room = null;
    this.battle = null; // the open battle of this host's room, as last seen
    client.addEventListener("frame", (e) => this.#onFrame(e.frame));
    $("#battle-room", card).addEventListener("focus", () => this.refreshRooms());
    setInterval(() => this.room && this.refreshRooms(), ROOMS_REFRESH_MS);
    $("#battle-invite", card).addEventListener("click", () => this.#invite());
    $("#battle-accept", card).addEventListener("click", () => this.#answer("battle_accept"));
    $("#battle-decline", card).addEventListener("click", () => this.#answer("battle_decline"));
    $("#battle-end", card).addEventListener("click", () => this.#answer("battle_end"));
  }

  /** The host's own room, live. */
  async watch(room) {
    this.room = room;
    this.card.hidden = false;
    this.#show(null);
    await this.refreshRooms();
  }

  async refreshRooms() {
    const select = $("#battle-room", this.card);
    let rooms = [];
    try {
      rooms = (await api("/v1/rooms")).body.filter((r) => r.room !== this.room);
    } catch {
      return;
    }
    const chosen = select.value;
    select.replaceChildren(
      ...rooms.map((r) => h("option", { value: r.room, selected: r.room === chosen }, `${r.host_name} · ${r.room}`)),
    );
    $("#battle-invite", this.card).disabled = rooms.length === 0 || Boolean(this.battle);
  }

  #onFrame(f) {
    if (f.t !== "battle" || !(f.sides ?? []).some((s) => s.room === this.room)) return;
    this.#show(["declined", "ended"].includes(f.state) ? null : f);
    if (f.state === "invited" && f.sides[0].room !== this.room && !(f.accepted ?? []).includes(this.room)) {
      toast(`${f.sides[0].host} invites you to a LIVE battle`, "info");
    }
  }

  #show(f) {
    this.battle = f;
    const invited = f?.state === "invited" && f.sides[0].room !== this.room && !(f.accepted ?? []).includes(this.room);
    const status = $("#battle-status", this.card);
    if (!f) status.textContent = "Invite another live host to a 5-minute battle.";
    else if (invited) status.textContent = `Invited by ${f.sides[0].host}: accept?`;
    else if (f.state === "invited") status.textContent = "Waiting for the other host to accept…";
    else status.textContent = "Battle under way.";
    this.card.dataset.state = f ? (invited ? "invited" : f.state) : "idle";
    $("#battle-accept", this.card).hidden = !invited;
    $("#battle-decline", this.card).hidden = !invited;
    $("#battle-end", this.card).hidden = f?.state !== "started";
    $("#battle-invite", this.card).disabled = Boolean(f);
  }

  async #invite() {
    const room = $("#battle-room", this.card).value;
    if (!room) return;
    try {
      this.#show(await this.client.battleRequest("battle_invite", { rooms: [room] }));
    } catch (e) {
      toast(BATTLE_ERRORS[e.code] ?? e.message, "error");
    }
  }

  async #answer(t) {
    if (!this.battle) return;
    try {
      const f = await this.client.battleRequest(t, { battle: this.battle.battle });
      this.#show(["declined", "ended"].includes(f.state) ? null : f);
    } catch (e) {
      toast(BATTLE_ERRORS[e.code] ?? e.message, "error");
    }
  }
}
