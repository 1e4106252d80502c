"""The gift catalog: the bundled data file, parsing rules, regions and the diamond rate."""

import json
from pathlib import Path
from typing import Any

import pytest

from giftstream.domain.catalog import (
    ANY_REGION,
    Catalog,
    DiamondRate,
    Gift,
    load_catalog,
    parse_catalog,
)

# The catalog defaults of domain.md: name -> (coins, streakable).
DOMAIN_GIFTS: dict[str, tuple[int, bool]] = {
    "Rose": (1, True),
    "TikTok": (1, True),
    "GG": (1, True),
    "Ice Cream Cone": (1, True),
    "Finger Heart": (5, True),
    "Rosa": (10, True),
    "Perfume": (20, True),
    "Doughnut": (30, True),
    "Confetti": (100, False),
    "Hand Hearts": (100, False),
    "Corgi": (299, False),
    "Money Gun": (500, False),
    "Swan": (699, False),
    "Train": (899, False),
    "Fireworks": (1_088, False),
    "Whale Diving": (2_150, False),
    "Private Jet": (4_888, False),
    "Sports Car": (7_000, False),
    "Interstellar": (10_000, False),
    "Lion": (29_999, False),
    "TikTok Universe": (44_999, False),
}


def _gift(gift_id: str = "rose", coins: Any = 1, **extra: Any) -> dict[str, Any]:
    return {"id": gift_id, "name": gift_id.title(), "coins": coins, **extra}


def _data(*gifts: dict[str, Any], economy: dict[str, Any] | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"gift": list(gifts)}
    if economy is not None:
        data["economy"] = economy
    return data


@pytest.fixture(scope="module")
def bundled() -> Catalog:
    return load_catalog()


def _by_name(catalog: Catalog) -> dict[str, Gift]:
    return {gift.name: gift for gift in catalog}


# --- the bundled data file -------------------------------------------------------------------


def test_bundled_catalog_has_exactly_the_21_domain_gifts(bundled: Catalog) -> None:
    assert len(bundled) == 21
    assert set(_by_name(bundled)) == set(DOMAIN_GIFTS)


@pytest.mark.parametrize(("name", "expected"), sorted(DOMAIN_GIFTS.items()))
def test_bundled_gift_has_the_domain_price_and_streakable_flag(
    bundled: Catalog, name: str, expected: tuple[int, bool]
) -> None:
    gift = _by_name(bundled)[name]
    assert (gift.coins, gift.streakable) == expected


def test_bundled_streakable_gifts_are_exactly_those_of_30_coins_or_less(bundled: Catalog) -> None:
    streakable = {g.name for g in bundled if g.streakable}
    assert streakable == {
        "Rose",
        "TikTok",
        "GG",
        "Ice Cream Cone",
        "Finger Heart",
        "Rosa",
        "Perfume",
        "Doughnut",
    }
    assert all(g.coins <= 30 for g in bundled if g.streakable)
    assert all(g.coins >= 100 for g in bundled if not g.streakable)


def test_bundled_tiktok_universe_is_the_only_broadcast_gift(bundled: Catalog) -> None:
    assert [g.name for g in bundled if g.broadcast] == ["TikTok Universe"]
    universe = _by_name(bundled)["TikTok Universe"]
    assert universe.coins == 44_999
    assert not universe.streakable


def test_bundled_gift_ids_are_unique_and_found_by_get(bundled: Catalog) -> None:
    ids = [g.id for g in bundled]
    assert len(ids) == len(set(ids)) == 21
    for gift in bundled:
        assert bundled.get(gift.id) is gift


def test_bundled_catalog_get_returns_none_for_an_unknown_id(bundled: Catalog) -> None:
    assert bundled.get("no_such_gift") is None
    # Lookups are by id, never by display name.
    assert bundled.get("Rose") is None


def test_bundled_diamond_rate_is_one_diamond_per_coin(bundled: Catalog) -> None:
    assert bundled.rate == DiamondRate(1, 1)


