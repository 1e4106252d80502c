"""The Python client as its own distribution (clients/python, `giftstream-client`): built into a
wheel and an sdist that hold the package and nothing of the server, and installed alone into a
clean venv, where it pulls neither the server nor its runtime (uvicorn, redis...). Its
quickstart runs from that venv in tests/e2e/test_quickstarts.py."""

import json
import re
import subprocess
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from support.installs import CLIENT, build, only

PACKAGE = CLIENT / "giftstream_client"
pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(CLIENT, tmp_path_factory.mktemp("client-dist"))


def modules_in_checkout() -> set[str]:
    return {f"giftstream_client/{p.name}" for p in PACKAGE.iterdir() if p.suffix == ".py"}


def test_the_client_wheel_holds_the_package_typed_and_nothing_of_the_server(dist: Path) -> None:
    with zipfile.ZipFile(only(dist, "giftstream_client-*.whl")) as wheel:
        names = set(wheel.namelist())
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        meta = Parser().parsestr(wheel.read(metadata).decode())

    packaged = {n for n in names if ".dist-info/" not in n}
    assert packaged == modules_in_checkout() | {"giftstream_client/py.typed"}
    assert meta["Name"] == "giftstream-client"
    requires = [Requirement(r) for r in meta.get_all("Requires-Dist") or []]
    assert sorted(r.name for r in requires) == ["msgpack", "websockets"], requires


def test_the_client_sdist_holds_the_package_its_project_and_readme(dist: Path) -> None:
    with tarfile.open(only(dist, "giftstream_client-*.tar.gz")) as sdist:
        names = {re.sub(r"^giftstream_client-[^/]+/", "", n) for n in sdist.getnames()}

    assert modules_in_checkout() | {"giftstream_client/py.typed"} <= names
    assert {"pyproject.toml", "README.md"} <= names
    assert not [n for n in names if n.startswith(("giftstream/", "service/"))], names


def installed(python: Path) -> set[str]:
    listed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=json", "--disable-pip-version-check"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return {p["name"].lower() for p in json.loads(listed)}


def test_pip_install_of_the_client_pulls_websockets_and_msgpack_only(
    client_python: Path,
) -> None:
    packages = installed(client_python) - {"pip", "setuptools"}

    assert packages == {"giftstream-client", "websockets", "msgpack"}


def test_the_client_imports_from_its_venv_where_the_server_is_absent(
    client_python: Path, tmp_path: Path
) -> None:
    probe = (
        "import importlib.util, giftstream_client;"
        " print(giftstream_client.__file__);"
        " print(importlib.util.find_spec('giftstream'))"
    )
    where, server = subprocess.run(
        [str(client_python), "-I", "-c", probe],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()

    assert Path(where).is_relative_to(client_python.parents[1]), where
    assert server == "None"
