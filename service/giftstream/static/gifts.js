// How gifts look: an emoji per catalog id, and the size of the moment a gift gets.

const ART = {
  rose: "🌹",
  tiktok: "🎵",
  gg: "🎮",
  ice_cream_cone: "🍦",
  finger_heart: "🫰",
  rosa: "💐",
  perfume: "🧴",
  doughnut: "🍩",
  confetti: "🎊",
  hand_hearts: "🫶",
  corgi: "🐕",
  money_gun: "💸",
  swan: "🦢",
  train: "🚂",
  fireworks: "🎆",
  whale_diving: "🐋",
  private_jet: "🛩️",
  sports_car: "🏎️",
  interstellar: "🪐",
  lion: "🦁",
  tiktok_universe: "🌌",
};

/** Gifts from this price (in coins, per gift) get the full-screen moment. */
export const BIG_GIFT_COINS = 1000;
const MEDIUM_GIFT_COINS = 100;

export const art = (giftId) => ART[giftId] ?? "🎁";

/** "small" (float-ups), "medium" (a pop on the stage) or "big" (full screen). */
export function tier(unitCoins) {
  if (unitCoins >= BIG_GIFT_COINS) return "big";
  if (unitCoins >= MEDIUM_GIFT_COINS) return "medium";
  return "small";
}

/** The catalog by id, from GET /v1/gifts. */
export function indexCatalog(gifts) {
  return new Map(gifts.map((g) => [g.id, g]));
}
