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


def _integer(value: Any, what: str, low: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{what} must be an integer of at least {low}")
    return value


def _flag(entry: Mapping[str, Any], name: str) -> bool:
    value = entry.get(name, False)
    if not isinstance(value, bool):
        raise ValueError(f"gift {entry.get('id')!r}: {name} must be true or false")
    return value


def _text(entry: Mapping[str, Any], name: str) -> str:
    value = entry.get(name)
    if not isinstance(value, str) or not value:
        raise ValueError(f"every gift needs a non-empty string '{name}'")
    return value


def _gift_from(entry: Mapping[str, Any]) -> Gift:
    gift_id = _text(entry, "id")
    regions = entry.get("regions", [ANY_REGION])
    if not isinstance(regions, list) or not all(isinstance(r, str) for r in regions):
        raise ValueError(f"gift {gift_id!r}: regions must be a list of region codes")
    return Gift(
        id=gift_id,
        name=_text(entry, "name"),
        coins=_integer(entry.get("coins"), f"gift {gift_id!r}: coins", 1),
        streakable=_flag(entry, "streakable"),
        broadcast=_flag(entry, "broadcast"),
        regions=frozenset(regions),
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
        numerator=_integer(economy.get("diamonds_per_coin_numerator", 1), "the numerator", 0),
        denominator=_integer(economy.get("diamonds_per_coin_denominator", 1), "the denominator", 1),
    )
    return Catalog(gifts=gifts, rate=rate)


def load_catalog(path: Path | None = None) -> Catalog:
    """Load the catalog from `path`, or from the bundled `data/gifts.toml`."""
    if path is None:
        text = resources.files("giftstream.data").joinpath("gifts.toml").read_text("utf-8")
    else:
        text = path.read_text("utf-8")
    return parse_catalog(tomllib.loads(text))
