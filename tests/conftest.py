"""Shared fixtures: the shared research data, and real `vault serve` processes on loopback ports."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from threadpoolctl import threadpool_limits

# Test processes run side by side (pytest-xdist) with servers and their workers: one BLAS thread
# each, as the server keeps (vault.intake.extraction.one_native_thread), instead of pools spinning against
# each other. Set before numpy loads in any process these tests start, and for the ones loaded here.
for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")
threadpool_limits(limits=1)

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("VAULT_DATA", ROOT.parent / "shared" / "data"))


def data_path(*parts: str) -> Path:
    path = DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared research data not found at {path} (clone the repo beside ../shared)")
    return path


def read(*parts: str) -> bytes:
    return data_path(*parts).read_bytes()


def deterministic_key_file(path: Path, seed: str = "vault-tests") -> Path:
    """A key file with fixed secrets, so a test's scores are the same on every run.
    (Production key files are random; see vault.custody.keys.)"""

    def secret(label: str) -> str:
        return base64.b64encode(hashlib.sha256(f"{seed}/{label}".encode()).digest()).decode()

    payload = {"format": 1, "audit": secret("audit"), "tenants": {
        "default": {"current": 1, "versions": {"1": {"projection": secret("p1"), "storage": secret("s1"), "created": 0}}}}}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"sealing": "none", "payload": payload}))
    path.chmod(0o600)
    return path


def descendants(pid: int) -> set[int]:
    """Live (not zombie) processes below pid, from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


TEST_PASSPHRASE = "vault-tests-only"  # TLS test servers seal their key files with it

NO_LOCKOUT = ("--max-failures-per-subject", "1000000", "--max-failures-per-client", "1000000")


