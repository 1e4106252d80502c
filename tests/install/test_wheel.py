"""The package as a user installs it: built into a wheel and an sdist, installed into a venv of its
own outside the checkout, and run from there. Proves the Lua functions, the demo page and the
data files travel inside the wheel (and the sdist it is built from)."""

import os
import re
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Callable, Iterator
from email.parser import Parser
from pathlib import Path
from typing import Any

import httpx
import pytest
from packaging.requirements import Requirement

from support import free_port
from support.installs import build, only

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "service" / "giftstream"
# Files the service reads at run time, beside its modules.
RESOURCES = ("store/functions", "store/migrations", "static", "data")
DEMO_READY_S = 90.0
pytestmark = pytest.mark.timeout(600)


def resources_in_checkout() -> set[str]:
    return {
        f"giftstream/{p.relative_to(PACKAGE)}"
        for folder in RESOURCES
        for p in (PACKAGE / folder).iterdir()
        if p.is_file() and p.suffix != ".pyc"
    }


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(ROOT, tmp_path_factory.mktemp("dist"))


def test_the_wheel_holds_every_lua_function_static_file_and_data_file(dist: Path) -> None:
    with zipfile.ZipFile(only(dist, "giftstream-*.whl")) as wheel:
        names = set(wheel.namelist())
    assert resources_in_checkout() <= names, resources_in_checkout() - names
    assert "giftstream/py.typed" in names


def test_the_wheel_holds_no_client_its_own_distribution_has_it(dist: Path) -> None:
    with zipfile.ZipFile(only(dist, "giftstream-*.whl")) as wheel:
        names = wheel.namelist()
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        requires = Parser().parsestr(wheel.read(metadata).decode()).get_all("Requires-Dist")

    assert not [n for n in names if n.startswith(("giftstream/client/", "giftstream_client/"))]
    names_required = {Requirement(r).name for r in requires or []}
    assert "starlette" in names_required and "giftstream-client" not in names_required


def test_the_sdist_holds_every_lua_function_static_file_and_the_lock(dist: Path) -> None:
    with tarfile.open(only(dist, "giftstream-*.tar.gz")) as sdist:
        names = {re.sub(r"^giftstream-[^/]+/", "", n) for n in sdist.getnames()}
    assert {f"service/{r}" for r in resources_in_checkout()} <= names
    assert {"requirements/serve.txt", "requirements/dev.txt", "pyproject.toml"} <= names


@pytest.fixture(scope="module")
def installed(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv outside the checkout with the locked runtime and the wheel, and nothing else."""
    venv = tmp_path_factory.mktemp("user") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--quiet", "--disable-pip-version-check"]
    lock = ROOT / "requirements" / "serve.txt"
    subprocess.run([*pip, "install", "--require-hashes", "-r", str(lock)], check=True, timeout=600)
    wheel = only(dist, "giftstream-*.whl")
    subprocess.run([*pip, "install", "--no-deps", str(wheel)], check=True, timeout=120)
    return venv


def outside_env() -> dict[str, str]:
    """The environment of a user's shell: no settings of ours, nothing pointing at the checkout."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GIFTSTREAM_", "PYTHON", "VIRTUAL_ENV"))
    }


def test_the_installed_package_is_imported_from_the_venv_not_the_checkout(
    installed: Path, tmp_path: Path
) -> None:
    where = subprocess.run(
        [str(installed / "bin" / "python"), "-c", "import giftstream; print(giftstream.__file__)"],
        cwd=tmp_path,
        env=outside_env(),
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert Path(where).is_relative_to(installed), where


@pytest.fixture
def demo(installed: Path, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    log = (tmp_path / "demo.log").open("wb")
    command = [str(installed / "bin" / "giftstream"), "demo", "--port", str(port)]
    process = subprocess.Popen(
        [*command, "--rooms", "1", "--bots", "3"],
        cwd=tmp_path,
        env=outside_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def eventually_json(url: str, ok: Callable[[Any], bool]) -> Any:
    """GET url until `ok(answer)` holds, or fail at the deadline with the last answer."""
    deadline = time.monotonic() + DEMO_READY_S
    last: Any = None
    while time.monotonic() < deadline:
        try:
            response = httpx.get(url, timeout=2.0)
            last = response.text if url.endswith("/metrics") else response.json()
            if response.status_code == 200 and ok(last):
                return last
        except (httpx.TransportError, ValueError):
            pass
        time.sleep(0.2)
    pytest.fail(f"{url} never satisfied the check; last answer: {last!r}")


def gifts_acked(metrics: str) -> float:
    match = re.search(r'^giftstream_gifts_total\{result="ok"\} (\S+)$', metrics, re.M)
    return float(match.group(1)) if match else 0.0


def rows_archived(metrics: str) -> float:
    match = re.search(
        r'^giftstream_archived_rows_total\{table="ledger_entries"\} (\S+)$', metrics, re.M
    )
    return float(match.group(1)) if match else 0.0


def test_the_demo_runs_from_the_installed_wheel(demo: str) -> None:
    rooms = eventually_json(demo + "/v1/rooms", lambda rooms: any(r["live"] for r in rooms))
    assert isinstance(rooms, list)
    # Bots gifting means the Lua functions were found and loaded from the wheel.
    eventually_json(demo + "/metrics", lambda text: gifts_acked(text) > 0)
    # Rows archived means the embedded PostgreSQL started and the migrations came with the wheel.
    eventually_json(demo + "/metrics", lambda text: rows_archived(text) > 0)
    page = httpx.get(demo + "/")
    assert page.status_code == 200 and "<html" in page.text.lower()
    for script in re.findall(r'src="/static/([^"]+)"', page.text):
        assert httpx.get(f"{demo}/static/{script}").status_code == 200, script
    assert httpx.get(demo + "/static/giftstream.js").status_code == 200
    assert httpx.get(demo + "/v1/gifts").json()