def test_bundled_gifts_are_available_in_every_region_by_default(bundled: Catalog) -> None:
    for gift in bundled:
        assert gift.regions == frozenset({ANY_REGION})
        assert gift.available_in("US")
        assert gift.available_in("BR")


def test_load_catalog_reads_the_given_toml_file(tmp_path: Path) -> None:
    path = tmp_path / "gifts.toml"
    path.write_text(
        "[economy]\n"
        "diamonds_per_coin_numerator = 2\n"
        "diamonds_per_coin_denominator = 3\n"
        "\n"
        "[[gift]]\n"
        'id = "star"\n'
        'name = "Star"\n'
        "coins = 7\n"
        "streakable = true\n"
        'regions = ["US", "GB"]\n',
        encoding="utf-8",
    )
    catalog = load_catalog(path)
    assert len(catalog) == 1
    assert catalog.get("star") == Gift(
        id="star", name="Star", coins=7, streakable=True, regions=frozenset({"US", "GB"})
    )
    assert catalog.rate == DiamondRate(2, 3)


# --- parse_catalog ----------------------------------------------------------------------------


def test_parse_catalog_keeps_gifts_in_file_order() -> None:
    catalog = parse_catalog(_data(_gift("b", 2), _gift("a", 1), _gift("c", 3)))
    assert [g.id for g in catalog] == ["b", "a", "c"]


def test_parse_catalog_defaults_flags_to_false_and_regions_to_everywhere() -> None:
    gift = parse_catalog(_data(_gift("rose", 1))).get("rose")
    assert gift is not None
    assert not gift.streakable
    assert not gift.broadcast
    assert gift.regions == frozenset({ANY_REGION})


def test_parse_catalog_of_an_empty_mapping_is_empty_with_rate_one() -> None:
    catalog = parse_catalog({})
    assert len(catalog) == 0
    assert catalog.rate == DiamondRate(1, 1)


def test_parse_catalog_rejects_a_duplicate_gift_id() -> None:
    with pytest.raises(ValueError, match="twice"):
        parse_catalog(_data(_gift("rose", 1), _gift("rose", 5)))


@pytest.mark.parametrize("coins", [0, -1, -44_999, True, False, 1.5, 1.0, "10", None])
def test_parse_catalog_rejects_coins_that_are_not_a_positive_integer(coins: Any) -> None:
    with pytest.raises(ValueError, match="coins"):
        parse_catalog(_data(_gift("rose", coins)))


def test_parse_catalog_reads_the_economy_rate() -> None:
    catalog = parse_catalog(
        _data(
            economy={"diamonds_per_coin_numerator": 1, "diamonds_per_coin_denominator": 2},
        )
    )
    assert catalog.rate == DiamondRate(1, 2)


