"""The server image (Dockerfile) built and run with podman, as README "Container image" says:
base made locally from Debian packages (container/base-image.sh), numeric non-root user, code
read-only (--read-only too), keys and data on two volumes, only ca.crt/server.crt/server.key mounted
(no CA key), the HEALTHCHECK over the token port with the CA alone, metrics reachable from outside
the container. Reports the image's size. Then compose.yaml with podman-compose: two PostgreSQL
services (data, and the key side's shred ledger) from container/postgres.Dockerfile and two
replicas, each healthy; a template enrolled on one replica verifies on the other. Skipped where
podman, podman-compose or mmdebstrap are missing, or not root (.ci/run installs them on Debian)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port, read
from vault.custody import pki

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1500)]

BASE = "localhost/vault-base:bookworm"
IMAGE = "localhost/vault:test"
POSTGRES_IMAGE = "localhost/vault-postgres:bookworm"
UID = 10001


def podman_environment() -> dict:
    env = dict(os.environ)
    # In a sandbox that refuses crun's cgroup set-up and podman's default rlimits, runc with
    # modest limits (container/sandbox-containers.conf); an ordinary host needs none of it.
    if shutil.which("runc") and not env.get("CONTAINERS_CONF"):
        env["CONTAINERS_CONF"] = str(ROOT / "container" / "sandbox-containers.conf")
    return env


def podman(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    done = subprocess.run(["podman", *args], capture_output=True, text=True, env=podman_environment(), timeout=timeout)
    if check and done.returncode:
        raise AssertionError(f"podman {' '.join(args)} -> {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


def live_templates(container: str, tenant: str) -> float:
    """The container's vault_live_templates gauge for `tenant`, read from its /metrics inside it."""
    scrape = podman("exec", container, "python", "-c",
                    "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:9464/metrics').read().decode())",
                    check=False)
    for line in scrape.stdout.splitlines():
        if line.startswith(f'vault_live_templates{{tenant="{tenant}"}}'):
            return float(line.split()[-1])
    return 0.0


@pytest.fixture(scope="module")
def image():
    missing = [tool for tool in ("podman", "mmdebstrap") if shutil.which(tool) is None]
    if missing or os.geteuid() != 0:
        pytest.skip(f"needs root and podman + mmdebstrap (Debian packages; .ci/run installs them): "
                    f"{'missing ' + ', '.join(missing) if missing else 'not root'}")
    started = time.monotonic()
    if podman("image", "exists", BASE, check=False).returncode:
        subprocess.run([str(ROOT / "container" / "base-image.sh"), BASE], check=True, env=podman_environment(),
                       capture_output=True, timeout=900)
    base_s = time.monotonic() - started
    build = ["build", "--format", "docker", "--network", "host", "-t", IMAGE]
    cache = Path(os.environ.get("UV_CACHE_DIR", Path.home() / ".cache" / "uv"))
    if cache.is_dir():  # the host's uv cache: the locked wheels are not downloaded again
        build += ["-v", f"{cache}:/root/.cache/uv"]
    bundle = Path("/etc/ssl/certs/ca-certificates.crt")
    if bundle.is_file():  # the host's CA bundle, for a build behind a TLS-inspecting proxy
        build += ["-v", f"{bundle}:{bundle}:ro"]
    podman(*build, str(ROOT), timeout=1200)
    size = int(podman("image", "inspect", "--format", "{{.Size}}", IMAGE).stdout.strip())
    base_size = int(podman("image", "inspect", "--format", "{{.Size}}", BASE).stdout.strip())
    report = (f"image {IMAGE}: {size / 1e6:.0f} MB (base {base_size / 1e6:.0f} MB); base made in {base_s:.0f} s, "
              f"built in {time.monotonic() - started - base_s:.0f} s")
    print(report, file=sys.stderr)
    (ROOT / "bench-out").mkdir(exist_ok=True)
    (ROOT / "bench-out" / "container-image.txt").write_text(report + "\n")
    yield IMAGE


def server_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    """README's site: the CA stays in site/pki; the container gets server-tls/ (ca.crt, server.crt,
    server.key) and the passphrase, readable by the image's numeric user."""
    site = tmp_path / "site"
    pki.init_ca(site / "pki")
    pki.issue(site / "pki", "server", server_hosts=["localhost", "127.0.0.1"])
    pki.issue(site / "pki", "acme-admin", tenant="acme", role="admin")
    tls = site / "server-tls"
    tls.mkdir()
    for name in ("ca.crt", "server.crt", "server.key"):
        shutil.copy(site / "pki" / name, tls / name)
    secrets = site / "secrets"
    secrets.mkdir()
    (secrets / "passphrase").write_text("container-test-passphrase\n")
    for path in (tls / "server.key", secrets / "passphrase"):
        os.chown(path, UID, UID)
        path.chmod(0o400)
    return site, tls, secrets / "passphrase"


def vault_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vault.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)


