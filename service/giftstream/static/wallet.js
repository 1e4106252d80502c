// The viewer's coin balance, kept from welcome frames, gift acks and recharges.

import { flash, fmt } from "./ui.js";

export class Wallet extends EventTarget {
  coins = null;
  // Bumped by every credit of coins: an ack of a gift sent before it carries an older balance.
  #generation = 0;

  constructor(display) {
    super();
    this.display = display;
  }

  get generation() {
    return this.#generation;
  }

  /** The server's word (a welcome): replaces the balance. */
  set(coins) {
    this.#show(coins);
  }

  /** Coins were added (a recharge): acks of gifts sent before now are out of date. */
  credit(coins) {
    this.#generation += 1;
    this.#show(coins);
  }

  /** A gift's ack: the balance right after it. Acks may come in any order, so keep the lowest. */
  fromAck(coins, generation) {
    if (generation !== this.#generation) return;
    if (this.coins === null || coins < this.coins) this.#show(coins);
  }

  #show(coins) {
    const dropped = this.coins !== null && coins < this.coins;
    this.coins = coins;
    this.display.textContent = fmt(coins);
    this.display.dataset.coins = coins;
    this.display.classList.remove(dropped ? "gained" : "spent");
    flash(this.display, dropped ? "spent" : "gained");
    this.dispatchEvent(new Event("change"));
  }
}
