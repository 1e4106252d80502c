// The demo page: `/` is the viewer view, `/?host=1` the host view. `?room=<id>` opens a room;
// `?token=<token>` uses that user (e.g. a demo room's host token) instead of a dev account.

import { REGIONS, api, createAccount, forgetAccount, guessRegion, storedAccount } from "./api.js";
import { Effects } from "./effects.js";
import { indexCatalog } from "./gifts.js";
import { GiftstreamClient, State } from "./giftstream.js";
import { HostView } from "./host.js";
import { RechargeDialog } from "./recharge.js";
import { Stage } from "./stage.js";
import { $, avatar, h, toast } from "./ui.js";
import { ViewerView } from "./viewer.js";
import { Wallet } from "./wallet.js";

const params = new URLSearchParams(location.search);
const view = params.has("host") ? "host" : "viewer";
const urlToken = params.get("token");
const RELOADED = "giftstream.reloaded";

const STATE_TEXT = {
  [State.CONNECTING]: "Connecting…",
  [State.OPEN]: "Connected",
  [State.RECONNECTING]: "Reconnecting…",
  [State.CLOSED]: "Offline — retry",
};

async function account() {
  if (urlToken) return { token: urlToken, region: "US", name: null };
  return storedAccount(view) ?? (await createAccount(view));
}

function showConnection(client) {
  const pill = $("#conn");
  const update = (e) => {
    pill.dataset.state = client.state;
    const retry = e?.state === State.RECONNECTING && e.attempt > 1 ? ` (try ${e.attempt})` : "";
    $(".conn-text", pill).textContent = STATE_TEXT[client.state] + retry;
    pill.title =
      client.state === State.CLOSED ? "Disconnected: click to connect again" : `Connection: ${client.state}`;
  };
  client.addEventListener("state", update);
  update();
  pill.addEventListener("click", () => {
    if (client.state === State.CLOSED) client.connect().catch(() => {});
    else client.reconnectNow();
  });
  window.addEventListener("online", () => client.reconnectNow());
}

function showAccount(me) {
  const chip = $("#account");
  chip.replaceChildren(
    avatar(me.name ?? me.user, me.user, "sm"),
    h("span", { class: "account-name" }, me.name ?? me.user),
    h("span", { class: "account-region" }, me.region ?? ""),
  );
  const dialog = $("#account-dialog");
  chip.addEventListener("click", () => {
    $("#account-who").textContent = `${me.name ?? ""} · ${me.user} · ${me.region ?? ""} · ${me.role ?? view}`;
    dialog.showModal();
  });
  const region = $("#new-region");
  region.replaceChildren(...REGIONS.map((r) => h("option", { value: r, selected: r === guessRegion() }, r)));
  $("#new-account").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      await createAccount(view, { name: $("#new-name").value.trim(), region: region.value });
      location.replace(location.pathname + (view === "host" ? "?host=1" : ""));
    } catch (e) {
      toast(e.message, "error");
    }
  });
  $("#account-close").addEventListener("click", () => dialog.close());
}

function fail(message) {
  $("#fatal-text").textContent = message;
  $("#fatal").hidden = false;
}

async function main() {
  document.body.dataset.view = view;
  for (const link of document.querySelectorAll("[data-view-link]")) {
    link.classList.toggle("active", link.dataset.viewLink === view);
  }
  let me;
  let catalog;
  try {
    catalog = indexCatalog((await api("/v1/gifts")).body);
    me = await account();
  } catch (e) {
    fail(
      e.code === "not_found"
        ? "This server runs without --dev, so the page cannot make you an account. Open it with ?token=<your token>, or run `giftstream demo`."
        : `The server cannot be reached: ${e.message}`,
    );
    return;
  }

  const client = new GiftstreamClient(GiftstreamClient.urlFor(location), me.token);
  // For the browser console: the live client.
  window.giftstream = { client, view };
  showConnection(client);

  const stage = new Stage($("#video"));
  const effects = new Effects($("#stage"), $("#moment"), catalog, (energy) => stage.pulse(energy));
  const wallet = new Wallet($("#balance-value"));
  let viewer = null;
  let host = null;
  if (view === "viewer") {
    const recharge = new RechargeDialog($("#recharge"), me, wallet);
    $("#balance").addEventListener("click", () => recharge.open());
    viewer = new ViewerView({ client, catalog, wallet, recharge, stage, effects, account: me });
  } else {
    host = new HostView({ client, account: me, stage, effects, catalog });
  }
  client.addEventListener("welcome", (e) => wallet.set(e.coins));
  client.addEventListener("epoch", () => toast("The room's history was reset: replaying it.", "info"));
  client.addEventListener("servererror", (e) => toast(e.error.message, "error"));

  let welcome;
  try {
    welcome = await client.connect();
  } catch (e) {
    // A stored token the server no longer knows (its store was reset): start afresh, once.
    if (e.code === "unauthenticated" && !urlToken && !sessionStorage.getItem(RELOADED)) {
      sessionStorage.setItem(RELOADED, "1");
      forgetAccount(view);
      location.reload();
      return;
    }
    fail(`Signing in failed: ${e.message}`);
    return;
  }
  sessionStorage.removeItem(RELOADED);
  showAccount({ ...me, ...welcome, name: welcome.name ?? me.name, region: welcome.region ?? me.region });
  if (welcome.region) me.region = welcome.region;
  if (viewer) await viewer.start(params.get("room"));
  else await host.start(welcome);
  document.body.dataset.ready = "true";
}

main();