@pytest.mark.parametrize(
    "economy",
    [
        {"diamonds_per_coin_denominator": 0},
        {"diamonds_per_coin_denominator": -2},
        {"diamonds_per_coin_numerator": -1},
    ],
)
def test_parse_catalog_rejects_an_invalid_diamond_rate(economy: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        parse_catalog(_data(economy=economy))


@pytest.mark.parametrize(
    "economy",
    [
        {"diamonds_per_coin_numerator": 0.5},
        {"diamonds_per_coin_numerator": 2.9},
        {"diamonds_per_coin_denominator": 1.5},
    ],
)
def test_parse_catalog_rejects_a_fractional_rate_term_instead_of_truncating_it(
    economy: dict[str, Any],
) -> None:
    # A rate is an exact fraction of two integers; silently truncating 0.5 to 0 would credit
    # hosts nothing at all.
    with pytest.raises(ValueError):
        parse_catalog(_data(economy=economy))


@pytest.mark.parametrize("flag", ["streakable", "broadcast"])
@pytest.mark.parametrize("value", ["false", 1])
def test_parse_catalog_does_not_read_a_non_boolean_flag_as_truthiness(
    flag: str, value: Any
) -> None:
    # `streakable = "false"` must not make a gift streakable.
    with pytest.raises(ValueError):
        parse_catalog(_data(_gift("rose", 1, **{flag: value})))


# --- regions ----------------------------------------------------------------------------------


def test_gift_with_listed_regions_is_available_only_there() -> None:
    gift = parse_catalog(_data(_gift("rose", 1, regions=["US", "BR"]))).get("rose")
    assert gift is not None
    assert gift.available_in("US")
    assert gift.available_in("BR")
    assert not gift.available_in("JP")


def test_gift_with_star_region_is_available_everywhere() -> None:
    gift = parse_catalog(_data(_gift("rose", 1, regions=["*"]))).get("rose")
    assert gift is not None
    assert all(gift.available_in(r) for r in ("US", "BR", "JP", "CH", "ZZ"))


def test_gift_with_star_among_other_regions_is_available_everywhere() -> None:
    gift = Gift(id="rose", name="Rose", coins=1, regions=frozenset({"US", ANY_REGION}))
    assert gift.available_in("JP")


def test_gift_with_no_regions_is_available_nowhere() -> None:
    gift = parse_catalog(_data(_gift("rose", 1, regions=[]))).get("rose")
    assert gift is not None
    assert not gift.available_in("US")


def test_parse_catalog_does_not_split_a_single_region_string_into_letters() -> None:
    # `regions = "US"` in the data file must not become the regions {"U", "S"}.
    try:
        catalog = parse_catalog(_data(_gift("rose", 1, regions="US")))
    except ValueError:
        return  # refusing the malformed field is fine too
    gift = catalog.get("rose")
    assert gift is not None
    assert gift.available_in("US")
    assert not gift.available_in("U")


# --- DiamondRate ------------------------------------------------------------------------------


def test_diamond_rate_defaults_to_one_per_coin() -> None:
    assert DiamondRate() == DiamondRate(1, 1)


@pytest.mark.parametrize(("numerator", "denominator"), [(0, 1), (1, 1), (1, 2), (2, 3), (7, 1)])
def test_diamond_rate_accepts_non_negative_numerator_and_positive_denominator(
    numerator: int, denominator: int
) -> None:
    rate = DiamondRate(numerator, denominator)
    assert (rate.numerator, rate.denominator) == (numerator, denominator)


@pytest.mark.parametrize(("numerator", "denominator"), [(-1, 1), (1, 0), (1, -1), (0, 0)])
def test_diamond_rate_rejects_negative_numerator_or_denominator_below_one(
    numerator: int, denominator: int
) -> None:
    with pytest.raises(ValueError):
        DiamondRate(numerator, denominator)


# --- public() ---------------------------------------------------------------------------------


def test_public_of_a_streakable_gift_lists_every_field_with_type_1(bundled: Catalog) -> None:
    rose = bundled.get("rose")
    assert rose is not None
    assert rose.public() == {
        "id": "rose",
        "name": "Rose",
        "coins": 1,
        "streakable": True,
        "type": 1,
        "broadcast": False,
        "regions": ["*"],
    }


def test_public_of_a_broadcast_single_gift_has_type_2(bundled: Catalog) -> None:
    universe = bundled.get("tiktok_universe")
    assert universe is not None
    public = universe.public()
    assert public["type"] == 2
    assert public["streakable"] is False
    assert public["broadcast"] is True
    assert public["coins"] == 44_999
    assert public["name"] == "TikTok Universe"


def test_public_lists_regions_sorted() -> None:
    gift = Gift(id="x", name="X", coins=3, regions=frozenset({"US", "BR", "JP"}))
    assert gift.public()["regions"] == ["BR", "JP", "US"]


def test_public_output_of_every_bundled_gift_is_json_serialisable(bundled: Catalog) -> None:
    for gift in bundled:
        assert json.loads(json.dumps(gift.public())) == gift.public()
