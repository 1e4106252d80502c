// The host studio's earnings history: GET /v1/history (the ledger of record), newest first, a
// page at a time. A module of its own; the page only gives it a place (#earnings-history).

import { api, storedAccount } from "./api.js";
import { h } from "./ui.js";

const PAGE = 20;
const REFRESH_MS = 3000;

const LABELS = {
  credit: (e) => `+${e.diamonds} 💎 from a gift of ${e.gift_coins ?? "?"} coins`,
  payout: (e) => `cash-out ${e.diamonds} 💎 → ${e.amount ?? ""} ${e.currency ?? ""}`,
  gift: (e) => `sent ${e.count ?? 1} × ${e.gift ?? "gift"} (${e.coins} coins)`,
  purchase: (e) => `bought +${e.coins} coins`,
  refund: (e) => `refund ${e.coins} coins`,
  grant: (e) => `granted +${e.coins} coins`,
};

function describe(entry) {
  const label = LABELS[entry.kind];
  return label ? label(entry) : `${entry.kind} ${entry.coins || entry.diamonds || ""}`;
}

function row(entry) {
  const when = new Date(entry.ts).toLocaleTimeString();
  return h("li", { class: `history-${entry.kind}` }, h("small", {}, when), " ", describe(entry));
}

function token() {
  return new URLSearchParams(location.search).get("token") ?? storedAccount("host")?.token;
}

async function start(section) {
  const list = section.querySelector("ol");
  const more = section.querySelector("button");
  const empty = section.querySelector("p");
  let next = null;

  async function page(cursor) {
    const query = new URLSearchParams({ limit: String(PAGE) });
    if (cursor) query.set("cursor", cursor);
    const { body } = await api(`/v1/history?${query}`, { token: token() });
    return body;
  }

  async function refresh() {
    if (!token()) return; // the page makes its dev account after this module starts
    try {
      const body = await page(null);
      list.replaceChildren(...body.entries.map(row));
      next = body.next;
      more.hidden = next === null;
      empty.hidden = body.entries.length > 0;
    } catch (e) {
      empty.hidden = false;
      empty.textContent = `History unavailable: ${e.message}`;
    }
  }

  more.addEventListener("click", async () => {
    if (!next) return;
    const body = await page(next);
    list.append(...body.entries.map(row));
    next = body.next;
    more.hidden = next === null;
  });
  await refresh();
  setInterval(() => {
    if (!document.hidden && list.children.length <= PAGE) refresh();
  }, REFRESH_MS);
}

const section = document.querySelector("#earnings-history");
if (section && new URLSearchParams(location.search).has("host")) start(section);
