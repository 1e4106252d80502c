// Small DOM and formatting helpers shared by the viewer and host views.

export const $ = (selector, root = document) => root.querySelector(selector);

/** h("div", {class: "x", onclick}, child, "text") → an element. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "style" && typeof value === "object") {
      for (const [name, v] of Object.entries(value)) el.style.setProperty(name, v);
    }
    else el.setAttribute(key, value === true ? "" : value);
  }
  el.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return el;
}

const integer = new Intl.NumberFormat("en-US");
export const fmt = (n) => integer.format(n);

export function money(amount, currency = "USD", digits = undefined) {
  const options = { style: "currency", currency, maximumFractionDigits: digits };
  return new Intl.NumberFormat("en-US", options).format(amount);
}

/** A stable hue (0–359) for a string: each user and room keeps its colour. */
export function hueOf(text) {
  let hash = 0;
  for (const ch of String(text)) hash = (hash * 31 + ch.codePointAt(0)) >>> 0;
  return hash % 360;
}

export function avatar(name, id = name, size = "") {
  const letter = (String(name).trim()[0] ?? "?").toUpperCase();
  return h("span", { class: `avatar ${size}`, style: { "--hue": hueOf(id) } }, letter);
}

export function duration(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  const hh = Math.floor(s / 3600);
  const mm = String(Math.floor((s % 3600) / 60)).padStart(2, "0");
  const ss = String(s % 60).padStart(2, "0");
  return hh ? `${hh}:${mm}:${ss}` : `${mm}:${ss}`;
}

const TOAST_MS = 4200;

/** A message in the corner: kind is "error", "success" or "info". */
export function toast(message, kind = "info") {
  const box = $("#toasts");
  const el = h("div", { class: `toast ${kind}`, role: kind === "error" ? "alert" : "status" }, message);
  box.append(el);
  while (box.children.length > 4) box.firstElementChild.remove();
  setTimeout(() => {
    el.classList.add("leaving");
    el.addEventListener("animationend", () => el.remove(), { once: true });
  }, TOAST_MS);
}

/** Run a class's CSS animation once; a call while it runs is a no-op (no forced layout). */
export function flash(el, className) {
  if (el.classList.contains(className)) return;
  el.classList.add(className);
  const done = (ev) => {
    if (ev.target !== el) return;
    el.classList.remove(className);
    el.removeEventListener("animationend", done);
  };
  el.addEventListener("animationend", done);
}

/** A springy scale-down, restarted by every call (Web Animations: no forced layout). */
export function bump(el, from = 1.9) {
  el.animate([{ transform: `scale(${from})` }, { transform: "scale(1)" }], {
    duration: 320,
    easing: "cubic-bezier(0.3, 1.6, 0.5, 1)",
  });
}
