"""The API's contract: protos/ passes `buf lint`, and `buf breaking` against the last release's image
(protos/releases/), which also proves the check bites by breaking a copy on purpose.

buf is the npm package @bufbuild/buf (.ci/run installs it into .ci/tools). Without it these tests
skip, unless VAULT_REQUIRE_BUF=1 (CI), where they fail."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.conftest import ROOT

PROTOS = ROOT / "protos"
RELEASE = "releases/vault-v1-0.1.0.json"


@pytest.fixture(scope="module")
def buf() -> str:
    found = shutil.which("buf") or next((str(p) for p in [ROOT / ".ci/tools/node_modules/.bin/buf"] if p.exists()), None)
    if found is None:
        message = "buf not found (npm install --prefix .ci/tools @bufbuild/buf)"
        if os.environ.get("VAULT_REQUIRE_BUF") == "1":
            pytest.fail(message + " (required: VAULT_REQUIRE_BUF=1)", pytrace=False)
        pytest.skip(message)
    return found


def run(buf: str, *args: str, cwd=PROTOS) -> subprocess.CompletedProcess:
    return subprocess.run([buf, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_the_api_passes_buf_lint(buf):
    lint = run(buf, "lint")
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_the_api_keeps_the_last_release_working(buf, tmp_path):
    breaking = run(buf, "breaking", "--against", RELEASE)
    assert breaking.returncode == 0, breaking.stdout + breaking.stderr
    # The check bites: a copy with a renumbered field is refused.
    copy = tmp_path / "protos"
    shutil.copytree(PROTOS, copy)
    proto = copy / "vault" / "v1" / "vault.proto"
    proto.write_text(proto.read_text().replace("string subject_id = 1;", "string subject_id = 99;", 1))
    broken = run(buf, "breaking", "--against", RELEASE, cwd=copy)
    assert broken.returncode != 0 and "subject_id" in broken.stdout
