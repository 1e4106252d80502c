"""The gift catalog and the diamond rate, loaded from a data file."""

import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

ANY_REGION = "*"


@dataclass(frozen=True, slots=True)
class Gift:
    id: str
    name: str
    coins: int
    streakable: bool = False
    broadcast: bool = False
    regions: frozenset[str] = frozenset({ANY_REGION})

    def available_in(self, region: str) -> bool:
        return ANY_REGION in self.regions or region in self.regions

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "coins": self.coins,
            "streakable": self.streakable,
            "type": 1 if self.streakable else 2,
            "broadcast": self.broadcast,
            "regions": sorted(self.regions),
        }


@dataclass(frozen=True, slots=True)
class DiamondRate:
    """Diamonds credited per coin, as the exact fraction numerator/denominator."""

    numerator: int = 1
    denominator: int = 1

    def __post_init__(self) -> None:
        if self.numerator < 0 or self.denominator < 1:
            raise ValueError("a diamond rate needs numerator >= 0 and denominator >= 1")


@dataclass(frozen=True, slots=True)
class Catalog:
    gifts: Mapping[str, Gift]
    rate: DiamondRate

    def get(self, gift_id: str) -> Gift | None:
        return self.gifts.get(gift_id)

    def __iter__(self) -> Iterator[Gift]:
        return iter(self.gifts.values())

    def __len__(self) -> int:
        return len(self.gifts)


def _gift_from(entry: Mapping[str, Any]) -> Gift:
    coins = entry["coins"]
    if not isinstance(coins, int) or isinstance(coins, bool) or coins < 1:
        raise ValueError(f"gift {entry.get('id')!r}: coins must be a positive integer")
    regions = entry.get("regions", [ANY_REGION])
    return Gift(
        id=str(entry["id"]),
        name=str(entry["name"]),
        coins=coins,
        streakable=bool(entry.get("streakable", False)),
        broadcast=bool(entry.get("broadcast", False)),
        regions=frozenset(str(r) for r in regions),
    )


def parse_catalog(data: Mapping[str, Any]) -> Catalog:
    gifts: dict[str, Gift] = {}
    for entry in data.get("gift", []):
        gift = _gift_from(entry)
        if gift.id in gifts:
            raise ValueError(f"gift id {gift.id!r} appears twice")
        gifts[gift.id] = gift
    economy = data.get("economy", {})
    rate = DiamondRate(
        numerator=int(economy.get("diamonds_per_coin_numerator", 1)),
        denominator=int(economy.get("diamonds_per_coin_denominator", 1)),
    )
    return Catalog(gifts=gifts, rate=rate)


def load_catalog(path: Path | None = None) -> Catalog:
    """Load the catalog from `path`, or from the bundled `data/gifts.toml`."""
    if path is None:
        text = resources.files("giftstream.data").joinpath("gifts.toml").read_text("utf-8")
    else:
        text = path.read_text("utf-8")
    return parse_catalog(tomllib.loads(text))
