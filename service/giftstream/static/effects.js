// Gift animations on a stage, scaled to the gift: float-ups for small gifts, a combo banner for
// streaks ("×17"), a pop for mid-size gifts, and a full-screen moment for big ones.

import { art, tier } from "./gifts.js";
import { $, avatar, bump, fmt, h, hueOf } from "./ui.js";

const MAX_BANNERS = 3;
const MAX_FEED = 7;
const MAX_FLOATS_PER_GIFT = 6;
// A streak banner whose closing frame never came (live frames are lossy) goes after this.
const BANNER_IDLE_MS = 5000;
const BANNER_LINGER_MS = 1600;
const MOMENT_MS = 4200;
const MOMENT_FADE = [{ opacity: 0 }, { opacity: 1, offset: 0.08 }, { opacity: 1, offset: 0.88 }, { opacity: 0 }];

export class Effects {
  /** stage: the element holding .banners, .floats, .pops and .feed; moment: the full-screen layer. */
  constructor(stage, moment, catalog, onPulse = () => {}) {
    this.banners = $(".banners", stage);
    this.floats = $(".floats", stage);
    this.pops = $(".pops", stage);
    this.feed = $(".feed", stage);
    this.moment = moment;
    this.catalog = catalog;
    this.onPulse = onPulse;
    this.bannerByStreak = new Map();
    this.feedByStreak = new Map();
    this.moments = [];
    this.momentPlaying = false;
  }

  clear() {
    for (const layer of [this.banners, this.floats, this.pops, this.feed]) layer.replaceChildren();
    this.bannerByStreak.clear();
    this.feedByStreak.clear();
  }

  /** Show a room's GiftEvent. Replayed events only go to the feed: they are not news. */
  play(e) {
    const unit = this.catalog.get(e.gift)?.coins ?? e.coins / e.count;
    this.#feedLine(e);
    if (e.replayed) return;
    const size = tier(unit);
    if (e.streak || e.count > 1 || size !== "small") this.#banner(e, size);
    if (e.closesStreak) return;
    this.onPulse(size === "big" ? 1 : size === "medium" ? 0.4 : 0.08);
    if (size === "small") this.#floatUp(e);
    else if (size === "medium") this.#pop(e);
    else this.#queueMoment(e);
  }

