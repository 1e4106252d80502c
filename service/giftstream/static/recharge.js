// The recharge dialog: the price list for the viewer's region on the web, and a purchase.

import { api } from "./api.js";
import { randomId } from "./giftstream.js";
import { $, fmt, h, money, toast } from "./ui.js";

const CHANNEL = "web";
const LATE_POLL_MS = 1000;
const LATE_POLLS = 15;

export class RechargeDialog {
  constructor(dialog, account, wallet) {
    this.dialog = dialog;
    this.account = account;
    this.wallet = wallet;
    this.selected = null;
    this.needed = 0;
    this.busy = false;
    $("#buy", dialog).addEventListener("click", () => this.#buy());
    $("#recharge-close", dialog).addEventListener("click", () => dialog.close());
  }

  /** Open with the packages; `reason` says why (e.g. the gift that could not be paid), and
   * `needed` the coins it costs: the smallest package that covers it is selected. */
  async open(reason = "", needed = 0) {
    this.needed = needed;
    $("#recharge-reason", this.dialog).textContent = reason;
    $("#recharge-region", this.dialog).textContent = this.account.region;
    $("#recharge-balance", this.dialog).textContent = fmt(this.wallet.coins ?? 0);
    this.#status("");
    if (!this.dialog.open) this.dialog.showModal();
    const list = $("#packages", this.dialog);
    list.replaceChildren(h("p", { class: "muted" }, "Loading prices…"));
    try {
      const query = new URLSearchParams({ region: this.account.region, channel: CHANNEL });
      const { body } = await api(`/v1/packages?${query}`);
      const short = this.needed - (this.wallet.coins ?? 0);
      if (short > 0 && !body.some((p) => p.total_coins >= short)) {
        // No package pays for it: the exact amount missing, priced by the server.
        const custom = new URLSearchParams({ region: this.account.region, channel: CHANNEL, coins: short });
        const quoted = (await api(`/v1/packages/quote?${custom}`)).body;
        body.push({ ...quoted, id: "custom", custom: true });
      }
      this.#render(body);
    } catch (e) {
      const why =
        e.code === "unavailable_in_region"
          ? `Coins are not sold in your region (${this.account.region}).`
          : e.message;
      list.replaceChildren(h("p", { class: "muted" }, why));
      this.#select(null);
    }
  }

  #render(packages) {
    const list = $("#packages", this.dialog);
    list.replaceChildren(
      ...packages.map((p, i) =>
        h(
          "button",
          {
            class: "package",
            type: "button",
            "data-package": p.id,
            onclick: (ev) => this.#select(p, ev.currentTarget),
          },
          h("span", { class: "package-coins" }, h("i", { class: "coin" }), fmt(p.coins)),
          p.bonus ? h("span", { class: "package-bonus" }, `+${fmt(p.bonus)} bonus`) : null,
          h("span", { class: "package-price" }, money(Number(p.price), p.currency)),
          h("small", { class: "package-rate" }, `${money(Number(p.price_per_coin) * 100, p.currency)} per 100`),
          p.custom ? h("span", { class: "package-tag" }, "what you need") : null,
          !p.custom && i === packages.length - 1 && i > 0 ? h("span", { class: "package-tag" }, "best value") : null,
        ),
      ),
    );
    // The smallest package that, with the balance, pays for what was wanted (else the largest).
    const short = this.needed - (this.wallet.coins ?? 0);
    const covering = [...packages].sort((a, b) => a.total_coins - b.total_coins);
    const pick = covering.find((p) => p.total_coins >= short) ?? covering.at(-1) ?? null;
    this.#select(pick, pick ? list.querySelector(`[data-package="${pick.id}"]`) : null);
  }

  #select(pack, button = null) {
    this.selected = pack;
    for (const b of this.dialog.querySelectorAll(".package")) b.classList.toggle("selected", b === button);
    const buy = $("#buy", this.dialog);
    buy.disabled = !pack;
    buy.textContent = pack
      ? `Buy ${fmt(pack.total_coins)} coins for ${money(Number(pack.price), pack.currency)}`
      : "Buy";
  }

  #status(text, kind = "") {
    const el = $("#recharge-status", this.dialog);
    el.textContent = text;
    el.className = `recharge-status ${kind}`;
  }

  async #buy() {
    if (!this.selected || this.busy) return;
    this.busy = true;
    $("#buy", this.dialog).disabled = true;
    // A fresh store receipt per purchase; the dev store decides by its prefix.
    const prefix = $("#test-receipt", this.dialog).value || "web";
    const receipt = `${prefix}-${randomId()}`;
    this.#status("Paying…");
    try {
      let { body } = await api("/v1/recharge", {
        method: "POST",
        token: this.account.token,
        body: {
          ...(this.selected.custom ? { coins: this.selected.coins } : { package: this.selected.id }),
          region: this.account.region,
          channel: CHANNEL,
          receipt,
        },
      });
      for (let i = 0; body.status === "pending" && i < LATE_POLLS; i += 1) {
        this.#status("The store is slow to confirm: waiting for the payment…");
        await new Promise((resolve) => setTimeout(resolve, LATE_POLL_MS));
        ({ body } = await api(`/v1/recharge/${encodeURIComponent(receipt)}`, { token: this.account.token }));
      }
      if (body.status !== "paid") throw new Error(`the payment is ${body.status}`);
      this.wallet.credit(body.coins);
      toast(`+${fmt(body.credited)} coins — thank you!`, "success");
      this.dialog.close();
    } catch (e) {
      // The server's message names the refusal ("payment declined: ..."): said once.
      const said = e.message.charAt(0).toUpperCase() + e.message.slice(1);
      this.#status(said, "error");
      toast(said, "error");
    } finally {
      this.busy = false;
      $("#buy", this.dialog).disabled = !this.selected;
    }
  }
}
