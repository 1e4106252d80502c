// The simulated video: a streamer in front of a ring light, drawn on a canvas. Each room gets
// its own colours from its id, so switching rooms looks like switching streams.

import { hueOf } from "./ui.js";

const BOKEH = 22;
const FRAME_MS = 1000 / 30 - 2;
// Skin tones as [hue, saturation %, lightness %] of the lit side, less the highlight.
const SKIN = [
  [28, 55, 62],
  [24, 45, 50],
  [22, 40, 38],
  [30, 60, 70],
  [20, 35, 28],
];
const reducedMotion = matchMedia("(prefers-reduced-motion: reduce)").matches;

export class Stage {
  constructor(canvas) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.hue = 280;
    this.lights = [];
    this.energy = 0; // rises with gifts: the lights and the beat answer the room
    this.drawnAt = -Infinity;
    new ResizeObserver(() => this.#resize()).observe(canvas);
    this.#resize();
    this.setScene("giftstream");
    requestAnimationFrame((t) => this.#frame(t));
  }

  setScene(seed) {
    this.hue = hueOf(seed);
    let s = hueOf(`${seed}:lights`) + 1;
    const rand = () => ((s = (s * 16807) % 2147483647) / 2147483647);
    this.lights = Array.from({ length: BOKEH }, () => ({
      x: rand(),
      y: rand() * 0.75,
      r: 0.03 + rand() * 0.09,
      hue: this.hue + (rand() - 0.5) * 120,
      speed: 0.2 + rand() * 0.6,
      phase: rand() * Math.PI * 2,
    }));
    const skin = SKIN[Math.floor(rand() * SKIN.length)];
    this.look = {
      skinLight: `hsl(${skin[0]} ${skin[1]}% ${skin[2] + 14}%)`,
      skinShade: `hsl(${skin[0]} ${skin[1] - 8}% ${skin[2] - 12}%)`,
      hair: `hsl(${Math.floor(rand() * 40) + (rand() < 0.3 ? 280 : 10)} ${25 + rand() * 45}% ${10 + rand() * 22}%)`,
      hoodie: this.hue + 40 + rand() * 80,
      blinkPhase: rand() * 4,
    };
  }

  /** A gift arrived: brighten the scene a little, more for bigger gifts. */
  pulse(amount) {
    this.energy = Math.min(1, this.energy + amount);
  }

  #resize() {
    const ratio = Math.min(window.devicePixelRatio || 1, 2);
    const { width, height } = this.canvas.getBoundingClientRect();
    this.canvas.width = Math.max(1, Math.round(width * ratio));
    this.canvas.height = Math.max(1, Math.round(height * ratio));
  }

  #frame(ms) {
    if (!reducedMotion) requestAnimationFrame((next) => this.#frame(next));
    // About 30 frames a second: a calm scene needs no more, and laptops stay cool.
    if (ms - this.drawnAt < FRAME_MS) return;
    this.drawnAt = ms;
    this.#draw(reducedMotion ? 0 : ms / 1000);
    this.energy *= 0.97;
  }

  #draw(t) {
    const { ctx, hue } = this;
    const w = this.canvas.width;
    const hgt = this.canvas.height;

    const bg = ctx.createLinearGradient(0, 0, 0, hgt);
    bg.addColorStop(0, `hsl(${hue} 55% 20%)`);
    bg.addColorStop(0.6, `hsl(${hue + 30} 50% 11%)`);
    bg.addColorStop(1, `hsl(${hue + 50} 45% 6%)`);
    ctx.fillStyle = bg;
    ctx.fillRect(0, 0, w, hgt);

    ctx.globalCompositeOperation = "lighter";
    for (const l of this.lights) {
      const x = (l.x + Math.sin(t * 0.05 * l.speed + l.phase) * 0.05) * w;
      const y = (l.y + Math.cos(t * 0.04 * l.speed + l.phase) * 0.03) * hgt;
      const r = l.r * w * (1 + 0.08 * Math.sin(t * l.speed + l.phase));
      const alpha = 0.1 + 0.12 * (0.5 + 0.5 * Math.sin(t * l.speed * 0.8 + l.phase)) + this.energy * 0.15;
      const g = ctx.createRadialGradient(x, y, 0, x, y, r);
      g.addColorStop(0, `hsla(${l.hue} 95% 70% / ${alpha})`);
      g.addColorStop(1, `hsla(${l.hue} 95% 60% / 0)`);
      ctx.fillStyle = g;
      ctx.beginPath();
      ctx.arc(x, y, r, 0, Math.PI * 2);
      ctx.fill();
    }
    ctx.globalCompositeOperation = "source-over";

