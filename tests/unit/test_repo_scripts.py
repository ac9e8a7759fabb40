"""The repository's shell scripts (engine start, image build) pass shellcheck."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPTS = sorted((Path(__file__).resolve().parents[2] / "scripts").glob("*.sh"))
SHELLCHECK = shutil.which("shellcheck") or str(Path(os.sys.executable).with_name("shellcheck"))


def test_there_are_scripts() -> None:
    assert {p.name for p in SCRIPTS} >= {"dockerd-up.sh", "build-image.sh"}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_is_shellcheck_clean(script: Path) -> None:
    done = subprocess.run([SHELLCHECK, str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout
