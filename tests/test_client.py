"""The client package (clients/python, grpcio + protobuf only) against a real mutual-TLS server:
every service through its typed calls, errors told apart, and the example panel run from a fresh
virtual environment that holds the client package and nothing else of the vault."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, data_path, free_port, start_tls_server
from vault.custody import pki
from vault_client import Settings, TlsIdentity, VaultClient, errors, pb

CLIENT_PACKAGE = ROOT / "clients" / "python"


def orl(subject: str, image: int):
    return data_path("face", "orl", subject, f"{image}.pgm")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A CA with panel, enroller, auditor and admin certificates of tenant acme, and a server
    that locks a subject out after 2 failures."""
    folder = tmp_path_factory.mktemp("site") / "pki"
    pki.init_ca(folder)
    pki.issue(folder, "server", server_hosts=["localhost", "127.0.0.1"])
    for role in ("panel", "enroller", "auditor", "admin"):
        pki.issue(folder, role, tenant="acme", role=role)
    server = start_tls_server(folder, tmp_path_factory.mktemp("client"), "vault", "--max-failures-per-subject", "2")
    yield folder, server
    server.stop()


def connect(site, role: str, **settings) -> VaultClient:
    folder, server = site
    return VaultClient(Settings(f"localhost:{server.port}", tls=TlsIdentity.from_dir(folder, role), **settings))


def test_every_service_through_typed_calls(site):
    with connect(site, "enroller") as hr:
        enrolled = hr.enroll("alice", [orl("s1", 1), orl("s1", 3)], modality="face")
        assert enrolled.template_id and enrolled.key_version == 1
        assert [t.subject_id for t in hr.list_templates("alice")] == ["alice"]
    with connect(site, "panel") as panel:
        assert panel.verify(orl("s1", 5), subject_id="alice").decision == pb.MATCH
        assert panel.verify(orl("s1", 6), template_id=enrolled.template_id).decision == pb.MATCH
        assert [c.subject_id for c in panel.identify(orl("s1", 7)).candidates] == ["alice"]
        with pytest.raises(errors.PermissionDenied):
            panel.enroll("mallory", [orl("s2", 1)])
        with pytest.raises(ValueError):
            panel.verify(orl("s1", 5))  # no claim: refused before any call
    with connect(site, "admin") as admin:
        token = admin.create_token("auditor", "nightly-audit")
        assert token.token and token.info.token_id in {t.token_id for t in admin.list_tokens()}
        assert admin.key_status().current_key_version == 1
    with connect(site, "auditor") as auditor:
        records = list(auditor.read_audit())
        assert {"Enroll", "Verify", "Identify"} <= {r.rpc for r in records}
        assert auditor.verify_audit().intact
        assert auditor.revoke(subject_id="alice", reason="left the company") == [enrolled.template_id]
    with connect(site, "enroller") as hr:
        with pytest.raises(errors.NotFound):
            hr.reissue("no-such-template", [orl("s1", 1)])


def test_lockout_and_bad_samples_are_told_apart(site):
    with connect(site, "enroller") as hr:
        hr.enroll("bob", [orl("s4", 1)])
    with connect(site, "panel") as panel:
        assert [panel.verify(orl("s5", i), subject_id="bob").decision for i in (1, 2)] == [pb.NO_MATCH] * 2
        with pytest.raises(errors.LockedOut) as locked:
            panel.verify(orl("s4", 5), subject_id="bob")
        assert locked.value.reason == "locked-out" and not locked.value.retryable
        with pytest.raises(errors.InvalidRequest):
            panel.verify(b"not an image", subject_id="carol")


def test_a_vault_that_is_down_is_unavailable_after_the_channels_retries(site):
    folder, _ = site
    port = free_port()
    started = time.monotonic()
    with VaultClient(Settings(f"localhost:{port}", tls=TlsIdentity.from_dir(folder, "panel"), timeout_s=60)) as panel:
        with pytest.raises(errors.Unavailable) as down:
            panel.verify(orl("s1", 5), subject_id="alice")
    # Four attempts with 0.2-2 s backoff, then UNAVAILABLE: far from the 60 s deadline.
    assert down.value.retryable and time.monotonic() - started < 20


@pytest.mark.skipif(shutil.which("uv") is None, reason="uv makes the fresh virtual environment")
def test_the_example_panel_runs_from_a_fresh_environment_with_only_the_client(site, tmp_path):
    folder, server = site
    with connect(site, "enroller") as hr:
        hr.enroll("dana", [orl("s7", 1), orl("s7", 3)])
    venv = tmp_path / "panel-venv"
    python = venv / "bin" / "python"
    subprocess.run(["uv", "venv", "--quiet", "--python", sys.executable, str(venv)], check=True)
    subprocess.run(["uv", "pip", "install", "--quiet", "--python", str(python), str(CLIENT_PACKAGE)], check=True)
    installed = subprocess.run(["uv", "pip", "list", "--python", str(python)], check=True, capture_output=True,
                               text=True).stdout
    assert {line.split()[0] for line in installed.splitlines()[2:]} == {"grpcio", "protobuf", "typing-extensions",
                                                                      "vault-client"}

    def panel(photo):
        return subprocess.run([str(python), str(CLIENT_PACKAGE / "examples" / "panel.py"), "--server",
                               f"localhost:{server.port}", "--tls-dir", str(folder), "--identity", "panel",
                               "--badge", "dana", str(photo)], capture_output=True, text=True, timeout=60)

    genuine, impostor = panel(orl("s7", 5)), panel(orl("s8", 5))
    assert (genuine.returncode, genuine.stdout.strip()) == (0, "OPEN"), genuine.stderr
    assert impostor.returncode == 3 and impostor.stdout.startswith("CLOSED: not dana"), impostor.stderr