def wait_healthy(name: str, timeout: float = 300) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if podman("healthcheck", "run", name, check=False).returncode == 0:
            return time.monotonic() - started
        if podman("inspect", "--format", "{{.State.Running}}", name).stdout.strip() != "true":
            raise AssertionError("the container stopped:\n" + podman("logs", name, check=False).stderr[-4000:])
        time.sleep(2)
    raise AssertionError(f"not healthy in {timeout} s:\n" + podman("logs", name, check=False).stderr[-4000:])


def test_the_image_runs_as_the_readme_says(image, tmp_path):
    site, tls, passphrase = server_files(tmp_path)
    tag = uuid.uuid4().hex[:8]
    name, data, keys = f"vault-{tag}", f"vault-data-{tag}", f"vault-keys-{tag}"
    mtls, token, metrics = free_port(), free_port(), free_port()
    inspected = json.loads(podman("image", "inspect", image).stdout)[0]
    assert inspected["Config"]["User"] == f"{UID}:{UID}"
    assert "health" in (inspected.get("Healthcheck") or inspected["Config"].get("Healthcheck") or {}).get("Test", [])
    podman("volume", "create", data)
    podman("volume", "create", keys)
    try:
        podman("run", "-d", "--name", name, "--read-only", "--tmpfs", "/tmp",
               "-p", f"127.0.0.1:{mtls}:50051", "-p", f"127.0.0.1:{token}:50052", "-p", f"127.0.0.1:{metrics}:9464",
               "-v", f"{data}:/var/lib/vault", "-v", f"{keys}:/var/lib/vault-keys",
               "-v", f"{tls}:/etc/vault/tls:ro", "-v", f"{passphrase}:/run/secrets/vault-key-passphrase:ro", image)
        healthy_s = wait_healthy(name)
        print(f"container healthy {healthy_s:.0f} s after start", file=sys.stderr)
        # The server's user, the code read-only, no CA key inside, keys and data apart.
        assert podman("exec", name, "id", "-u").stdout.strip() == str(UID)
        assert podman("exec", name, "touch", "/app/.venv/x", check=False).returncode != 0
        assert podman("exec", name, "python", "-c", "import vault, os; print(os.access(vault.__file__, os.W_OK))"
                      ).stdout.strip() == "False"
        assert "ca.key" not in podman("exec", name, "ls", "/etc/vault/tls").stdout
        assert "keys.json" in podman("exec", name, "ls", "/var/lib/vault-keys").stdout
        assert "keys.json" not in podman("exec", name, "ls", "/var/lib/vault").stdout
        # From outside: an admin certificate on the mutual-TLS port, a token alone on the token port.
        created = vault_cli("token", "create", "--server", f"localhost:{mtls}", "--tls-dir", str(site / "pki"),
                            "--identity", "acme-admin", "--role", "enroller", "--name", "hr")
        assert created.returncode == 0, created.stderr
        token_file = tmp_path / "token"
        token_file.write_text(created.stdout.splitlines()[-1])
        (tmp_path / "ca-only").mkdir()
        shutil.copy(site / "pki" / "ca.crt", tmp_path / "ca-only" / "ca.crt")
        face = tmp_path / "alice.pgm"
        face.write_bytes(read("face", "orl", "s1", "1.pgm"))
        enrolled = vault_cli("enroll", "--server", f"localhost:{token}", "--tls-dir", str(tmp_path / "ca-only"),
                             "--token-file", str(token_file), "--subject", "alice", str(face))
        assert enrolled.returncode == 0, enrolled.stderr
        scraped = urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=10).read().decode()
        assert "vault_" in scraped
        logs = podman("logs", name).stdout.splitlines()
        assert logs and all(json.loads(line) for line in logs if line.strip())  # JSON lines only
        podman("stop", "-t", "20", name)
        assert "shutting down" in podman("logs", name).stdout
    finally:
        podman("rm", "-f", name, check=False)
        podman("volume", "rm", "-f", data, keys, check=False)


@pytest.fixture(scope="module")
def postgres_image(image):
    """container/postgres.Dockerfile on the same base (a rebuild is the layer cache's)."""
    started = time.monotonic()
    podman("build", "--format", "docker", "--network", "host", "-t", POSTGRES_IMAGE,
           "-f", str(ROOT / "container" / "postgres.Dockerfile"), str(ROOT / "container"), timeout=900)
    size = int(podman("image", "inspect", "--format", "{{.Size}}", POSTGRES_IMAGE).stdout.strip())
    print(f"image {POSTGRES_IMAGE}: {size / 1e6:.0f} MB, built in {time.monotonic() - started:.0f} s", file=sys.stderr)
    yield POSTGRES_IMAGE


def compose_site(tmp_path: Path) -> Path:
    """compose.yaml's site files: server_files' plus the two databases' passwords and the servers'
    pgpass (0600, the server's user), and an enroller and a panel certificate for the client."""
    site, _, _ = server_files(tmp_path)
    for role in ("enroller", "panel"):
        pki.issue(site / "pki", f"acme-{role}", tenant="acme", role=role)
    secrets_dir = site / "secrets"
    db, ledger = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    (secrets_dir / "db-password").write_text(db + "\n")
    (secrets_dir / "ledger-password").write_text(ledger + "\n")
    (secrets_dir / "pgpass").write_text(f"db:5432:vault:vault:{db}\nledger:5432:ledger:vault:{ledger}\n")
    for name in ("db-password", "ledger-password", "pgpass"):
        (secrets_dir / name).chmod(0o600)
    os.chown(secrets_dir / "pgpass", UID, UID)
    return site


