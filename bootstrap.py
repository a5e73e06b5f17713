#!/usr/bin/env python3
"""Run uv, installing it first where needed: `python3 bootstrap.py run pytest` is `uv run pytest`.

Works on any Python 3.8+, including Debian's and Ubuntu's system Python, where `python3 -m pip
install uv` is refused (PEP 668, externally-managed-environment). Where to find uv, first found:

1. `uv` on PATH (a pyenv or python.org set-up with uv installed, CI, a developer's machine);
2. .venv-tools/bin/uv, this repository's own tool environment (git-ignored);
3. otherwise it is made: `python3 -m venv .venv-tools` and pip installs uv into it (Debian and
   Ubuntu need the python3-venv package for that), or, without venv, `pipx install uv`.

Then uv runs with the arguments given (`run`, `sync`, `lock`, ...) and its exit code is returned.
Later README commands write `uv ...`: put .venv-tools/bin on PATH, or keep writing
`python3 bootstrap.py ...`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
TOOLS = ROOT / ".venv-tools"
UV_VERSION = os.environ.get("VAULT_UV_VERSION", "0.13.9")  # the uv that wrote uv.lock


def tool_uv() -> Path:
    return TOOLS / ("Scripts/uv.exe" if os.name == "nt" else "bin/uv")


def install() -> Path:
    """uv into .venv-tools (a venv of this interpreter), or through pipx; the path of uv."""
    print(f"bootstrap: uv not found; installing uv {UV_VERSION} into {TOOLS.name}/", file=sys.stderr)
    try:
        venv.EnvBuilder(with_pip=True, clear=True).create(TOOLS)
    except Exception as error:  # Debian/Ubuntu without python3-venv: ensurepip is missing
        shutil.rmtree(TOOLS, ignore_errors=True)
        pipx = shutil.which("pipx")
        if pipx is None:
            sys.exit(f"bootstrap: cannot make a virtual environment ({error}). On Debian or Ubuntu: "
                     "`sudo apt-get install python3-venv` (or pipx), then run this again")
        subprocess.run([pipx, "install", f"uv=={UV_VERSION}"], check=True)
        found = shutil.which("uv") or str(Path.home() / ".local" / "bin" / "uv")
        return Path(found)
    python = TOOLS / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    f"uv=={UV_VERSION}"], check=True)
    print(f"bootstrap: uv is {tool_uv()}; later `uv ...` commands: export PATH=\"{TOOLS / 'bin'}:$PATH\"",
          file=sys.stderr)
    return tool_uv()


def find_uv() -> Path:
    on_path = shutil.which("uv")
    if on_path:
        return Path(on_path)
    if tool_uv().exists():
        return tool_uv()
    return install()


def main(argv: list[str]) -> int:
    uv = find_uv()
    if not argv:
        print(uv)
        return 0
    if os.name == "nt":
        return subprocess.run([str(uv), *argv]).returncode
    os.execv(str(uv), [str(uv), *argv])  # uv becomes this process: signals and exit code are its own
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
