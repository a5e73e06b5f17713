"""The `vault` command: `vault serve`, and client commands that talk gRPC to a running vault."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

from vault.exceptions import VaultError
from vault_client.errors import VaultCallError

DEFAULT_SERVER = os.environ.get("VAULT_SERVER", "127.0.0.1:50051")
EXIT_CODES = """exit codes: 0 done; 1 a call failed (its gRPC status is printed) or a file is unreadable;
2 bad usage, or the server refused to start; 3 verify: NO_MATCH; 4 audit verify: the chain is broken

Settings come from flags, else environment variables (VAULT_*, named in each command's --help), else
defaults. Client commands: VAULT_SERVER, VAULT_TLS_DIR, VAULT_IDENTITY, VAULT_TOKEN."""
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".pgm", ".ppm", ".tif", ".tiff", ".bmp", ".iso"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vault", description=__doc__, epilog=EXIT_CODES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the vault server (embedded SQLite + local key file by default)")
    serve.add_argument("--state-dir", type=Path, default=Path(os.environ.get("VAULT_STATE_DIR", ".vault")),
                       help="folder of the embedded SQLite store (env VAULT_STATE_DIR; default: %(default)s)")
    serve.add_argument("--listen", default=os.environ.get("VAULT_LISTEN", "127.0.0.1:50051"),
                       help="host:port of the gRPC server (env VAULT_LISTEN; default: %(default)s)")
    serve.add_argument("--store", default=os.environ.get("VAULT_STORE", ""), help="sqlite:///path or postgresql://...")
    serve.add_argument("--key-file", type=Path, default=os.environ.get("VAULT_KEY_FILE"),
                       help="the key file (env VAULT_KEY_FILE; default: STATE_DIR/keys.json, development only: "
                            "keep keys off the data's volume)")
    serve.add_argument("--hsm-module", type=Path, default=os.environ.get("VAULT_HSM_MODULE"),
                       help="PKCS#11 library sealing the key file with a key that never leaves the token "
                            "(env VAULT_HSM_MODULE; e.g. /usr/lib/softhsm/libsofthsm2.so); PIN from "
                            "VAULT_HSM_PIN_FILE or VAULT_HSM_PIN")
    serve.add_argument("--hsm-token", default=os.environ.get("VAULT_HSM_TOKEN", "vault"),
                       help="PKCS#11 token label (env VAULT_HSM_TOKEN; default: %(default)s)")
    serve.add_argument("--hsm-key-label", default=os.environ.get("VAULT_HSM_KEY_LABEL", "vault-key-file"),
                       help="label of the AES key in the token, made on first use (default: %(default)s)")
    serve.add_argument("--workers", type=int, default=None, help="extraction processes (default: cores)")
    serve.add_argument("--max-pending", type=int, default=None, help="samples queued before RESOURCE_EXHAUSTED")
    serve.add_argument("--sample-time-limit", type=float, default=15.0,
                       help="seconds one sample may take in a worker before the worker is killed (default: %(default)s)")
    serve.add_argument("--allow-face-embeddings", action="store_true",
                       help="accept pre-computed 128-D face embeddings from panels")
    serve.add_argument("--port-file", type=Path, default=None, help="write the bound port here once serving (tests, scripts)")
    serve.add_argument("--plaintext", action="store_true", help="no TLS: loopback development only")
    serve.add_argument("--tls-dir", type=Path, default=None, help="folder with ca.crt, server.crt, server.key")
    serve.add_argument("--auditor-score-bands", action="store_true",
                       help="auditors may Verify and get the score's decile (panels never get scores)")
    serve.add_argument("--max-failures-per-subject", type=int, default=5,
                       help="failed verifications of one person by one client before a lockout (default: %(default)s)")
    serve.add_argument("--max-failures-per-client", type=int, default=50,
                       help="failed verifications and empty identifications of one client before a lockout "
                            "(default: %(default)s)")
    serve.add_argument("--failure-window", type=float, default=300.0, help="seconds")
    serve.add_argument("--lockout", type=float, default=300.0, help="seconds")
    serve.add_argument("--metrics-listen", default=os.environ.get("VAULT_METRICS_LISTEN"),
                       help="host:port for the Prometheus /metrics endpoint (off by default)")
    serve.add_argument("--call-timeout", type=float, default=30.0, help="server-side deadline of one RPC, seconds")
    serve.add_argument("--log-level", default=os.environ.get("VAULT_LOG_LEVEL", "INFO"),
                       choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="env VAULT_LOG_LEVEL (default: %(default)s)")
    serve.add_argument("--log-format", default=os.environ.get("VAULT_LOG_FORMAT", "text"), choices=["text", "json"],
                       help="json: one object a line with rpc, status, latency_ms, tenant, caller, role and "
                            "decision_id for every call (env VAULT_LOG_FORMAT; default: %(default)s)")
    serve.add_argument("--identify-fpir", type=float, default=0.01,
                       help="false-positive identification rate Identify holds at any gallery size "
                            "(share of people not enrolled who get a candidate; default 0.01)")
    serve.add_argument("--identify-max-fnir", type=float, default=0.2,
                       help="expected false-negative identification rate above which KeyStatus, a metric and "
                            "the log say the gallery is too large for the FPIR target (default 0.2)")

    pki = commands.add_parser("pki", help="a local CA and certificates for development and small sites")
    pki_commands = pki.add_subparsers(dest="pki_command", required=True)
    pki_init = pki_commands.add_parser("init", help="create a CA and a server certificate")
    pki_init.add_argument("--dir", type=Path, default=Path(".vault/pki"), help="folder for the CA and certificates (default: %(default)s)")
    pki_init.add_argument("--host", action="append", default=None, help="server name or IP (repeatable)")
    pki_issue = pki_commands.add_parser("issue", help="issue a client certificate for a tenant and role")
    pki_issue.add_argument("--dir", type=Path, default=Path(".vault/pki"), help="the CA's folder (default: %(default)s)")
    pki_issue.add_argument("--tenant", required=True, help="the tenant the certificate acts for")
    pki_issue.add_argument("--role", required=True, choices=["panel", "enroller", "auditor", "admin"], help="its role")
    pki_issue.add_argument("--days", type=int, default=397, help="validity (default: %(default)s)")
    pki_issue.add_argument("name", help="file name of the certificate and key (NAME.crt, NAME.key)")

    def store_args(command):
        command.add_argument("--state-dir", type=Path, default=Path(os.environ.get("VAULT_STATE_DIR", ".vault")),
                             help="the embedded store's folder (vault.db) (env VAULT_STATE_DIR; default: %(default)s)")
        command.add_argument("--store", default=os.environ.get("VAULT_STORE", ""),
                             help="sqlite:///path or postgresql://... instead of --state-dir (env VAULT_STORE)")

    backup = commands.add_parser("backup", help="write an archive of the store while it serves: sealed template "
                                                "rows, token HMACs and the audit chain, never key material")
    store_args(backup)
    backup.add_argument("archive", type=Path, help="the archive to write (gzip; e.g. vault-2026-11-27.backup)")
    restore = commands.add_parser("restore", help="load an archive into an empty store, SQLite or PostgreSQL "
                                                  "(also the way to move a vault between backends)")
    store_args(restore)
    restore.add_argument("archive", type=Path, help="an archive written by `vault backup`")

    def client(name: str, help: str):
        command = commands.add_parser(name, help=help)
        command.add_argument("--server", default=DEFAULT_SERVER, help="host:port of the vault (env VAULT_SERVER; default: %(default)s)")
        command.add_argument("--tls-dir", type=Path, default=os.environ.get("VAULT_TLS_DIR"),
                             help="folder with ca.crt and <identity>.crt/.key")
        command.add_argument("--identity", default=os.environ.get("VAULT_IDENTITY"), help="client certificate name")
        command.add_argument("--token", default=os.environ.get("VAULT_TOKEN"), help="API token (or VAULT_TOKEN)")
        return command

    token = client("token", "API tokens of your tenant (admin)")
    token.add_argument("action", choices=["create", "list", "revoke"])
    token.add_argument("--role", choices=["panel", "enroller", "auditor", "admin"], help="create: the token's role")
    token.add_argument("--name", default="", help="create: a name for the token (e.g. the door)")
    token.add_argument("--id", default="", help="revoke: the token id (from list)")

    key = client("key", "tenant key versions (admin)")
    key.add_argument("action", choices=["rotate", "status", "destroy"],
                     help="rotate: start a new version; status: versions and who is on old ones; destroy: "
                          "delete an old version no live template uses (crypto-shredding)")
    key.add_argument("--version", type=int, default=0, help="the key version to destroy")

    audit = client("audit", "the audit trail (auditor); `audit verify --state-dir` checks a store offline")
    audit.add_argument("action", choices=["read", "verify"])
    audit.add_argument("--after", type=int, default=0, help="read: records after this seq (default: %(default)s)")
    audit.add_argument("--limit", type=int, default=1000, help="read: at most this many (default: %(default)s)")
    audit.add_argument("--state-dir", type=Path, default=None, help="verify offline: read the store and key file")

    def modality_args(command):
        command.add_argument("--modality", choices=["face", "fingerprint"], default="face", help="default: %(default)s")
        command.add_argument("--finger", type=int, default=0, help="ISO/IEC 19794-2 finger code 0-10")
        command.add_argument("--single-face", action="store_true", help="fail if several faces are found")

    enroll = client("enroll", "enrol one subject from one or more sample files")
    enroll.add_argument("--subject", required=True, help="the person's id in your system")
    modality_args(enroll)
    enroll.add_argument("files", nargs="+", type=Path, help="images or ISO/IEC 19794-2 records of one person (up to 10)")

    bulk = client("enroll-folder", "enrol every subject of a folder (one subfolder or file prefix per subject)")
    modality_args(bulk)
    bulk.add_argument("folder", type=Path, help="one sub-folder per person, named by their id")
    bulk.add_argument("--samples", type=int, default=1, help="samples per subject (the first N files)")
    bulk.add_argument("--limit", type=int, default=0, help="enrol at most this many subjects")
    bulk.add_argument("--parallel", type=int, default=4, help="concurrent enrolments (default: %(default)s)")

    verify = client("verify", "1:1 verification of a probe against a subject or template")
    claim = verify.add_mutually_exclusive_group(required=True)
    claim.add_argument("--subject", help="the claimed person")
    claim.add_argument("--template", help="the claimed template id")
    modality_args(verify)
    verify.add_argument("file", type=Path, help="the probe image or record")

    identify = client("identify", "1:N identification of a probe")
    modality_args(identify)
    identify.add_argument("--max", type=int, default=5, help="candidates at most (default: %(default)s)")
    identify.add_argument("file", type=Path, help="the probe image or record")

    revoke = client("revoke", "revoke a template, or every live template of a subject")
    target = revoke.add_mutually_exclusive_group(required=True)
    target.add_argument("--subject", help="revoke every live template of this person")
    target.add_argument("--template", help="revoke this template")
    revoke.add_argument("--reason", default="", help="recorded in the template and the audit trail")

    reissue = client("reissue", "replace a template with one from new samples under a fresh salt")
    reissue.add_argument("--template", required=True, help="the live template to replace")
    reissue.add_argument("--reason", default="", help="recorded in the audit trail")
    reissue.add_argument("--single-face", action="store_true", help="refuse images with more than one face")
    reissue.add_argument("files", nargs="+", type=Path, help="new samples of the same person")

    client("health", "exit 0 when the server answers SERVING on the gRPC health service (container HEALTHCHECK)")
    listing = client("list", "template metadata (never template bytes)")
    listing.add_argument("--subject", default="", help="one person's templates only")
    listing.add_argument("--all", action="store_true", help="include revoked templates")

    args = parser.parse_args(argv)
    if args.command == "serve":
        return run_serve(args)
    if args.command == "pki":
        return run_pki(args)
    if args.command in ("backup", "restore"):
        return run_backup(args)
    try:
        return CLIENT_COMMANDS[args.command](args)
    except grpc.RpcError as error:  # health: a plain gRPC call
        print(f"error: {error.code().name}: {error.details()}", file=sys.stderr)
        return 1
    except VaultCallError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"error: {error.strerror}: {error.filename}", file=sys.stderr)
        return 1
    except VaultError as error:
        print(f"error: {error.message}", file=sys.stderr)
        return 1


def run_serve(args) -> int:
    from vault.lockout import Limits
    from vault.server import Settings, serve
    from vault.core import IdentifyPolicy

    if not (0 < args.identify_fpir < 1 and 0 < args.identify_max_fnir <= 1):
        print("vault: --identify-fpir must be in (0, 1) and --identify-max-fnir in (0, 1]", file=sys.stderr)
        return 2
    from vault.logs import configure

    configure(args.log_level, args.log_format)
    limits = Limits(args.max_failures_per_subject, args.max_failures_per_client, args.failure_window, args.lockout)
    hsm = None
    if args.hsm_module:
        from vault.hsm import HsmConfig, pin_from_environment

        pin = pin_from_environment()
        if not pin:
            print("vault: --hsm-module needs the token's PIN in VAULT_HSM_PIN_FILE (or VAULT_HSM_PIN)", file=sys.stderr)
            return 2
        hsm = HsmConfig(args.hsm_module, args.hsm_token, pin, args.hsm_key_label)
    settings = Settings(state_dir=args.state_dir, listen=args.listen, store_url=args.store, key_file=args.key_file,
                        workers=args.workers, max_pending=args.max_pending, sample_time_limit_s=args.sample_time_limit,
                        allow_face_embeddings=args.allow_face_embeddings, port_file=args.port_file,
                        plaintext=args.plaintext, tls_dir=args.tls_dir, auditor_score_bands=args.auditor_score_bands,
                        limits=limits, metrics_listen=args.metrics_listen, call_timeout_s=args.call_timeout,
                        identification=IdentifyPolicy(args.identify_fpir, args.identify_max_fnir), hsm=hsm)
    try:
        asyncio.run(serve(settings))
    except VaultError as error:
        print(f"vault: {error.message}", file=sys.stderr)
        return 2
    return 0


def run_backup(args) -> int:
    from vault.backup import CONTENTS, restore_backup, write_backup
    from vault.store import open_store

    url = args.store or f"sqlite:///{args.state_dir / 'vault.db'}"
    if not args.store and args.command == "backup" and not (args.state_dir / "vault.db").exists():
        print(f"error: no store in {args.state_dir} (give --state-dir or --store)", file=sys.stderr)
        return 1
    try:
        store = open_store(url)
        try:
            if args.command == "backup":
                summary = write_backup(store, args.archive)
            else:
                summary = restore_backup(args.archive, store)
        finally:
            store.close()
    except (VaultError, OSError) as error:
        print(f"error: {getattr(error, 'message', None) or error}", file=sys.stderr)
        return 1
    counts = summary.counts
    done = f"wrote {summary.path}" if args.command == "backup" else f"restored {summary.path} into the store"
    print(f"{done}: {counts['templates']} templates, {counts['tokens']} tokens, {counts['audit']} audit records")
    print(f"it holds {CONTENTS}")
    return 0


def run_pki(args) -> int:
    from vault import pki

    try:
        if args.pki_command == "init":
            pki.init_ca(args.dir)
            pki.issue(args.dir, "server", server_hosts=args.host or ["localhost", "127.0.0.1"])
            print(f"CA and server certificate in {args.dir} (ca.crt, server.crt, server.key)")
        else:
            path = pki.issue(args.dir, args.name, tenant=args.tenant, role=args.role, days=args.days)
            print(f"{path} and {path.with_suffix('.key')}: {args.role} of tenant {args.tenant}")
    except VaultError as error:
        print(f"error: {error.message}", file=sys.stderr)
        return 1
    return 0


# -- client side: the vault_client package, the one every panel and HR system uses ---------------
def client_settings(args):
    from vault_client import Settings, TlsIdentity

    tls = None
    if args.tls_dir:
        if not args.identity:
            raise VaultError("--identity NAME is needed with --tls-dir (the client certificate NAME.crt)")
        tls = TlsIdentity.from_dir(args.tls_dir, args.identity)
    return Settings(args.server, tls=tls, token=args.token or None)


def _client(args):
    from vault_client import VaultClient

    return VaultClient(client_settings(args))


def _pb():
    from vault_client import pb

    return pb


def cmd_enroll(args) -> int:
    response = _client(args).enroll(args.subject, args.files, modality=args.modality, finger=args.finger,
                                    require_single_face=args.single_face)
    print(f"enrolled {args.subject}: template {response.template_id} ({response.profile}, key v{response.key_version})")
    return 0


def subjects_in(folder: Path) -> dict[str, list[Path]]:
    """Subfolders are subjects (LFW, ORL); in a flat folder the file-name prefix before '_' is (FVC)."""
    subjects: dict[str, list[Path]] = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            subject = path.parent.name if path.parent != folder else path.stem.split("_")[0]
            subjects.setdefault(subject, []).append(path)
    return subjects


def cmd_enroll_folder(args) -> int:
    from tqdm import tqdm
    from vault_client.errors import VaultCallError

    vault = _client(args)
    subjects = list(subjects_in(args.folder).items())
    if args.limit:
        subjects = subjects[: args.limit]

    def enrol(item):
        subject, files = item
        try:
            vault.enroll(subject, files[: args.samples], modality=args.modality, finger=args.finger,
                         require_single_face=args.single_face)
            return subject, None
        except VaultCallError as error:
            return subject, str(error)

    failures = []
    with ThreadPoolExecutor(args.parallel) as pool:
        for subject, problem in tqdm(pool.map(enrol, subjects), total=len(subjects), unit="subject", desc="enrol"):
            if problem:
                failures.append((subject, problem))
    print(f"enrolled {len(subjects) - len(failures)} of {len(subjects)} subjects")
    for subject, problem in failures:
        print(f"  {subject}: {problem}", file=sys.stderr)
    return 1 if failures and len(failures) == len(subjects) else 0


def cmd_verify(args) -> int:
    pb = _pb()
    response = _client(args).verify(args.file, subject_id=args.subject or "", template_id=args.template or "",
                                    modality=args.modality, finger=args.finger, require_single_face=args.single_face)
    print(f"{pb.Decision.Name(response.decision)} (decision {response.decision_id})")
    return 0 if response.decision == pb.MATCH else 3


def cmd_identify(args) -> int:
    response = _client(args).identify(args.file, modality=args.modality, finger=args.finger,
                                      max_candidates=args.max, require_single_face=args.single_face)
    if not response.candidates:
        print(f"no candidate (decision {response.decision_id})")
        return 3
    for candidate in response.candidates:
        print(f"{candidate.rank}. {candidate.subject_id} (template {candidate.template_id})")
    return 0


def cmd_revoke(args) -> int:
    for template_id in _client(args).revoke(template_id=args.template or "", subject_id=args.subject or "",
                                            reason=args.reason):
        print(f"revoked {template_id}")
    return 0


def cmd_reissue(args) -> int:
    response = _client(args).reissue(args.template, args.files, reason=args.reason,
                                     require_single_face=args.single_face)
    print(f"reissued {response.revoked_template_id} as {response.template_id}")
    return 0


def cmd_list(args) -> int:
    pb = _pb()
    for t in _client(args).list_templates(args.subject, include_revoked=args.all):
        print(f"{t.template_id}  {t.subject_id:<24} {pb.Modality.Name(t.modality):<11} "
              f"{pb.TemplateStatus.Name(t.status):<7} {t.profile} key v{t.key_version} "
              f"created {t.created_at.ToDatetime():%Y-%m-%d %H:%M:%S}"
              + (f" revoked ({t.revoke_reason})" if t.status == pb.REVOKED else ""))
    return 0


def cmd_token(args) -> int:
    vault = _client(args)
    if args.action == "create":
        response = vault.create_token(args.role or "", args.name)
        print(f"token {response.info.token_id} ({response.info.role}, {response.info.name}); shown once:")
        print(response.token)
    elif args.action == "list":
        for t in vault.list_tokens():
            state = "revoked" if t.HasField("revoked_at") else "live"
            print(f"{t.token_id}  {t.role:<9} {t.name:<20} {state}")
    else:
        vault.revoke_token(args.id)
        print(f"revoked token {args.id}")
    return 0


def cmd_key(args) -> int:
    pb, vault = _pb(), _client(args)
    if args.action == "rotate":
        print(f"new key version {vault.rotate_key()}")
        return 0
    if args.action == "destroy":
        if not args.version:
            print("vault: key destroy needs --version N (an old version no live template uses)", file=sys.stderr)
            return 2
        shredded = vault.destroy_key_version(args.version)
        print(f"key version {args.version} destroyed; {shredded} revoked templates under it can never be opened")
        return 0
    status = vault.key_status()
    print(f"current key version {status.current_key_version}")
    for v in status.versions:
        print(f"  v{v.key_version}: {v.live_templates} live templates")
    if status.subjects_on_old_versions:
        print("re-enrolment needed: " + ", ".join(status.subjects_on_old_versions))
    for c in status.identify:
        verdict = "ok" if c.reachable else "TOO LARGE for the FPIR target"
        print(f"identify {pb.Modality.Name(c.modality).lower()}: {c.templates} templates, FPIR {c.fpir_target:g}, "
              f"expected FNIR {c.expected_fnir:.3f} (fused templates {c.expected_fnir_fused:.3f}): {verdict}")
    return 0


def cmd_audit(args) -> int:
    if args.action == "verify" and args.state_dir:
        return audit_verify_offline(args.state_dir)
    vault = _client(args)
    if args.action == "read":
        for r in vault.read_audit(args.after, args.limit):
            print(f"{r.seq:>6} {r.at.ToDatetime():%Y-%m-%d %H:%M:%S} {r.actor:<24} {r.rpc:<12} {r.decision:<12} "
                  f"subject={r.subject_id} template={r.template_id} {r.detail}")
        return 0
    result = vault.verify_audit()
    return _report_chain(result.records, [(p.seq, p.problem) for p in result.problems])


def audit_verify_offline(state_dir: Path) -> int:
    from vault.audit import AuditAnchor, anchor_path, verify_chain
    from vault.keys import LocalKeyFile, passphrase_from_environment
    from vault.store import open_store

    keys = LocalKeyFile(state_dir / "keys.json", passphrase_from_environment())
    store = open_store(f"sqlite:///{state_dir / 'vault.db'}", keys.audit_key())
    records = list(store.audit_records())
    anchor = AuditAnchor(anchor_path(state_dir / "keys.json")).head()
    return _report_chain(len(records), [(p.seq, p.problem) for p in verify_chain(keys.audit_key(), records, anchor)])


def _report_chain(count: int, problems) -> int:
    if not problems:
        print(f"audit chain intact: {count} records")
        return 0
    print(f"audit chain BROKEN: {len(problems)} problems in {count} records")
    for seq, problem in problems:
        print(f"  seq {seq}: {problem}")
    return 4


def cmd_health(args) -> int:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from vault_client.connection import open_channel

    with open_channel(client_settings(args)) as channel:
        status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status
    print(health_pb2.HealthCheckResponse.ServingStatus.Name(status))
    return 0 if status == health_pb2.HealthCheckResponse.SERVING else 1


CLIENT_COMMANDS = {
    "enroll": cmd_enroll, "enroll-folder": cmd_enroll_folder, "verify": cmd_verify, "identify": cmd_identify,
    "revoke": cmd_revoke, "reissue": cmd_reissue, "list": cmd_list, "token": cmd_token, "key": cmd_key,
    "audit": cmd_audit, "health": cmd_health,
}

if __name__ == "__main__":
    sys.exit(main())
