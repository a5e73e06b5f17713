"""Operability (issue 25): a token-only client over TLS, the JSON log as pure JSON lines, the
health check with the CA alone. Real `vault serve` processes on loopback (e2e)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import grpc
import pytest

from tests.conftest import ROOT, free_port, read, start_tls_server
from vault.custody import pki
from vault_client.v1 import vault_pb2 as pb
from vault_client.v1 import vault_pb2_grpc

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """`vault pki` as the README runs it, plus a TLS server with a token port and a JSON log."""
    root = tmp_path_factory.mktemp("site")
    folder = root / "pki"
    pki.init_ca(folder)
    pki.issue(folder, "server", server_hosts=["localhost", "127.0.0.1"])
    pki.issue(folder, "acme-admin", tenant="acme", role="admin")
    # What a token-only client holds: the CA certificate and nothing else.
    (root / "ca-only").mkdir()
    (root / "ca-only" / "ca.crt").write_bytes((folder / "ca.crt").read_bytes())
    token_port = free_port()
    server = start_tls_server(folder, root, "vault", "--token-listen", f"127.0.0.1:{token_port}", "--log-format", "json")
    yield root, server, token_port
    server.stop()


def vault_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vault.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **(env or {})}, timeout=120)


def test_a_token_alone_connects_over_tls(site, tmp_path):
    root, server, token_port = site
    admin = vault_cli("token", "create", "--server", f"localhost:{server.port}", "--tls-dir", str(root / "pki"),
                      "--identity", "acme-admin", "--role", "auditor", "--name", "nightly")
    assert admin.returncode == 0, admin.stderr
    token_file = tmp_path / "token"
    token_file.write_text(admin.stdout.splitlines()[-1])
    ca_only = str(root / "ca-only")
    listed = vault_cli("list", "--server", f"localhost:{token_port}", "--tls-dir", ca_only, "--token-file", str(token_file))
    assert listed.returncode == 0, listed.stderr
    audit = vault_cli("audit", "read", "--server", f"localhost:{token_port}", "--tls-dir", ca_only,
                      env={"VAULT_TOKEN_FILE": str(token_file)})
    assert audit.returncode == 0 and "CreateToken" in audit.stdout, audit.stderr
    # No token, no certificate: a usage error on this side, UNAUTHENTICATED on the server's.
    bare = vault_cli("list", "--server", f"localhost:{token_port}", "--tls-dir", ca_only)
    assert bare.returncode == 2 and "--identity" in bare.stderr and "token" in bare.stderr
    ca = grpc.ssl_channel_credentials((root / "pki" / "ca.crt").read_bytes())
    channel = grpc.secure_channel(f"localhost:{token_port}", ca)
    with pytest.raises(grpc.RpcError) as refused:
        vault_pb2_grpc.VaultStub(channel).ListTemplates(pb.ListTemplatesRequest(), timeout=10)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as wrong:  # a made-up token is refused like any other
        vault_pb2_grpc.VaultStub(channel).ListTemplates(pb.ListTemplatesRequest(), timeout=10,
                                                         metadata=(("authorization", "Bearer vt_x.y"),))
    assert wrong.value.code() == grpc.StatusCode.UNAUTHENTICATED
    channel.close()
    # The mutual-TLS port still asks for a certificate: a token alone does not get through there.
    there = vault_cli("list", "--server", f"localhost:{server.port}", "--tls-dir", ca_only, "--token-file", str(token_file))
    assert there.returncode == 1 and "UNAVAILABLE" in there.stderr


def test_health_needs_only_the_ca_on_the_token_port(site):
    root, server, token_port = site
    health = vault_cli("health", "--server", f"localhost:{token_port}", "--tls-dir", str(root / "ca-only"))
    assert (health.returncode, health.stdout.strip()) == (0, "SERVING"), health.stderr


def test_the_json_log_is_json_lines_only(site):
    """Every line the server wrote parses, after refused handshakes (which gRPC's core would log)
    and a few calls; Ctrl-C (SIGINT to the whole group) adds no worker tracebacks."""
    root, server, token_port = site
    ca = (root / "pki" / "ca.crt").read_bytes()
    channel = grpc.secure_channel(f"localhost:{server.port}", grpc.ssl_channel_credentials(ca))  # no certificate
    with pytest.raises(grpc.RpcError):
        vault_pb2_grpc.VaultStub(channel).ListTemplates(pb.ListTemplatesRequest(), timeout=3)
    channel.close()
    vault_cli("health", "--server", f"localhost:{token_port}", "--tls-dir", str(root / "ca-only"))
    server.process.send_signal(signal.SIGINT)
    for child in _children(server.process.pid):
        os.kill(child, signal.SIGINT)  # as a terminal's Ctrl-C does
    server.process.wait(30)
    time.sleep(0.5)
    lines = [line for line in server.log().splitlines() if line.strip()]
    assert lines
    for line in lines:
        entry = json.loads(line)  # raises on any line that is not JSON
        assert {"time", "level", "logger", "message"} <= entry.keys()
    assert any(json.loads(line).get("message", "").startswith("token-only clients") for line in lines)
    assert any("Identify" in json.loads(line)["message"] or "vault serving" in json.loads(line)["message"] for line in lines)
    server.start()  # for any test after this one


def _children(pid: int) -> list[int]:
    from tests.conftest import descendants

    return sorted(descendants(pid))


def test_enroll_folder_again_skips_people_enrolled_and_list_has_a_header(server_factory, tmp_path):
    server = server_factory("folder")
    folder = tmp_path / "people"
    for person in ("s1", "s2"):
        (folder / person).mkdir(parents=True)
        (folder / person / "1.pgm").write_bytes(read("face", "orl", person, "1.pgm"))
    at = ("--server", f"127.0.0.1:{server.port}")
    first = vault_cli("enroll-folder", *at, str(folder))
    assert first.returncode == 0 and "enrolled 2 of 2" in first.stdout, first.stderr
    again = vault_cli("enroll-folder", *at, str(folder))
    assert again.returncode == 0 and "skipping 2 subjects already enrolled" in again.stdout, again.stderr
    listed = vault_cli("list", *at)
    header, *rows = listed.stdout.splitlines()
    assert header.split()[:5] == ["TEMPLATE", "SUBJECT", "MODALITY", "FINGER", "STATUS"]
    assert len(rows) == 2 and all(row.split()[3] == "-" for row in rows)  # faces have no finger
