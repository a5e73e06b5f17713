"""README's set-up on a stock Debian/Ubuntu Python (issue 25): `python3 -m pip install uv` is refused
there (PEP 668), `python3 bootstrap.py run ...` is not. Runs against /usr/bin/python3 with no uv on
PATH, in a copy of the repository."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

SYSTEM_PYTHON = Path("/usr/bin/python3")


def copy_of_the_repository(to: Path) -> Path:
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                            check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (to / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, to / name)
    return to


def test_readme_set_up_works_on_the_system_python(tmp_path):
    if not SYSTEM_PYTHON.exists():
        pytest.skip("no /usr/bin/python3 on this machine")
    version = subprocess.run([str(SYSTEM_PYTHON), "-c", "import sys; print(sys.version_info[:2] == (3, 11))"],
                             capture_output=True, text=True).stdout.strip()
    if version != "True":
        pytest.skip("/usr/bin/python3 is not Python 3.11 (the project's interpreter)")
    repo = copy_of_the_repository(tmp_path / "vault")
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("UV_", "VIRTUAL_ENV", "PYENV", "PYTHON")) or key == "UV_CACHE_DIR"}
    env["PATH"] = "/usr/bin:/bin"  # no uv, no pyenv shims: what a fresh Debian or Ubuntu user has
    assert shutil.which("uv", path=env["PATH"]) is None
    externally_managed = list(Path("/usr/lib").glob("python3.*/EXTERNALLY-MANAGED"))
    if externally_managed:  # the README's old first step, refused as issue 25 found
        old = subprocess.run([str(SYSTEM_PYTHON), "-m", "pip", "install", "uv"], cwd=repo, env=env,
                             capture_output=True, text=True, timeout=120)
        assert old.returncode != 0 and "externally-managed-environment" in old.stderr + old.stdout
    done = subprocess.run([str(SYSTEM_PYTHON), "bootstrap.py", "run", "--locked", "vault", "--help"], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=800)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Usage: vault" in done.stdout
    assert (repo / ".venv-tools" / "bin" / "uv").exists()
    again = subprocess.run([str(SYSTEM_PYTHON), "bootstrap.py", "--version"], cwd=repo, env=env, capture_output=True,
                           text=True, timeout=60)
    assert again.returncode == 0 and again.stdout.startswith("uv ") and "installing" not in again.stderr
