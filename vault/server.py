"""Assembles and runs a vault server: key store, template store, extraction pool, match index,
the core behind one interceptor and three thin servicers, gRPC health and reflection."""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import signal
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from vault.administration import Administration
from vault.access.audit import AuditAnchor, anchor_path
from vault.access.auth import AccessPolicy, Authenticator
from vault.core import IdentifyPolicy, Vault, store_identity
from vault.exceptions import VaultError
from vault.intake.extraction import Extractor, one_native_thread
from vault.custody.hsm import HsmConfig, Pkcs11Sealer
from vault.custody.keys import LocalKeyFile, passphrase_from_environment
from vault.access.lockout import FailureLimiter, Limits
from vault.templates.matching import MatchIndex, warm_up
from vault.metrics import Metrics
from vault.modalities import MODALITY_NAMES
from vault.templates.profiles import PROFILES
from vault.replication import IndexSync, ReplicaGroup
from vault.rpc.interceptor import Gatekeeper
from vault.rpc.servicers import AdminServicer, AuditServicer, VaultServicer
from vault.rpc.reflection import enable_reflection
from vault.custody.shredding import ledger_path, open_ledger
from vault.store import open_store
from vault.access.tokens import TokenRegistry
from vault_client.v1 import vault_pb2, vault_pb2_grpc

log = logging.getLogger("vault.server")

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
SERVICE_NAMES = tuple(s.full_name for s in vault_pb2.DESCRIPTOR.services_by_name.values())


@dataclass
class Settings:
    state_dir: Path = Path(".vault")
    listen: str = "127.0.0.1:50051"
    store_url: str = ""  # default: sqlite file in state_dir
    key_file: Path | None = None  # default: state_dir/keys.json
    key_passphrase: str | None = field(default_factory=lambda: passphrase_from_environment())
    plaintext: bool = False  # loopback only, and only when asked for
    tls_dir: Path | None = None  # ca.crt (clients' CA), server.crt, server.key
    auditor_score_bands: bool = False
    limits: Limits = field(default_factory=Limits)
    workers: int | None = None
    sample_time_limit_s: float = 15.0  # an extraction worker running one sample longer is killed
    max_pending: int | None = None
    allow_face_embeddings: bool = False
    shutdown_grace_s: float = 10.0
    port_file: Path | None = None  # written with the bound port once serving (tests, scripts)
    metrics_listen: str | None = None  # host:port of the Prometheus endpoint; off when None
    call_timeout_s: float = 30.0  # server-side deadline of one RPC (clients may set shorter ones)
    identification: IdentifyPolicy = field(default_factory=IdentifyPolicy)  # Identify's FPIR promise
    hsm: HsmConfig | None = None  # seal the key file with a key kept in a PKCS#11 token (vault.custody.hsm)
    shred_store: str = ""  # per-template shred secrets (vault.custody.shredding); default: beside the key file
    # host:port of a second TLS listener that asks for no client certificate: token-only clients
    # (a token is then the only identity) and health checks. None: only the mutual-TLS listener.
    token_listen: str | None = None
    # The replica group this server belongs to (vault.replication.ReplicaGroup): it loads and answers
    # only the tenants the store assigns to it. None: every tenant.
    group: str | None = None


