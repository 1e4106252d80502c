// The HTTP API (docs/protocol.md), and the page's dev accounts kept in localStorage.

import { GiftstreamError } from "./giftstream.js";

/** Call the API; resolves with the JSON answer (and `status`), rejects with GiftstreamError. */
export async function api(path, { method = "GET", body, token } = {}) {
  const headers = {};
  if (body !== undefined) headers["content-type"] = "application/json";
  if (token) headers.authorization = `Bearer ${token}`;
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    throw new GiftstreamError("network", `the server cannot be reached (${e.message})`);
  }
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) {
    throw new GiftstreamError(answer.code ?? "internal", answer.message ?? response.statusText);
  }
  return { status: response.status, body: answer };
}

const STARTING_COINS = { viewer: 2000, host: 0 };
const NAMES = ["Mika", "Jonas", "Aiko", "Lucas", "Priya", "Sofia", "Noah", "Lea", "Omar", "Yuki"];
const REGIONS = ["US", "GB", "BR", "JP", "CH", "DE", "FR", "IN"];

export function guessRegion() {
  const region = (navigator.language.split("-")[1] ?? "").toUpperCase();
  return REGIONS.includes(region) ? region : "US";
}

export { REGIONS };

/** The page's account for a view ("viewer" or "host"): {user, token, name, region}. */
export function storedAccount(kind) {
  try {
    const account = JSON.parse(localStorage.getItem(`giftstream.${kind}`));
    return account?.token ? account : null;
  } catch {
    return null;
  }
}

export function forgetAccount(kind) {
  localStorage.removeItem(`giftstream.${kind}`);
}

/** Create a dev user (the server must run with --dev) and keep its token in localStorage. */
export async function createAccount(kind, { name, region = guessRegion(), coins } = {}) {
  const chosen = name || `${NAMES[Math.floor(Math.random() * NAMES.length)]}${Math.floor(Math.random() * 90 + 10)}`;
  const { body } = await api("/v1/dev/users", {
    method: "POST",
    body: {
      name: chosen,
      region,
      role: kind === "host" ? "host" : "viewer",
      coins: coins ?? STARTING_COINS[kind],
    },
  });
  const account = { user: body.user, token: body.token, name: body.name, region: body.region };
  localStorage.setItem(`giftstream.${kind}`, JSON.stringify(account));
  return account;
}
