// The viewer view: pick a live room, watch its gifts, send your own, see who gives the most.

import { api } from "./api.js";
import { BattleBar } from "./battles.js";
import { Chests } from "./chests.js";
import { art, tier } from "./gifts.js";
import { $, avatar, bump, flash, fmt, h, hueOf, toast } from "./ui.js";

const ROOMS_REFRESH_MS = 5000;
// After a chest settles, the balance is read again until the share shows (it is paid apart).
const WALLET_POLLS = 6;
const WALLET_POLL_MS = 1000;
// History events replayed on joining, so the feed and the board are not empty at first.
const RECENT_EVENTS = 200;
const BOARD_SIZE = 5;
const TITLES = [
  "Late-night lo-fi & chill 🎧",
  "Ramen from scratch 🍜",
  "Ranked grind to Diamond 🎮",
  "Sunset road trip 🚐",
  "Drawing your pets 🎨",
  "Acoustic requests 🎸",
  "Morning workout 💪",
  "Q&A: ask me anything ❓",
  "Cozy knitting stream 🧶",
  "Street food tour 🌮",
  "Piano covers by request 🎹",
  "Building a tiny house 🔨",
  "Plant care clinic 🪴",
  "Midnight city walk 🌃",
  "Speedrun practice ⏱️",
  "Baking sourdough 🍞",
  "Karaoke night 🎤",
  "Sketching the sea 🌊",
  "Retro game marathon 👾",
  "Fashion haul & styling 👗",
];

const streamTitle = (room) => TITLES[hueOf(room) % TITLES.length];

const ERRORS = {
  room_not_live: "This LIVE has ended: gifts cannot be sent any more.",
  not_in_room: "Join the room before sending gifts.",
  unavailable_in_region: "This gift is not available in your region.",
  spending_limit: "That gift would go over your daily spending limit.",
  forbidden: "You cannot send this gift.",
  unauthenticated: "Your session expired: reload the page.",
  closed: "Offline: gifts cannot be sent now.",
};

/** Coins given per user in a room, from the gift events seen (streak updates may be merged). */
class GiftersBoard {
  constructor(catalog) {
    this.catalog = catalog;
    this.totals = new Map();
    this.streaks = new Map();
  }

  add(e) {
    let coins = e.coins;
    if (e.streak) {
      const unit = this.catalog.get(e.gift)?.coins ?? e.coins / e.count;
      const counted = this.streaks.get(e.streak.id) ?? 0;
      if (e.streak.repeat <= counted) return false;
      coins = (e.streak.repeat - counted) * unit;
      this.streaks.set(e.streak.id, e.streak.repeat);
    } else if (e.closesStreak) {
      return false;
    }
    const entry = this.totals.get(e.from) ?? { user: e.from, name: e.fromName, coins: 0 };
    entry.coins += coins;
    this.totals.set(e.from, entry);
    return true;
  }

  top(n) {
    return [...this.totals.values()].sort((a, b) => b.coins - a.coins).slice(0, n);
  }
}

