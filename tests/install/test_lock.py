"""The lock files (requirements/*.txt) agree with pyproject.toml: every dependency is pinned, with
hashes, to a version its bounds allow, on every Python the project supports; the runtime lock is
the dev lock's runtime part. A bound edited without `bash scripts/upgrade` fails here."""

import re
import tomllib
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PYTHONS = ("3.11.7", "3.12.1", "3.13.0")
# One pinned entry of a lock: `name==version [; marker] \` then its `--hash=` lines.
ENTRY = re.compile(r"^([A-Za-z0-9][^\\\n]*?)\s*\\\n((?:\s+--hash=\S+(?:\s*\\)?\n?)+)", re.M)


def pins(lock: str) -> list[tuple[Requirement, int]]:
    """Each pinned requirement of a lock file, with how many hashes it carries."""
    text = (ROOT / "requirements" / lock).read_text()
    return [(Requirement(spec), body.count("--hash=")) for spec, body in ENTRY.findall(text)]


def environment(python: str) -> dict[str, str]:
    env: dict[str, str] = {k: str(v) for k, v in default_environment().items()}
    env.update(python_full_version=python, python_version=python.rsplit(".", 1)[0])
    return env


def pinned_version(lock: str, name: str, python: str) -> str | None:
    for requirement, _ in pins(lock):
        marker_ok = requirement.marker is None or requirement.marker.evaluate(environment(python))
        if canonicalize_name(requirement.name) == canonicalize_name(name) and marker_ok:
            (spec,) = requirement.specifier
            return spec.version
    return None


def declared(*extras: str) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    found = [Requirement(r) for r in project["dependencies"]]
    for extra in extras:
        found += [Requirement(r) for r in project["optional-dependencies"][extra]]
    return [r for r in found if canonicalize_name(r.name) != "giftstream"]


@pytest.mark.parametrize("python", PYTHONS)
@pytest.mark.parametrize(
    ("lock", "extras"),
    [("dev.txt", ("test", "lint", "loadtest", "dev")), ("serve.txt", ())],
)
def test_every_dependency_is_pinned_within_its_bounds(
    lock: str, extras: tuple[str, ...], python: str
) -> None:
    for requirement in declared(*extras):
        if requirement.marker and not requirement.marker.evaluate(environment(python)):
            continue
        version = pinned_version(lock, requirement.name, python)
        assert version is not None, f"{requirement.name} is not in requirements/{lock}"
        assert requirement.specifier.contains(version), f"{requirement} but {lock} pins {version}"


@pytest.mark.parametrize("lock", ["dev.txt", "serve.txt"])
def test_every_pin_is_exact_and_carries_hashes(lock: str) -> None:
    entries = pins(lock)
    assert entries
    for requirement, hashes in entries:
        assert [s.operator for s in requirement.specifier] == ["=="], requirement
        assert hashes >= 1, requirement


@pytest.mark.parametrize("python", PYTHONS)
def test_the_serve_lock_pins_the_same_versions_as_the_dev_lock(python: str) -> None:
    for requirement, _ in pins("serve.txt"):
        if requirement.marker and not requirement.marker.evaluate(environment(python)):
            continue
        serve = pinned_version("serve.txt", requirement.name, python)
        assert serve == pinned_version("dev.txt", requirement.name, python), requirement.name
