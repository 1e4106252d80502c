"""What the install tests share: a distribution built as a user builds it, and the Python client
as a user installs it: `pip install clients/python` into a venv of its own, outside the checkout,
with nothing but what the client's own metadata asks for.

The client's install is offline: pip may only take packages from a wheelhouse downloaded from
the lock's pins (websockets, msgpack, and setuptools for the build), so a dependency the client
should not have (uvicorn, redis...) fails the install instead of being fetched."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "clients" / "python"
# What the client needs, and what pip needs to build it from its source.
WHEELHOUSE = ("websockets", "msgpack", "setuptools")
INSTALL_TIMEOUT_S = 300
BUILD_TIMEOUT_S = 300
# One pinned entry of a lock: `name==version [; marker] \` then its `--hash=` lines.
ENTRY = re.compile(r"^([A-Za-z0-9][^\\\n]*?)\s*\\\n((?:[ \t]+--hash=\S+(?:\s*\\)?\n?)+)", re.M)


def build(source: Path, out: Path) -> Path:
    """`python -m build` of a project: its sdist, then the wheel built from the sdist, in `out`."""
    subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(source)],
        check=True,
        capture_output=True,
        timeout=BUILD_TIMEOUT_S,
    )
    return out


def only(folder: Path, pattern: str) -> Path:
    """The one file of `folder` matching `pattern`."""
    (found,) = folder.glob(pattern)
    return found


def locked(names: tuple[str, ...]) -> str:
    """The dev lock's entries (pins and hashes) of these packages, as a requirements file."""
    text = (ROOT / "requirements" / "dev.txt").read_text()
    entries = [
        f"{spec} \\\n{hashes}"
        for spec, hashes in ENTRY.findall(text)
        if canonicalize_name(Requirement(spec).name) in names
    ]
    assert len(entries) == len(names), entries
    return "".join(entries)


def pip(python: Path, *args: str) -> None:
    subprocess.run(
        [str(python), "-m", "pip", "--quiet", "--disable-pip-version-check", *args],
        check=True,
        capture_output=True,
        timeout=INSTALL_TIMEOUT_S,
    )


def install_client(where: Path) -> Path:
    """`pip install clients/python` into a new venv under `where`; its python."""
    requirements = where / "wheelhouse.txt"
    requirements.write_text(locked(WHEELHOUSE))
    wheelhouse = where / "wheelhouse"
    pip(
        Path(sys.executable),
        "download",
        "--no-deps",
        "--require-hashes",
        "--dest",
        str(wheelhouse),
        "-r",
        str(requirements),
    )
    # A copy of clients/python, so that pip's build leaves nothing in the checkout.
    source = where / "clients" / "python"
    shutil.copytree(
        CLIENT, source, ignore=shutil.ignore_patterns("*.egg-info", "build", "__pycache__")
    )
    venv = where / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    pip(python, "install", "--no-index", "--find-links", str(wheelhouse), str(source))
    return python