export class ViewerView {
  constructor({ client, catalog, wallet, recharge, stage, effects, account }) {
    Object.assign(this, { client, catalog, wallet, recharge, stage, effects, account });
    this.room = null;
    this.board = new GiftersBoard(catalog);
    this.myStreaks = new Map(); // gift id → combo bubble timer
    client.addEventListener("gift", (e) => this.#onGift(e));
    client.addEventListener("joined", (e) => e.room === this.room && this.#setViewers(e.viewers));
    client.addEventListener("room", (e) => e.room === this.room && this.#setLive(e.live));
    client.addEventListener("frame", (e) => {
      const f = e.frame;
      if (f.t === "viewers" && f.room === this.room && Number.isInteger(f.viewers)) this.#setViewers(f.viewers);
    });
    this.chests = new Chests($("#chests"), client, {
      canClaim: true,
      onSettled: () => this.#refreshWallet(),
    });
    this.battle = new BattleBar($("#battle"), client);
    $("#chest-btn").addEventListener("click", () => $("#chest-dialog").showModal());
    $("#chest-close").addEventListener("click", () => $("#chest-dialog").close());
    for (const size of document.querySelectorAll("#chest-sizes [data-coins]")) {
      size.addEventListener("click", () => this.#dropChest(Number(size.dataset.coins)));
    }
    this.#renderGifts();
  }

  async start(room) {
    const rooms = await this.#refreshRooms();
    setInterval(() => this.#refreshRooms(), ROOMS_REFRESH_MS);
    const first = room ?? [...rooms].sort((a, b) => b.viewers - a.viewers)[0]?.room;
    if (first) await this.open(first);
    else this.#showNoRoom();
  }

  async open(room) {
    if (room === this.room) return;
    const previous = this.room;
    this.room = room;
    history.replaceState(null, "", `?room=${encodeURIComponent(room)}`);
    this.board = new GiftersBoard(this.catalog);
    this.effects.clear();
    this.chests.watch(room);
    this.#renderBoard();
    this.stage.setScene(room);
    $("#stage").dataset.room = room;
    $("#stream-title").textContent = streamTitle(room);
    $("#host-name").textContent = "…";
    $("#stage-empty").hidden = true;
    for (const card of document.querySelectorAll(".room-card")) {
      card.classList.toggle("current", card.dataset.room === room);
    }
    if (previous) this.client.leave(previous).catch(() => {});
    try {
      const joined = await this.client.join(room, { recent: RECENT_EVENTS });
      if (this.room !== room) return;
      $("#host-name").textContent = joined.hostName;
      this.battle.watch(room, joined.battle);
      $("#host-avatar").replaceChildren(avatar(joined.hostName, joined.host, "md"));
      this.#setViewers(joined.viewers);
      this.#setLive(joined.live);
    } catch (e) {
      if (this.room !== room) return;
      toast(e.code === "not_found" ? `There is no room '${room}'.` : e.message, "error");
      this.room = null;
      this.#showNoRoom();
    }
  }

  // -- rooms -----------------------------------------------------------------------------------

  async #refreshRooms() {
    let rooms;
    try {
      rooms = (await api("/v1/rooms")).body;
    } catch {
      return [];
    }
    const list = $("#room-list");
    list.replaceChildren(
      ...rooms.map((r) =>
        h(
          "li",
          {},
          h(
            "button",
            {
              class: `room-card${r.room === this.room ? " current" : ""}`,
              "data-room": r.room,
              style: { "--hue": hueOf(r.room) },
              onclick: () => this.open(r.room),
            },
            h("span", { class: "room-thumb" }, h("span", { class: "live-badge sm" }, "LIVE")),
            h(
              "span",
              { class: "room-info" },
              h("b", {}, streamTitle(r.room)),
              h("small", { class: "room-host" }, r.host_name ?? r.host),
              h("small", { class: "room-viewers" }, `👁 ${fmt(r.viewers)} watching`),
            ),
          ),
        ),
      ),
    );
    $("#rooms-empty").hidden = rooms.length > 0;
    const current = rooms.find((r) => r.room === this.room);
    if (current) this.#setViewers(current.viewers);
    return rooms;
  }

  #showNoRoom() {
    $("#stage-empty").hidden = false;
    $("#stream-title").textContent = "No one is live right now";
    $("#host-name").textContent = "";
  }

  #setViewers(n) {
    const el = $("#viewer-count");
    el.textContent = fmt(n);
    el.dataset.viewers = n;
    // The room's card in the list says the same as the stage.
    const card = document.querySelector(`.room-card[data-room="${this.room}"] .room-viewers`);
    if (card) card.textContent = `👁 ${fmt(n)} watching`;
  }

  #setLive(live) {
    $("#stage-ended").hidden = live;
    $("#stage").classList.toggle("is-ended", !live);
    $("#gift-grid").classList.toggle("disabled", !live);
  }

  // -- gifts -----------------------------------------------------------------------------------

  #renderGifts() {
    const region = this.account.region;
    const tiles = [...this.catalog.values()].map((g) => {
      const available = g.regions.includes("*") || g.regions.includes(region);
      return h(
        "button",
        {
          class: `gift-tile tier-${tier(g.coins)}`,
          type: "button",
          "data-gift": g.id,
          disabled: !available,
          title: available ? `${g.name} · ${fmt(g.coins)} coins` : `${g.name} is not sent from ${region}`,
          onclick: (ev) => this.#send(g, ev.currentTarget),
        },
        h("span", { class: "tile-art" }, art(g.id)),
        h("span", { class: "tile-name" }, g.name),
        h("span", { class: "tile-price" }, h("i", { class: "coin" }), fmt(g.coins)),
        h("span", { class: "tile-combo" }),
      );
    });
    $("#gift-grid").replaceChildren(...tiles);
  }