def test_compose_runs_two_replicas_on_postgresql(image, postgres_image, tmp_path):
    if shutil.which("podman-compose") is None:
        pytest.skip("needs podman-compose (a Debian package; .ci/run installs it)")
    site = compose_site(tmp_path)
    project = f"vault-{uuid.uuid4().hex[:8]}"
    ports = {name: free_port() for name in ("VAULT_1_PORT", "VAULT_1_TOKEN_PORT", "VAULT_2_PORT", "VAULT_2_TOKEN_PORT")}
    env = {**podman_environment(), "VAULT_SITE": str(site), "VAULT_IMAGE": image, **{k: str(v) for k, v in ports.items()}}

    def compose(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        done = subprocess.run(["podman-compose", "-p", project, "-f", str(ROOT / "compose.yaml"), *args],
                              capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout)
        assert done.returncode == 0, f"podman-compose {' '.join(args)}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done

    services = ("db", "ledger", "vault-1", "vault-2")
    names = {service: f"{project}_{service}_1" for service in services}
    started = time.monotonic()
    try:
        compose("up", "-d", "--no-build")
        for service in services:  # one after another: each waits the rest of the others' time
            wait_healthy(names[service])
        up_s = time.monotonic() - started
        print(f"compose up: {len(services)} services healthy {up_s:.0f} s after `podman-compose up -d`", file=sys.stderr)
        (ROOT / "bench-out").mkdir(exist_ok=True)
        (ROOT / "bench-out" / "compose-up.txt").write_text(f"compose up, all healthy: {up_s:.1f} s\n")
        # Enrol on one replica, verify on the other (the change feed carries it within a second).
        client = ["--tls-dir", str(site / "pki")]
        face, other = tmp_path / "alice.pgm", tmp_path / "bob.pgm"
        face.write_bytes(read("face", "orl", "s1", "1.pgm"))
        enrolled = vault_cli("enroll", "--server", f"localhost:{ports['VAULT_1_PORT']}", *client,
                             "--identity", "acme-enroller", "--subject", "alice", str(face))
        assert enrolled.returncode == 0, enrolled.stderr
        face.write_bytes(read("face", "orl", "s1", "3.pgm"))
        other.write_bytes(read("face", "orl", "s2", "5.pgm"))
        on_2 = ["--server", f"localhost:{ports['VAULT_2_PORT']}", *client, "--identity", "acme-panel", "--subject", "alice"]
        # Wait for replica 2's index to hold the template (its /metrics), then verify once: retried
        # Verify calls would each count as a failure toward alice's lockout while the feed catches up.
        deadline = time.monotonic() + 60
        while live_templates(names["vault-2"], "acme") < 1 and time.monotonic() < deadline:
            time.sleep(0.5)
        verified = vault_cli("verify", *on_2, str(face))
        assert verified.returncode == 0 and "MATCH" in verified.stdout, verified.stdout + verified.stderr
        assert vault_cli("verify", *on_2, str(other)).returncode == 3  # NO_MATCH: someone else
        # The shred secret went to the key side's database, never to the data's.
        assert podman("exec", "--user", "postgres", names["ledger"], "psql", "-Atc", "SELECT count(*) FROM shred_secrets", "ledger"
                      ).stdout.strip() == "1"
        tables = podman("exec", "--user", "postgres", names["db"], "psql", "-Atc", "SELECT tablename FROM pg_tables WHERE schemaname = "
                        "current_schema()", "vault").stdout.split()
        assert "templates" in tables and "shred_secrets" not in tables
        # No secret in any log: neither database password nor the key passphrase.
        logs = "".join(podman("logs", names[s], check=False).stdout + podman("logs", names[s], check=False).stderr
                       for s in services)
        for secret_file in ("db-password", "ledger-password", "passphrase"):
            assert (site / "secrets" / secret_file).read_text().strip() not in logs
    finally:
        # podman-compose 1.0.3's `down -v` removes the named volumes, not the image's anonymous ones
        # (each replica's empty state directory) nor the network: those go by name.
        anonymous = [mount["Name"] for service in services
                     for container in json.loads(podman("inspect", names[service], check=False).stdout or "[]")
                     for mount in container.get("Mounts", []) if mount.get("Type") == "volume"
                     and not mount.get("Name", "").startswith(f"{project}_")]
        subprocess.run(["podman-compose", "-p", project, "-f", str(ROOT / "compose.yaml"), "down", "-v"],
                       capture_output=True, env=env, cwd=ROOT, timeout=300)
        podman("network", "rm", "-f", f"{project}_default", check=False)
        if anonymous:
            podman("volume", "rm", "-f", *anonymous, check=False)
