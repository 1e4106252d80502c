"""The coin economy as data: prices by package, region and channel, promotions, cash-out and
rewards. Pure: amounts are Decimals or integers of minor units, never floats."""

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from importlib import resources
from pathlib import Path
from typing import Any

ANY_REGION = "*"
CHANNELS = ("web", "ios", "android")


class PriceError(ValueError):
    """A quote was asked for something that is not sold (unknown package, bad amount...)."""


class UnsoldRegion(PriceError):
    """Coins are not sold in this region."""


@dataclass(frozen=True, slots=True)
class Package:
    id: str
    coins: int
    usd: Decimal


@dataclass(frozen=True, slots=True)
class Region:
    code: str
    currency: str
    usd_rate: Decimal
    multiplier: Decimal
    decimals: int
    coins: bool = True


@dataclass(frozen=True, slots=True)
class Promotion:
    id: str
    name: str
    bonus_percent: int
    starts: datetime
    ends: datetime
    channels: frozenset[str] | None = None
    regions: frozenset[str] | None = None

    def applies(self, region: str, channel: str, now: datetime) -> bool:
        return (
            self.starts <= now < self.ends
            and (self.channels is None or channel in self.channels)
            and (self.regions is None or region in self.regions)
        )


@dataclass(frozen=True, slots=True)
class Quote:
    """What a buyer pays and gets."""

    package: str | None
    coins: int
    bonus: int
    price: Decimal
    currency: str
    channel: str
    region: str
    promotions: tuple[str, ...]

    @property
    def total_coins(self) -> int:
        return self.coins + self.bonus

    @property
    def price_text(self) -> str:
        return f"{self.price:f}"

    @property
    def price_per_coin(self) -> str:
        """Per coin bought, bonus coins included, to 6 places."""
        return f"{(self.price / self.total_coins).quantize(Decimal('0.000001')):f}"

    def public(self) -> dict[str, Any]:
        return {
            "id": self.package,
            "coins": self.coins,
            "bonus": self.bonus,
            "total_coins": self.total_coins,
            "price": self.price_text,
            "currency": self.currency,
            "price_per_coin": self.price_per_coin,
            "channel": self.channel,
            "region": self.region,
            "promotions": list(self.promotions),
        }


@dataclass(frozen=True, slots=True)
class Economy:
    packages: Mapping[str, Package]
    regions: Mapping[str, Region]
    channels: Mapping[str, Decimal]
    promotions: Sequence[Promotion]
    custom_min_coins: int
    custom_max_coins: int
    custom_usd_per_coin: Decimal
    late_settle_ms: int
    diamond_value_usd: Decimal
    minimum_payout_usd: Decimal
    points_per_coin: int
    daily_checkin_points: int
    minimum_age: int

    def region(self, code: str) -> Region:
        return self.regions.get(code) or self.regions[ANY_REGION]

    def sells_coins_in(self, code: str) -> bool:
        return self.region(code).coins

    def _local_price(self, usd: Decimal, region: Region, channel: str) -> Decimal:
        amount = usd * self.channels[channel] * region.multiplier * region.usd_rate
        return amount.quantize(Decimal(1).scaleb(-region.decimals), rounding=ROUND_HALF_UP)

    def _bonus(
        self, coins: int, region: str, channel: str, now: datetime
    ) -> tuple[int, tuple[str, ...]]:
        active = [p for p in self.promotions if p.applies(region, channel, now)]
        # Promotions do not stack: the most generous one applies.
        best = max(active, key=lambda p: p.bonus_percent, default=None)
        if best is None:
            return 0, ()
        return coins * best.bonus_percent // 100, (best.id,)

    def quote(
        self,
        region: str,
        channel: str,
        now: datetime,
        package: str | None = None,
        coins: int | None = None,
    ) -> Quote:
        """The price of a package, or of a custom amount of coins (web only)."""
        if channel not in self.channels:
            raise PriceError(f"unknown channel '{channel}': use one of {', '.join(self.channels)}")
        zone = self.region(region)
        if not zone.coins:
            raise UnsoldRegion(f"coins are not sold in region {region}")
        if (package is None) == (coins is None):
            raise PriceError("give either a package or a number of coins")
        if package is not None:
            found = self.packages.get(package)
            if found is None:
                raise PriceError(f"there is no package '{package}'")
            amount, usd = found.coins, found.usd
        else:
            assert coins is not None
            if channel != "web":
                raise PriceError("custom amounts of coins are sold on the web only")
            if not self.custom_min_coins <= coins <= self.custom_max_coins:
                raise PriceError(
                    f"a custom amount must be {self.custom_min_coins} to"
                    f" {self.custom_max_coins} coins"
                )
            amount, usd = coins, self.custom_usd_per_coin * coins
        bonus, promotions = self._bonus(amount, region, channel, now)
        return Quote(
            package=package,
            coins=amount,
            bonus=bonus,
            price=self._local_price(usd, zone, channel),
            currency=zone.currency,
            channel=channel,
            region=region,
            promotions=promotions,
        )

    def price_list(self, region: str, channel: str, now: datetime) -> list[Quote]:
        return [self.quote(region, channel, now, package=p) for p in self.packages]

    def diamonds_value(self, diamonds: int) -> Decimal:
        """US dollars for `diamonds` at cash-out, rounded down to the cent."""
        return (self.diamond_value_usd * diamonds).quantize(Decimal("0.01"), rounding="ROUND_DOWN")

    @property
    def minimum_payout_diamonds(self) -> int:
        minimum = self.minimum_payout_usd / self.diamond_value_usd
        return int(minimum.to_integral_value(rounding="ROUND_CEILING"))