  async #send(gift, tile) {
    if (!this.room) {
      toast("Pick a live room first.", "info");
      return;
    }
    flash(tile, "tapped");
    bump($(".tile-art", tile), 0.8);
    const generation = this.wallet.generation;
    try {
      const ack = await this.client.sendGift(this.room, gift.id, 1);
      this.wallet.fromAck(ack.coins, generation);
    } catch (e) {
      if (e.code === "insufficient_coins") {
        toast(`Not enough coins for ${gift.name} (${fmt(gift.coins)} coins).`, "error");
        this.recharge.open(`${gift.name} costs ${fmt(gift.coins)} coins.`, gift.coins);
      } else {
        toast(ERRORS[e.code] ?? e.message, "error");
      }
    }
  }

  async #dropChest(coins) {
    $("#chest-dialog").close();
    if (!this.room) {
      toast("Pick a live room first.", "info");
      return;
    }
    const generation = this.wallet.generation;
    try {
      const dropped = await this.client.dropChest(this.room, coins);
      this.wallet.fromAck(dropped.coins, generation);
      toast(`Your chest of ${fmt(coins)} coins is in the room!`, "success");
    } catch (e) {
      if (e.code === "insufficient_coins") {
        toast(`Not enough coins for a chest of ${fmt(coins)}.`, "error");
        this.recharge.open(`A chest of ${fmt(coins)} coins needs more coins.`, coins);
      } else {
        toast(ERRORS[e.code] ?? e.message, "error");
      }
    }
  }

  async #refreshWallet() {
    const before = this.wallet.coins;
    for (let i = 0; i < WALLET_POLLS; i += 1) {
      try {
        const { body } = await api("/v1/wallet", { token: this.account.token });
        if (body.coins !== before) {
          this.wallet.credit(body.coins);
          return;
        }
      } catch {
        // try again below
      }
      await new Promise((resolve) => setTimeout(resolve, WALLET_POLL_MS));
    }
  }

  #onGift(e) {
    if (e.room !== this.room) return;
    this.effects.play(e);
    if (this.board.add(e)) this.#renderBoard();
    if (e.from === this.client.welcome?.user && e.streak && !e.replayed) this.#myCombo(e);
  }

  /** Your own streak, counted on the tile you are tapping. */
  #myCombo(e) {
    const bubble = document.querySelector(`.gift-tile[data-gift="${e.gift}"] .tile-combo`);
    if (!bubble) return;
    bubble.textContent = `×${fmt(e.streak.repeat)}`;
    bubble.classList.add("show");
    bump(bubble);
    clearTimeout(this.myStreaks.get(e.gift));
    this.myStreaks.set(
      e.gift,
      setTimeout(() => bubble.classList.remove("show"), e.closesStreak ? 900 : 3500),
    );
  }

  #renderBoard() {
    const top = this.board.top(BOARD_SIZE);
    const medals = ["🥇", "🥈", "🥉"];
    $("#top-gifters").replaceChildren(
      ...top.map((g, i) =>
        h(
          "li",
          { class: "gifter", "data-user": g.user },
          h("span", { class: "rank" }, medals[i] ?? String(i + 1)),
          avatar(g.name, g.user, "sm"),
          h("span", { class: "gifter-name" }, g.name),
          h("span", { class: "gifter-coins" }, h("i", { class: "coin" }), fmt(g.coins)),
        ),
      ),
    );
    $("#board-empty").hidden = top.length > 0;
  }
}