    // The ring light behind the streamer.
    const cx = w / 2;
    const cy = hgt * 0.4;
    const ring = w * 0.33;
    ctx.save();
    ctx.shadowColor = `hsla(${hue + 180} 100% 85% / 0.9)`;
    ctx.shadowBlur = w * (0.06 + this.energy * 0.05);
    ctx.lineWidth = w * 0.022;
    ctx.strokeStyle = `hsla(${hue + 180} 90% ${88 + this.energy * 10}% / 0.95)`;
    ctx.beginPath();
    ctx.arc(cx, cy, ring, 0, Math.PI * 2);
    ctx.stroke();
    ctx.restore();
    const glow = ctx.createRadialGradient(cx, cy, ring * 0.2, cx, cy, ring * 1.5);
    glow.addColorStop(0, `hsla(${hue + 180} 80% 80% / 0.18)`);
    glow.addColorStop(1, `hsla(${hue + 180} 80% 80% / 0)`);
    ctx.fillStyle = glow;
    ctx.fillRect(0, 0, w, hgt);

    this.#streamer(t, cx, cy);

    const vignette = ctx.createRadialGradient(cx, hgt * 0.45, w * 0.3, cx, hgt * 0.5, hgt * 0.75);
    vignette.addColorStop(0, "rgba(0,0,0,0)");
    vignette.addColorStop(1, "rgba(0,0,0,0.55)");
    ctx.fillStyle = vignette;
    ctx.fillRect(0, 0, w, hgt);
  }

  #streamer(t, cx, cy) {
    const { ctx, hue, look } = this;
    const w = this.canvas.width;
    const hgt = this.canvas.height;
    const bob = Math.sin(t * 1.6) * w * 0.006 + this.energy * Math.sin(t * 9) * w * 0.008;
    const sway = Math.sin(t * 0.7) * w * 0.015;
    const tilt = Math.sin(t * 0.9) * 0.06;
    const headR = w * 0.12;
    const hx = cx + sway;
    const hy = cy + headR * 0.35 + bob;
    const rim = `hsla(${hue + 180} 95% 75% / 0.8)`;

    // Hair behind the head, then the hoodie.
    ctx.fillStyle = look.hair;
    ctx.beginPath();
    ctx.ellipse(hx, hy + headR * 0.45, headR * 1.08, headR * 1.35, tilt, 0, Math.PI * 2);
    ctx.fill();
    const top = hy + headR * 1.3;
    const hoodie = ctx.createLinearGradient(0, top, 0, hgt);
    hoodie.addColorStop(0, `hsl(${look.hoodie} 55% 32%)`);
    hoodie.addColorStop(1, `hsl(${look.hoodie} 50% 12%)`);
    ctx.save();
    ctx.shadowColor = rim;
    ctx.shadowBlur = w * 0.03;
    ctx.fillStyle = hoodie;
    ctx.beginPath();
    ctx.moveTo(cx - w * 0.42 + sway * 0.4, hgt);
    ctx.bezierCurveTo(cx - w * 0.42, top + headR * 0.4, cx - w * 0.2, top, hx, top);
    ctx.bezierCurveTo(cx + w * 0.2, top, cx + w * 0.42, top + headR * 0.4, cx + w * 0.42 + sway * 0.4, hgt);
    ctx.closePath();
    ctx.fill();
    ctx.restore();
    // The hoodie's strings.
    ctx.strokeStyle = `hsl(${look.hoodie} 40% 80% / 0.7)`;
    ctx.lineWidth = w * 0.006;
    for (const side of [-1, 1]) {
      ctx.beginPath();
      ctx.moveTo(hx + side * headR * 0.3, top + headR * 0.15);
      ctx.lineTo(hx + side * headR * 0.34 + sway * 0.1, top + headR * 0.9);
      ctx.stroke();
    }

    // Neck and face, lit from the front by the ring light.
    ctx.fillStyle = look.skinShade;
    ctx.fillRect(hx - headR * 0.3, hy + headR * 0.6, headR * 0.6, headR * 0.8);
    const face = ctx.createRadialGradient(hx - headR * 0.2, hy - headR * 0.3, headR * 0.1, hx, hy, headR * 1.1);
    face.addColorStop(0, look.skinLight);
    face.addColorStop(1, look.skinShade);
    ctx.save();
    ctx.translate(hx, hy);
    ctx.rotate(tilt);
    ctx.fillStyle = face;
    ctx.beginPath();
    ctx.ellipse(0, 0, headR * 0.86, headR, 0, 0, Math.PI * 2);
    ctx.fill();
    // Fringe.
    ctx.fillStyle = look.hair;
    ctx.beginPath();
    ctx.ellipse(0, -headR * 0.55, headR * 0.95, headR * 0.6, 0, Math.PI, Math.PI * 2);
    ctx.quadraticCurveTo(headR * 0.2, -headR * 0.25, -headR * 0.95, -headR * 0.5);
    ctx.fill();
    // Eyes that blink now and then, cheeks, and a mouth that opens when gifts arrive.
    const blink = (t + look.blinkPhase) % 4.2 < 0.14 ? 0.12 : 1;
    ctx.fillStyle = "#1d1420";
    for (const side of [-1, 1]) {
      ctx.beginPath();
      ctx.ellipse(side * headR * 0.33, headR * 0.02, headR * 0.085, headR * 0.12 * blink, 0, 0, Math.PI * 2);
      ctx.fill();
    }
    if (blink === 1) {
      ctx.fillStyle = "rgba(255,255,255,0.9)";
      for (const side of [-1, 1]) {
        ctx.beginPath();
        ctx.arc(side * headR * 0.33 + headR * 0.03, -headR * 0.03, headR * 0.03, 0, Math.PI * 2);
        ctx.fill();
      }
    }
    ctx.fillStyle = "rgba(255, 110, 140, 0.28)";
    for (const side of [-1, 1]) {
      ctx.beginPath();
      ctx.ellipse(side * headR * 0.5, headR * 0.3, headR * 0.14, headR * 0.08, 0, 0, Math.PI * 2);
      ctx.fill();
    }
    const open = Math.min(1, this.energy * 2) * (0.5 + 0.5 * Math.abs(Math.sin(t * 11)));
    ctx.fillStyle = "#5a1f2c";
    ctx.strokeStyle = "#5a1f2c";
    ctx.lineWidth = headR * 0.05;
    ctx.lineCap = "round";
    ctx.beginPath();
    if (open > 0.15) {
      ctx.ellipse(0, headR * 0.45, headR * 0.16, headR * 0.12 * open + headR * 0.03, 0, 0, Math.PI * 2);
      ctx.fill();
    } else {
      ctx.arc(0, headR * 0.3, headR * 0.2, Math.PI * 0.2, Math.PI * 0.8);
      ctx.stroke();
    }
    ctx.restore();

    // Headphones, in the room's accent colour.
    ctx.save();
    ctx.strokeStyle = `hsl(${hue + 150} 90% 62%)`;
    ctx.shadowColor = `hsl(${hue + 150} 90% 62%)`;
    ctx.shadowBlur = w * 0.02;
    ctx.lineWidth = w * 0.018;
    ctx.lineCap = "round";
    ctx.beginPath();
    ctx.arc(hx, hy, headR * 1.1, Math.PI * 1.08 + tilt, Math.PI * 1.92 + tilt);
    ctx.stroke();
    ctx.fillStyle = `hsl(${hue + 150} 85% 55%)`;
    for (const side of [-1, 1]) {
      ctx.beginPath();
      ctx.ellipse(hx + side * headR * 0.98, hy + headR * 0.1 + side * tilt * headR, headR * 0.2, headR * 0.32, tilt, 0, Math.PI * 2);
      ctx.fill();
    }
    ctx.restore();

    // An equalizer at the bottom: the stream has sound.
    const bars = 28;
    const bw = w / bars;
    for (let i = 0; i < bars; i += 1) {
      const level = 0.25 + 0.75 * Math.abs(Math.sin(t * (2 + (i % 5) * 0.7) + i * 1.7)) * (0.5 + this.energy);
      const bh = hgt * 0.05 * level;
      ctx.fillStyle = `hsla(${hue + i * 4} 90% 65% / 0.35)`;
      ctx.fillRect(i * bw + bw * 0.2, hgt - bh, bw * 0.6, bh);
    }
  }

}
