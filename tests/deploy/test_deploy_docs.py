"""The deployment's documentation: the README links the guide, relative links resolve, and the
scale-out script is executable."""

import os
import re
import subprocess

import pytest

from support.deploy import DEPLOY, ROOT

# -- documentation --------------------------------------------------------------------------

LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def test_readme_links_the_deploy_guide_and_the_scaling_note() -> None:
    links = set(LINK.findall((ROOT / "README.md").read_text()))
    assert {"deploy/README.md", "docs/scaling.md"} <= links


@pytest.mark.parametrize("doc", ["deploy/README.md", "docs/scaling.md"])
def test_relative_links_resolve_to_files_of_the_repository(doc: str) -> None:
    path = ROOT / doc
    links = [link for link in LINK.findall(path.read_text()) if "://" not in link]
    assert links
    for link in links:
        assert (path.parent / link).exists(), f"{doc}: {link}"


def test_the_scaleout_script_is_executable_bash() -> None:
    script = DEPLOY / "local-scaleout.sh"
    assert script.read_text().startswith("#!/usr/bin/env bash\n")
    assert os.access(script, os.X_OK)
    subprocess.run(["bash", "-n", str(script)], check=True, timeout=10)