def is_loopback(listen: str) -> bool:
    host = listen.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_address_free(listen: str) -> None:
    """Refuse, at once, an address another socket listens on (another vault: without this, both
    would serve it). SO_REUSEADDR as gRPC's own listener: a predecessor's TIME_WAIT does not count."""
    host, _, port = listen.rpartition(":")
    try:
        if not int(port):
            return  # any free port
        found = socket.getaddrinfo(host.strip("[]") or None, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (ValueError, OSError):
        return  # gRPC's own bind says what is wrong
    for family, kind, proto, _, address in found:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as error:
                if error.errno == errno.EADDRINUSE:
                    raise VaultError(f"cannot listen on {listen}: the address is in use (another vault or program "
                                     "holds it); stop it or choose another --listen") from None


class VaultServer:
    def __init__(self, settings: Settings):
        self.settings = settings
        if settings.tls_dir is None:
            if not settings.plaintext:
                raise VaultError("give --tls-dir (certificates from `vault pki init`) or, for development on "
                                 "this machine only, --plaintext")
            if not is_loopback(settings.listen):
                raise VaultError(f"refusing to serve plaintext on {settings.listen}: plaintext is for loopback only")
            if settings.token_listen:
                raise VaultError("--token-listen serves TLS for token-only clients: it needs --tls-dir")
        state = Path(settings.state_dir)
        if not (settings.store_url and settings.key_file):  # else nothing of this server lives there
            state.mkdir(parents=True, exist_ok=True, mode=0o700)
        key_file = Path(settings.key_file or state / "keys.json")
        if not settings.plaintext and key_file.resolve().is_relative_to(state.resolve()):
            raise VaultError(f"the key file {key_file} is inside the state directory: whoever copies the data "
                             "copies the keys. Keep it on another volume (--key-file); the state directory is "
                             "for the database only")
        sealer = Pkcs11Sealer(settings.hsm) if settings.hsm is not None else None
        self.keys = LocalKeyFile(key_file, settings.key_passphrase, sealer=sealer)
        if not settings.plaintext and not self.keys.sealed:
            raise VaultError("the key file is not sealed: whoever copies it holds every tenant's keys. Seal it "
                             "with an HSM (--hsm-module) or a passphrase (VAULT_KEY_PASSPHRASE_FILE); an unsealed "
                             "key file is for --plaintext development only")
        self.store = open_store(settings.store_url or f"sqlite:///{state / 'vault.db'}", self.keys.audit_key())
        # The audit chain's head, kept with the keys and out of the database (vault.access.audit.AuditAnchor).
        self.store.anchor = AuditAnchor(anchor_path(key_file))
        self.extractor = Extractor(settings.workers, settings.max_pending, settings.sample_time_limit_s)
        self.index = MatchIndex()
        # With the keys, never with the data: a copy of the data without it opens no revoked template,
        # and revives no revoked token.
        self.shreds = open_ledger(settings.shred_store or ledger_path(key_file), self.keys)
        self.tokens = TokenRegistry(self.store, self.keys.token_key(), revocations=self.shreds)
        self.authenticator = Authenticator(tls=settings.tls_dir is not None, tokens=self.tokens)
        self.vault = Vault(self.store, self.keys, self.extractor, self.index, FailureLimiter(self.store, settings.limits),
                           settings.identification, settings.allow_face_embeddings, settings.auditor_score_bands,
                           shreds=self.shreds)
        self.administration = Administration(self.keys, self.store, self.tokens, self.vault.identify_capacity)
        # Other replicas' enrolments, revocations and reissues reach this index within ~1 s.
        self.sync = IndexSync(self.store, self.vault.apply_change, interval_s=0.5,
                              index_ids=self.index.template_ids, reconcile_s=60.0)
        # A replica group's server holds only its tenants' templates; a call for any other tenant is
        # refused (vault.rpc.interceptor) once the calls admitted before a tenant left have had their time.
        self.group = (ReplicaGroup(settings.group, self.store, self.sync, self.vault.load_index, self.index.drop_tenant,
                                   drop_after_s=settings.call_timeout_s + 5.0) if settings.group else None)
        self.metrics = Metrics()
        self.metrics.watch(self.extractor, self.index, self.keys, self.vault.identify_capacity)
        self.metrics_port: int | None = None
        self.health = HealthServicer()
        self.server: grpc.aio.Server | None = None
        self.port: int | None = None
        self.token_port: int | None = None

    async def start(self) -> int:
        check_address_free(self.settings.listen)  # before the minutes a large store takes to load
        if self.settings.token_listen:
            check_address_free(self.settings.token_listen)
        one_native_thread()  # the cores are the extraction workers'
        self.sync.mark()  # before loading: changes made during the load are replayed, not lost
        if added := await asyncio.to_thread(self.tokens.reconcile):
            log.info("%d token revocations the database records copied into the ledger on the key side", added)
        loaded, refused = await asyncio.to_thread(self.group.load if self.group else self.vault.load_index)
        if refused and not loaded:
            # Fail closed: a server on the wrong keys would answer SERVING and match no one.
            self._close()
            raise VaultError(
                f"refusing to start: the store holds {refused} live templates and none of them opens with the key "
                f"file {self.keys.path} (the wrong key file, the wrong passphrase's copy, or a store from another "
                "deployment). Give the key file this store was sealed with (--key-file)")
        self.vault.warn_identify_capacity()
        self._log_identify_capacity()
        self.sync.start()
        if self.group is not None:
            self.group.start()
            # The shred ledger's sweep needs every live template id, which a group's load does not read.
            threading.Thread(target=self._sweep_shreds, name="vault-shred-sweep", daemon=True).start()
        await asyncio.to_thread(self.extractor.warm)
        await asyncio.to_thread(warm_up, PROFILES.values())
        options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                   ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                   # gRPC sets SO_REUSEPORT by default: a second server on this address would then
                   # start too and take a share of the connections (a port hijack). One owner only.
                   ("grpc.so_reuseport", 0)]
        gatekeeper = Gatekeeper(set(SERVICE_NAMES), self.authenticator, AccessPolicy(self.settings.auditor_score_bands),
                                self.store, self.metrics, self.settings.call_timeout_s, self.group)
        self.server = grpc.aio.server(options=options, interceptors=[gatekeeper])
        vault_pb2_grpc.add_VaultServicer_to_server(VaultServicer(self.vault), self.server)
        vault_pb2_grpc.add_AdminServicer_to_server(AdminServicer(self.administration), self.server)
        vault_pb2_grpc.add_AuditServicer_to_server(AuditServicer(self.administration), self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        enable_reflection(self.server, (*SERVICE_NAMES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name))
        try:
            if self.settings.tls_dir is not None:
                tls = Path(self.settings.tls_dir)
                credentials = grpc.ssl_server_credentials(
                    [((tls / "server.key").read_bytes(), (tls / "server.crt").read_bytes())],
                    root_certificates=(tls / "ca.crt").read_bytes(), require_client_auth=True)
                self.port = self.server.add_secure_port(self.settings.listen, credentials)
                if self.settings.token_listen:
                    # TLS that asks for no client certificate: a caller here is who its token says
                    # (vault.access.auth.Authenticator), or UNAUTHENTICATED; the health service answers anyone.
                    server_only = grpc.ssl_server_credentials(
                        [((tls / "server.key").read_bytes(), (tls / "server.crt").read_bytes())])
                    self.token_port = self.server.add_secure_port(self.settings.token_listen, server_only)
                    if not self.token_port:
                        self.port = 0
            else:
                self.port = self.server.add_insecure_port(self.settings.listen)
        except RuntimeError:  # grpc: "Failed to bind to address"
            self.port = 0
        if not self.port:
            if self.group is not None:
                self.group.stop()
            self.sync.stop()
            self._close()
            where = self.settings.listen + (f" or {self.settings.token_listen}" if self.settings.token_listen else "")
            raise VaultError(f"cannot listen on {where}: the address is in use (another vault or "
                             "program holds it) or not this machine's; stop it or choose another --listen")
        await self.server.start()
        if self.settings.metrics_listen:
            self.metrics_port = self.metrics.serve(self.settings.metrics_listen)
            log.info("Prometheus metrics on http://%s/metrics", self.settings.metrics_listen.rsplit(":", 1)[0] + f":{self.metrics_port}")
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("vault serving on %s (port %d, %s), %d live templates, %d extraction workers",
                 self.settings.listen, self.port, "mutual TLS" if self.settings.tls_dir else "plaintext loopback",
                 loaded, self.extractor.workers)
        if self.group is not None:
            log.info("replica group %s: answering tenants %s only", self.group.name,
                     ", ".join(sorted(self.group.tenants())) or "(none assigned yet)")
        if self.token_port:
            log.info("token-only clients and health checks: TLS without client certificates on %s (port %d)",
                     self.settings.token_listen, self.token_port)
        if refused:
            log.error("%d templates failed authentication and are excluded from matching", refused)
        if self.settings.port_file:
            tmp = Path(f"{self.settings.port_file}.tmp")
            tmp.write_text(str(self.port))
            tmp.replace(self.settings.port_file)
        return self.port

    def _log_identify_capacity(self) -> None:
        """What Identify can promise, per tenant and modality, as `vault key status` says it (the
        galleries too large for the target are also warned about by Vault.warn_identify_capacity)."""
        for tenant in self.keys.tenants():
            for modality, c in self.vault.identify_capacity(tenant):
                log.info("tenant %s: Identify over %d %s templates at FPIR %g, expected FNIR %.3f (fused templates "
                         "%.3f): %s", tenant, c.templates, MODALITY_NAMES[modality], c.fpir_target, c.expected_fnir,
                         c.expected_fnir_fused, "ok" if c.reachable else "TOO LARGE for the FPIR target")

    def _sweep_shreds(self) -> None:
        """A replica group's shred-ledger sweep (vault.custody.shredding.ShredLedger.retain) against
        every tenant's live templates, not only its group's."""
        try:
            if finished := self.shreds.retain(self.store.live_template_ids(), store_identity(self.store)):
                log.warning("shredded %d secrets of templates no longer live (a revocation or enrolment a crash "
                            "interrupted)", finished)
        except Exception:
            log.exception("the shred ledger's sweep failed; the next start tries again")

    async def stop(self) -> None:
        await self.health.enter_graceful_shutdown()
        if self.server is not None:
            await self.server.stop(self.settings.shutdown_grace_s)
        if self.group is not None:
            self.group.stop()
        self.sync.stop()
        self._close()

    def _close(self) -> None:
        self.extractor.close()
        self.metrics.close()
        self.store.close()
        self.shreds.close()


async def serve(settings: Settings) -> None:
    server = VaultServer(settings)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await server.start()
    await stopping.wait()
    log.info("shutting down")
    await server.stop()