def _decimal(value: Any, what: str) -> Decimal:
    if not isinstance(value, str):
        raise ValueError(f'{what} must be a decimal string such as "0.74"')
    return Decimal(value)


def _int(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{what} must be an integer")
    return value


def _when(value: Any, what: str) -> datetime:
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        parsed = datetime.fromisoformat(value)
    else:
        raise ValueError(f"{what} must be a UTC date and time")
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _codes(value: Any) -> frozenset[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("channels and regions must be lists of strings")
    return frozenset(value)


def parse_economy(data: Mapping[str, Any]) -> Economy:
    packages: dict[str, Package] = {}
    for entry in data.get("package", []):
        package = Package(
            id=str(entry["id"]),
            coins=_int(entry["coins"], "package coins"),
            usd=_decimal(entry["usd"], "package usd"),
        )
        packages[package.id] = package
    regions = {
        str(e["code"]): Region(
            code=str(e["code"]),
            currency=str(e["currency"]),
            usd_rate=_decimal(e["usd_rate"], "usd_rate"),
            multiplier=_decimal(e["multiplier"], "multiplier"),
            decimals=_int(e["decimals"], "decimals"),
            coins=bool(e.get("coins", True)),
        )
        for e in data.get("region", [])
    }
    if ANY_REGION not in regions:
        raise ValueError("the economy needs a default region '*'")
    promotions = [
        Promotion(
            id=str(e["id"]),
            name=str(e["name"]),
            bonus_percent=_int(e["bonus_percent"], "bonus_percent"),
            starts=_when(e["starts"], "starts"),
            ends=_when(e["ends"], "ends"),
            channels=_codes(e.get("channels")),
            regions=_codes(e.get("regions")),
        )
        for e in data.get("promotion", [])
    ]
    recharge, cashout, rewards = data["recharge"], data["cashout"], data["rewards"]
    return Economy(
        packages=packages,
        regions=regions,
        channels={k: _decimal(v, f"channel {k}") for k, v in data["channels"].items()},
        promotions=promotions,
        custom_min_coins=_int(recharge["custom_min_coins"], "custom_min_coins"),
        custom_max_coins=_int(recharge["custom_max_coins"], "custom_max_coins"),
        custom_usd_per_coin=_decimal(recharge["custom_usd_per_coin"], "custom_usd_per_coin"),
        late_settle_ms=_int(recharge["late_settle_ms"], "late_settle_ms"),
        diamond_value_usd=_decimal(cashout["diamond_value_usd"], "diamond_value_usd"),
        minimum_payout_usd=_decimal(cashout["minimum_usd"], "minimum_usd"),
        points_per_coin=_int(rewards["points_per_coin"], "points_per_coin"),
        daily_checkin_points=_int(rewards["daily_checkin_points"], "daily_checkin_points"),
        minimum_age=_int(data["age"]["minimum"], "age minimum"),
    )


def load_economy(path: Path | None = None) -> Economy:
    """Load the economy from `path`, or from the bundled `data/economy.toml`."""
    if path is None:
        text = resources.files("giftstream.data").joinpath("economy.toml").read_text("utf-8")
    else:
        text = path.read_text("utf-8")
    return parse_economy(tomllib.loads(text))