  #feedLine(e) {
    const key = e.streak?.id;
    const times = e.streak ? e.streak.repeat : e.count;
    let line = key && this.feedByStreak.get(key);
    if (!line?.isConnected) {
      line = h(
        "li",
        { class: "feed-line" },
        avatar(e.fromName, e.from, "xs"),
        h("b", {}, e.fromName),
        h("span", {}, ` sent ${e.giftName} `),
        h("span", { class: "feed-art" }, art(e.gift)),
        h("b", { class: "feed-times" }),
      );
      this.feed.append(line);
      while (this.feed.children.length > MAX_FEED) this.feed.firstElementChild.remove();
      if (key) this.feedByStreak.set(key, line);
    }
    // A streak's line counts up in place (updates of a streak may come merged or late).
    const shown = $(".feed-times", line);
    if (times > 1 && times >= Number(shown.dataset.times ?? 0)) {
      shown.dataset.times = times;
      shown.textContent = `×${fmt(times)}`;
    }
  }

  #banner(e, size) {
    const key = e.streak?.id ?? e.event;
    const times = e.streak ? e.streak.repeat : e.count;
    let banner = this.bannerByStreak.get(key);
    if (!banner?.isConnected) {
      banner = h(
        "div",
        { class: `banner ${size}`, "data-gift": e.gift, style: { "--hue": hueOf(e.from) } },
        h(
          "div",
          { class: "banner-pill" },
          avatar(e.fromName, e.from, "sm"),
          h("div", { class: "banner-text" }, h("b", {}, e.fromName), h("small", {}, `sent ${e.giftName}`)),
          h("span", { class: "banner-art" }, art(e.gift)),
        ),
        h("span", { class: "combo" }, ""),
      );
      this.banners.append(banner);
      this.bannerByStreak.set(key, banner);
      while (this.banners.children.length > MAX_BANNERS) this.banners.firstElementChild.remove();
    }
    const combo = $(".combo", banner);
    const shown = Number(combo.dataset.times ?? 0);
    if (times >= shown) {
      combo.dataset.times = times;
      combo.textContent = `×${fmt(times)}`;
      if (times !== shown) bump(combo, 1.5);
    }
    clearTimeout(banner.timer);
    const done = e.closesStreak || !e.streak;
    if (done) banner.classList.add("ended");
    banner.timer = setTimeout(() => this.#dismiss(banner, key), done ? BANNER_LINGER_MS : BANNER_IDLE_MS);
  }

  #dismiss(banner, key) {
    banner.classList.add("leaving");
    banner.addEventListener("animationend", () => banner.remove(), { once: true });
    if (this.bannerByStreak.get(key) === banner) this.bannerByStreak.delete(key);
  }

  #floatUp(e) {
    const n = Math.min(e.count, MAX_FLOATS_PER_GIFT);
    for (let i = 0; i < n; i += 1) {
      const el = h(
        "span",
        {
          class: "float",
          "data-gift": e.gift,
          style: {
            "--drift": `${Math.round((Math.random() - 0.5) * 90)}px`,
            "--delay": `${i * 90}ms`,
            "--size": `${28 + Math.random() * 14}px`,
            right: `${8 + Math.random() * 18}%`,
          },
        },
        art(e.gift),
      );
      el.addEventListener("animationend", () => el.remove(), { once: true });
      this.floats.append(el);
    }
  }

  #pop(e) {
    const el = h(
      "div",
      { class: "pop", "data-gift": e.gift },
      h("span", { class: "pop-art" }, art(e.gift)),
      h("span", { class: "pop-label" }, `${e.fromName} · ${e.giftName}${e.count > 1 ? ` ×${e.count}` : ""}`),
    );
    el.addEventListener("animationend", (ev) => ev.target === el && el.remove());
    this.pops.replaceChildren(el);
  }

  #queueMoment(e) {
    this.moments.push(e);
    if (!this.momentPlaying) this.#nextMoment();
  }

  #nextMoment() {
    const e = this.moments.shift();
    if (!e) {
      this.momentPlaying = false;
      this.moment.hidden = true;
      return;
    }
    this.momentPlaying = true;
    const confetti = h("canvas", { class: "confetti" });
    this.moment.style.setProperty("--hue", hueOf(e.gift));
    this.moment.dataset.gift = e.gift;
    this.moment.replaceChildren(
      h("div", { class: "rays" }),
      confetti,
      h("div", { class: "moment-art" }, art(e.gift)),
      h(
        "div",
        { class: "moment-caption" },
        avatar(e.fromName, e.from),
        h(
          "div",
          {},
          h("b", {}, e.fromName),
          h("span", {}, ` sent ${e.count > 1 ? `${e.count} × ` : ""}`),
          h("b", { class: "moment-gift" }, e.giftName),
          h("small", {}, `${fmt(e.coins)} coins`),
        ),
      ),
    );
    this.moment.hidden = false;
    this.moment.animate(MOMENT_FADE, MOMENT_MS);
    const stop = burst(confetti);
    setTimeout(() => {
      stop();
      this.#nextMoment();
    }, MOMENT_MS);
  }
}

/** Confetti on a canvas until the returned function is called. */
function burst(canvas) {
  const ctx = canvas.getContext("2d");
  const w = (canvas.width = window.innerWidth);
  const hgt = (canvas.height = window.innerHeight);
  const pieces = Array.from({ length: 160 }, () => ({
    x: w / 2,
    y: hgt * 0.45,
    vx: (Math.random() - 0.5) * 18,
    vy: -Math.random() * 16 - 4,
    size: 5 + Math.random() * 7,
    hue: Math.floor(Math.random() * 360),
    spin: Math.random() * 6,
  }));
  let running = true;
  const step = () => {
    if (!running) return;
    ctx.clearRect(0, 0, w, hgt);
    for (const p of pieces) {
      p.vy += 0.35;
      p.vx *= 0.99;
      p.x += p.vx;
      p.y += p.vy;
      p.spin += 0.15;
      ctx.fillStyle = `hsl(${p.hue} 95% 62%)`;
      ctx.save();
      ctx.translate(p.x, p.y);
      ctx.rotate(p.spin);
      ctx.fillRect(-p.size / 2, -p.size / 4, p.size, p.size / 2);
      ctx.restore();
    }
    requestAnimationFrame(step);
  };
  requestAnimationFrame(step);
  return () => {
    running = false;
  };
}