class ServerProcess:
    """A real `vault serve` child process; restartable on the same state directory."""

    def __init__(self, state_dir: Path, *extra: str):
        self.state_dir = state_dir
        self.extra = extra
        # With TLS the key file must live off the state directory (the server refuses it there).
        self.key_file = (Path(extra[extra.index("--key-file") + 1]) if "--key-file" in extra
                         else tls_key_file(state_dir) if "--tls-dir" in extra else state_dir / "keys.json")
        self.process: subprocess.Popen | None = None
        self.port: int | None = None
        self.channel: grpc.Channel | None = None
        self.log_path = state_dir.parent / f"{state_dir.name}.log"

    def start(self, timeout: float = 120) -> "ServerProcess":
        port_file = self.state_dir.parent / f"{self.state_dir.name}.port"
        port_file.unlink(missing_ok=True)
        command = [sys.executable, "-m", "vault.cli", "serve", "--state-dir", str(self.state_dir),
                   "--listen", "127.0.0.1:0", "--port-file", str(port_file), *self.extra]
        if "--workers" not in self.extra:  # one extraction worker: each loads dlib and LEADER (seconds)
            command += ["--workers", "1"]
        env = dict(os.environ)
        if "--tls-dir" not in self.extra:
            command.append("--plaintext")
        else:  # outside development the key file must be sealed, and kept off the state directory
            env["VAULT_KEY_PASSPHRASE"] = TEST_PASSPHRASE
            if "--key-file" not in self.extra:
                command += ["--key-file", str(self.key_file)]
            if self.key_file.exists() and json.loads(self.key_file.read_text()).get("sealing") == "none":
                from vault.custody.keys import LocalKeyFile

                LocalKeyFile(self.key_file).reseal(TEST_PASSPHRASE)
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        deadline = time.monotonic() + timeout
        while not port_file.exists():
            if self.process.poll() is not None:
                raise RuntimeError(f"vault serve exited with {self.process.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"vault serve did not start in {timeout}s:\n{self.log()}")
            time.sleep(0.1)
        self.port = int(port_file.read_text())
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
        return self

    def stub(self):
        from vault_client.v1 import vault_pb2_grpc

        return vault_pb2_grpc.VaultStub(self.channel)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int | None:
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        code, self.process = self.process.returncode, None
        return code


def free_port() -> int:
    """A loopback port nothing listens on (now)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def tls_key_file(state_dir: Path) -> Path:
    """Where a test's TLS server keeps its key file: beside its state directory, never inside."""
    return state_dir.parent / f"{state_dir.name}-keys" / "keys.json"


def start_tls_server(pki_folder: Path, tmp_path: Path, name: str, *extra: str) -> ServerProcess:
    """A mutual-TLS server with the certificates of `vault pki` in pki_folder."""
    state = tmp_path / name
    deterministic_key_file(tls_key_file(state))
    return ServerProcess(state, "--tls-dir", str(pki_folder), *extra).start()


@pytest.fixture
def server_factory(tmp_path):
    started: list[ServerProcess] = []

    def make(name: str = "vault", *extra: str, deterministic_keys: bool = True) -> ServerProcess:
        server = ServerProcess(tmp_path / name, *extra)
        if deterministic_keys:
            deterministic_key_file(server.key_file)
        started.append(server)
        return server.start()

    yield make
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def vault_server(tmp_path_factory):
    """One server shared by a test module (starting one loads dlib in every worker: seconds).
    Failure lockout is set out of reach: these tests make many deliberate impostor attempts
    (tests/test_security.py tests the lockout itself)."""
    state = tmp_path_factory.mktemp("module") / "vault"
    deterministic_key_file(state / "keys.json")
    server = ServerProcess(state, *NO_LOCKOUT).start()
    yield server
    server.stop()


# The test pyramid: the fast in-process tier is everything not marked e2e
# (`uv run pytest -m "not e2e"`); e2e tests start `vault serve` processes with real extraction
# workers, or run whole tools (benchmark report, leak drill, fuzzers) on the shared data.
E2E_FIXTURES = {"vault_server", "server_factory", "image_records"}  # image_records: LEADER on real prints
E2E_MODULES = {"test_benchmarks", "test_leak_drill", "test_security", "test_client", "test_replica_groups_e2e"}


# The longest modules first (seconds of CPU, measured): pytest-xdist hands whole modules to its
# workers in collection order, so the short ones fill the gaps at the end instead of a long one
# running alone at the end.
LONGEST_FIRST = ["test_hardening", "test_persistence", "test_fingerprint_service", "test_security", "test_service",
                 "test_fuzz", "test_leak_drill", "test_fingerprint_features", "test_backup", "test_hsm",
                 "test_benchmarks", "test_identification", "test_replicas", "test_client",
                 "test_core", "test_matching", "test_store", "test_access", "test_iso19794", "test_protection"]


def pytest_collection_modifyitems(config, items):
    for item in items:
        if E2E_FIXTURES & set(getattr(item, "fixturenames", ())) or item.module.__name__ in E2E_MODULES \
                or item.name.startswith(("test_atheris_parsers", "test_a_tls_server_runs_on_hsm",
                                         "test_a_sqlite_vault_moves_to_postgresql")):
            item.add_marker(pytest.mark.e2e)
    rank = {name: position for position, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.module.__name__.rpartition(".")[2], len(rank)))  # stable


SOFTHSM_MODULE = Path(os.environ.get("VAULT_TEST_SOFTHSM", "/usr/lib/softhsm/libsofthsm2.so"))
HSM_PIN = "1234"


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory):
    """Two SoftHSM2 tokens ("vault" and "other", PIN 1234) in a temp folder, for this test run.
    Skips without SoftHSM2 (apt-get install softhsm2), unless VAULT_REQUIRE_SOFTHSM=1 (CI)."""
    import shutil

    from vault.custody.hsm import HsmConfig

    if not SOFTHSM_MODULE.exists() or not shutil.which("softhsm2-util"):
        message = f"SoftHSM2 not found ({SOFTHSM_MODULE}; apt-get install softhsm2)"
        if os.environ.get("VAULT_REQUIRE_SOFTHSM") == "1":
            pytest.fail(message + " (required: VAULT_REQUIRE_SOFTHSM=1)", pytrace=False)
        pytest.skip(message)
    folder = tmp_path_factory.mktemp("softhsm")
    (folder / "tokens").mkdir()
    conf = folder / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {folder / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
    os.environ["SOFTHSM2_CONF"] = str(conf)  # read by the module when first loaded, here and in servers
    for label in ("vault", "other"):
        subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", label, "--pin", HSM_PIN,
                        "--so-pin", "5678"], check=True, capture_output=True)
    return HsmConfig(SOFTHSM_MODULE, "vault", HSM_PIN)
