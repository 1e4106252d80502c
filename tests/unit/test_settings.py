"""Settings.from_env is strict: each GIFTSTREAM_* variable a setting, each value one it takes."""

import re
import types
from dataclasses import fields
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import pytest

from giftstream.settings import ENV_PREFIX, POSITIVE, Settings, SettingsError


def test_no_variables_give_the_defaults() -> None:
    assert Settings.from_env({}) == Settings()


@pytest.mark.parametrize("raw", ["1", "true", "TRUE", "yes", "on", " On "])
def test_a_true_boolean_in_any_usual_spelling_reads_as_true(raw: str) -> None:
    assert Settings.from_env({"GIFTSTREAM_DEV": raw}).dev is True


@pytest.mark.parametrize("raw", ["0", "false", "no", "off", "False"])
def test_a_false_boolean_in_any_usual_spelling_reads_as_false(raw: str) -> None:
    assert Settings.from_env({"GIFTSTREAM_DEV": raw}).dev is False


@pytest.mark.parametrize("raw", ["ture", "2", "enabled", "y es"])
def test_a_misspelt_boolean_is_refused_naming_the_variable_and_what_it_takes(raw: str) -> None:
    with pytest.raises(SettingsError) as e:
        Settings.from_env({"GIFTSTREAM_DEV": raw})
    assert "GIFTSTREAM_DEV" in str(e.value)
    assert "true" in str(e.value) and "false" in str(e.value)
    assert repr(raw) in str(e.value)


@pytest.mark.parametrize("raw", ["eight", "8.5", "1e3", "1_000", "0x10", ""])
def test_an_integer_setting_takes_only_a_whole_number(raw: str) -> None:
    if raw == "":
        # An empty variable is an unset one (compose files and env files write them).
        assert Settings.from_env({"GIFTSTREAM_PORT": raw}).port == Settings().port
        return
    with pytest.raises(SettingsError, match="GIFTSTREAM_PORT must be a whole number"):
        Settings.from_env({"GIFTSTREAM_PORT": raw})


@pytest.mark.parametrize("raw", ["fast", "nan", "inf", "-inf"])
def test_a_float_setting_takes_only_a_finite_number(raw: str) -> None:
    with pytest.raises(SettingsError, match="GIFTSTREAM_RELAY_INTERVAL_S must be a number"):
        Settings.from_env({"GIFTSTREAM_RELAY_INTERVAL_S": raw})


def test_numbers_parse_to_their_field_types() -> None:
    s = Settings.from_env({"GIFTSTREAM_PORT": " 9000 ", "GIFTSTREAM_RELAY_INTERVAL_S": "0.25"})
    assert (s.port, s.relay_interval_s) == (9000, 0.25)


def test_a_negative_number_is_refused_for_every_numeric_setting() -> None:
    hints = get_type_hints(Settings)
    numeric = [f.name for f in fields(Settings) if hints[f.name] in (int, float)]
    assert numeric
    for name in numeric:
        variable = ENV_PREFIX + name.upper()
        with pytest.raises(SettingsError, match=f"{variable} must"):
            Settings.from_env({variable: "-1"})


def test_zero_is_refused_where_a_count_or_duration_must_be_positive() -> None:
    for name in sorted(POSITIVE):
        variable = ENV_PREFIX + name.upper()
        with pytest.raises(SettingsError, match=f"{variable} must be greater than 0"):
            Settings.from_env({variable: "0"})


def test_zero_is_taken_where_it_means_at_once() -> None:
    assert Settings.from_env({"GIFTSTREAM_RELAY_GRACE_MS": "0"}).relay_grace_ms == 0


def test_every_positive_setting_is_a_field() -> None:
    assert POSITIVE <= {f.name for f in fields(Settings)}


def test_an_unknown_choice_is_refused_listing_the_choices() -> None:
    with pytest.raises(SettingsError) as e:
        Settings.from_env({"GIFTSTREAM_AOF_FSYNC": "sometimes"})
    assert "GIFTSTREAM_AOF_FSYNC must be one of always, everysec, no" in str(e.value)
    assert Settings.from_env({"GIFTSTREAM_AOF_FSYNC": "always"}).aof_fsync == "always"


def test_an_unknown_fault_is_refused_and_known_ones_are_taken() -> None:
    with pytest.raises(SettingsError, match="GIFTSTREAM_FAULTS must be one of"):
        Settings.from_env({"GIFTSTREAM_FAULTS": "crash_after_debit,crash_later"})
    faults = Settings.from_env({"GIFTSTREAM_FAULTS": "lose_debit_reply, crash_after_debit"}).faults
    assert faults == {"lose_debit_reply", "crash_after_debit"}


def test_a_list_setting_takes_none_for_empty() -> None:
    assert Settings.from_env({"GIFTSTREAM_TRUSTED_IPS": "none"}).trusted_ips == frozenset()


def test_a_path_setting_reads_as_a_path() -> None:
    assert Settings.from_env({"GIFTSTREAM_CATALOG_PATH": "/x/gifts.toml"}).catalog_path == Path(
        "/x/gifts.toml"
    )


def test_an_unknown_giftstream_variable_stops_start_up_naming_it() -> None:
    with pytest.raises(SettingsError, match="GIFTSTREAM_WORKER is not a setting"):
        Settings.from_env({"GIFTSTREAM_WORKER": "4"})


def test_variables_without_the_prefix_are_not_the_services() -> None:
    assert Settings.from_env({"PATH": "/bin", "GIFTSTREAMX": "1"}) == Settings()


def test_a_flag_override_is_checked_too_and_named_as_the_flag() -> None:
    with pytest.raises(SettingsError, match="--port must be greater than 0"):
        Settings.from_env({}, port=-5)
    assert Settings.from_env({"GIFTSTREAM_PORT": "9000"}, port=9001).port == 9001


def test_to_env_round_trips_through_the_strict_parser() -> None:
    custom = Settings.from_env(
        {
            "GIFTSTREAM_DEV": "yes",
            "GIFTSTREAM_RELAY_INTERVAL_S": "0.1",
            "GIFTSTREAM_TRUSTED_IPS": "none",
            "GIFTSTREAM_FAULTS": "crash_after_debit",
            "GIFTSTREAM_REDIS_URL": "redis://example:6379/0",
        }
    )
    for settings in (Settings(), custom):
        env = settings.to_env()
        assert all(name.startswith(ENV_PREFIX) for name in env)
        assert Settings.from_env(env) == settings


def test_every_field_is_read_from_the_environment() -> None:
    # A value unlike the default for each field, through the environment: a field of a type the
    # parser cannot read fails here rather than reading as a string.
    hints = get_type_hints(Settings)
    for f in fields(Settings):
        default = getattr(Settings(), f.name)
        raw = _other_than(hints[f.name], default)
        settings = Settings.from_env({ENV_PREFIX + f.name.upper(): raw})
        assert getattr(settings, f.name) != default, f.name


def _other_than(kind: Any, default: Any) -> str:
    """A variable's text for a value of `kind` other than `default`."""
    if get_origin(kind) in (Union, types.UnionType):
        (kind,) = (a for a in get_args(kind) if a is not type(None))
    if get_origin(kind) is frozenset:
        (item,) = get_args(kind)
        return _other_than(item, None) if get_origin(item) is Literal else "10.0.0.1"
    if get_origin(kind) is Literal:
        return next(str(c) for c in get_args(kind) if c != default)
    examples: dict[Any, str] = {bool: "0" if default else "1", str: "x", Path: "/x"}
    if kind in (int, float):
        return str(int(default or 0) + 1)
    return examples[kind]


ROOT = Path(__file__).resolve().parents[2]
# These two name wrong variables on purpose.
WRONG_ON_PURPOSE = {"tests/unit/test_settings.py", "tests/e2e/test_bad_settings.py"}


def test_every_giftstream_name_the_repository_uses_is_a_setting() -> None:
    # Docs, deploy files, tests and the load tool: a variable set anywhere must be one that
    # start-up takes. `GIFTSTREAM_<NAME>` is a placeholder; `GIFTSTREAM_HTTP_*` a family.
    settings = {ENV_PREFIX + f.name.upper() for f in fields(Settings)}
    used: dict[str, str] = {}
    paths = [ROOT / "README.md", *(ROOT / d for d in ("service", "tests", "loadtest", "deploy"))]
    paths += [ROOT / "docs", ROOT / "scripts"]
    for top in paths:
        for path in [top] if top.is_file() else sorted(top.rglob("*")):
            relative = path.relative_to(ROOT).as_posix()
            skipped = "__pycache__" in relative or ".egg-info/" in relative
            if not path.is_file() or skipped or relative in WRONG_ON_PURPOSE:
                continue
            try:
                text = path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                continue
            for name, wildcard in re.findall(r"\b(GIFTSTREAM_[A-Z0-9_]*[A-Z0-9])(_\*)?", text):
                if wildcard:
                    assert any(s.startswith(name + "_") for s in settings), (relative, name)
                else:
                    used.setdefault(name, relative)
    assert used
    assert {name: where for name, where in used.items() if name not in settings} == {}
