"""The `vault` command: `vault serve`, operator commands (pki, backup, restore), and client commands
that talk gRPC to a running vault through the vault_client package.

Every setting is read, first found wins: the command-line flag, its VAULT_* environment variable
(shown in --help), the settings file (--config / VAULT_CONFIG, TOML), the default (shown in --help).
"""

from __future__ import annotations

import asyncio
import os
import sys
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# gRPC's native core logs at INFO level to stderr (every refused TLS handshake, for one) unless told
# otherwise before it loads: errors only, so the server's own log stays the log. Set it to see more.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

import click  # noqa: E402
import grpc  # noqa: E402

from vault.exceptions import VaultError  # noqa: E402
from vault_client.errors import VaultCallError  # noqa: E402

EXIT_CODES = """\b
Exit codes:
  0  done
  1  a call failed (its gRPC status is printed), or a file is unreadable
  2  bad usage or settings, or the server refused to start
  3  verify: NO_MATCH; identify: no candidate
  4  audit verify: the chain is broken

\b
Settings file (--config FILE, TOML): a [serve] table for `vault serve`, a [client] table for every
client command, tables named after other commands for theirs; keys are option names, e.g.
  [serve]
  listen = "0.0.0.0:50051"
  max-failures-per-subject = 5
Secrets are never options: key passphrase from VAULT_KEY_PASSPHRASE_FILE (or VAULT_KEY_PASSPHRASE),
HSM PIN from VAULT_HSM_PIN_FILE (or VAULT_HSM_PIN), tokens from --token-file / VAULT_TOKEN_FILE."""
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".pgm", ".ppm", ".tif", ".tiff", ".bmp", ".iso"}
ROLES = ["panel", "enroller", "auditor", "admin"]
CLIENT_SECTION = "client"
AUDIT_READ_MAX = 10_000  # records one ReadAudit returns at most: the server's cap (vault.administration)
# ISO/IEC 19794-2 finger positions (vault.v1.FingerPosition), by name or code.
FINGERS = {"unknown": 0, "right-thumb": 1, "right-index": 2, "right-middle": 3, "right-ring": 4, "right-little": 5,
           "left-thumb": 6, "left-index": 7, "left-middle": 8, "left-ring": 9, "left-little": 10}
FINGER_NAMES = {code: name for name, code in FINGERS.items()}


class FingerType(click.ParamType):
    """A finger position: right-thumb ... left-little, or its ISO/IEC 19794-2 code 0-10."""

    name = "finger"

    def convert(self, value, param, ctx):
        if isinstance(value, int) and value in FINGER_NAMES:
            return value
        text = str(value).strip().lower().replace("_", "-")
        if text in FINGERS:
            return FINGERS[text]
        if text.isdigit() and int(text) in FINGER_NAMES:
            return int(text)
        self.fail(f"{value!r} is not a finger: one of {', '.join(FINGERS)} or a code 0-10", param, ctx)


def setting(*names: str, env: str | None = None, **kwargs):
    """An option that is a setting: named environment variable, default and variable in --help."""
    kwargs.setdefault("show_default", True)
    return click.option(*names, envvar=env, show_envvar=env is not None, **kwargs)


# -- the settings file ------------------------------------------------------------------------------
def load_settings_file(ctx: click.Context, _param, path: Path | None) -> Path | None:
    """Read the TOML settings file into Click's default_map (below flags and environment variables,
    above built-in defaults). Unknown tables or keys are refused by name."""
    if path is None:
        return None
    try:
        tables = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise click.BadParameter(f"cannot read {path}: {error}") from None
    group: click.Group = ctx.command
    defaults: dict[str, dict] = {}
    for table, values in tables.items():
        targets = CLIENT_COMMANDS if table == CLIENT_SECTION else [table]
        if not isinstance(values, dict) or any(t not in group.commands for t in targets):
            raise click.BadParameter(f"{path}: unknown table [{table}]")
        for target in targets:
            command = group.commands[target]
            known = {p.name for p in command.params if isinstance(p, click.Option)}
            for key, value in values.items():
                name = key.replace("-", "_")
                if name == "token":  # a settings file is not kept as a secret: tokens never go there
                    raise click.BadParameter(f"{path}: [{table}] holds a token: tokens are secrets and never go in "
                                             "a settings file; use --token-file or VAULT_TOKEN_FILE")
                if name not in known:
                    raise click.BadParameter(f"{path}: [{table}] has no setting {key!r} (see vault {target} --help)")
                defaults.setdefault(target, {})[name] = value
    ctx.default_map = defaults
    return path


@click.group(epilog=EXIT_CODES, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@setting("--config", env="VAULT_CONFIG", type=click.Path(exists=True, dir_okay=False, path_type=Path),
         is_eager=True, expose_value=False, callback=load_settings_file,
         help="settings file (TOML); flags and environment variables win over it")
def cli():
    """vault: cancellable face and fingerprint templates behind gRPC."""


# -- the server -------------------------------------------------------------------------------------
@cli.command(epilog=EXIT_CODES)
@setting("--state-dir", env="VAULT_STATE_DIR", type=click.Path(path_type=Path), default=Path(".vault"),
         help="folder of the embedded SQLite store (and of the key file unless --key-file)")
@setting("--listen", env="VAULT_LISTEN", default="127.0.0.1:50051", help="host:port of the gRPC server")
@setting("--store", env="VAULT_STORE", default="", show_default="STATE_DIR/vault.db", help="sqlite:///path or postgresql://...")
@setting("--key-file", env="VAULT_KEY_FILE", type=click.Path(path_type=Path), default=None,
         help="the key file (default: STATE_DIR/keys.json, development only: keep keys off the data's volume)")
@setting("--shred-store", env="VAULT_SHRED_STORE", default="", show_default="KEY_FILE.shred.db",
         help="where each template's shred secret lives (deleted at revocation, so no copy of a revoked row "
              "opens again): a path or postgresql://... on the keys' side, never the data's database; replicas "
              "share one")
@setting("--hsm-module", env="VAULT_HSM_MODULE", type=click.Path(path_type=Path), default=None,
         help="PKCS#11 library sealing the key file with a key that never leaves the token "
              "(e.g. /usr/lib/softhsm/libsofthsm2.so); PIN from VAULT_HSM_PIN_FILE or VAULT_HSM_PIN")
@setting("--hsm-token", env="VAULT_HSM_TOKEN", default="vault", help="PKCS#11 token label")
@setting("--hsm-key-label", env="VAULT_HSM_KEY_LABEL", default="vault-key-file",
         help="label of the AES key in the token, made on first use")
@setting("--workers", env="VAULT_WORKERS", type=click.IntRange(min=1), default=None,
         help="extraction processes (default: one per core)")
@setting("--max-pending", env="VAULT_MAX_PENDING", type=click.IntRange(min=1), default=None,
         help="samples queued before RESOURCE_EXHAUSTED (default: 8 per worker)")
@setting("--sample-time-limit", env="VAULT_SAMPLE_TIME_LIMIT", type=click.FloatRange(min=0.1), default=15.0,
         help="seconds one sample may take in a worker before the worker is killed")
@setting("--allow-face-embeddings", env="VAULT_ALLOW_FACE_EMBEDDINGS", is_flag=True,
         help="accept pre-computed 128-D face embeddings from panels")
@setting("--port-file", env="VAULT_PORT_FILE", type=click.Path(path_type=Path), default=None,
         help="write the bound port here once serving (tests, scripts)")
@setting("--plaintext", env="VAULT_PLAINTEXT", is_flag=True, help="no TLS: loopback development only")
@setting("--tls-dir", env="VAULT_TLS_DIR", type=click.Path(path_type=Path), default=None,
         help="folder with ca.crt, server.crt, server.key (from `vault pki init`)")
@setting("--auditor-score-bands", env="VAULT_AUDITOR_SCORE_BANDS", is_flag=True,
         help="auditors may Verify and get the score's decile (panels never get scores)")
@setting("--max-failures-per-subject", env="VAULT_MAX_FAILURES_PER_SUBJECT", type=click.IntRange(min=1), default=5,
         help="failed verifications of one person by one client before a lockout")
@setting("--max-failures-per-client", env="VAULT_MAX_FAILURES_PER_CLIENT", type=click.IntRange(min=1), default=50,
         help="answers and failed extractions of one client before a lockout: NO_MATCH, every Identify, "
              "a banded MATCH, a probe without a face (raise it for doors running Identify)")
@setting("--failure-window", env="VAULT_FAILURE_WINDOW", type=click.FloatRange(min=1), default=300.0,
         help="seconds over which failures count")
@setting("--lockout", env="VAULT_LOCKOUT", type=click.FloatRange(min=1), default=300.0, help="seconds a lockout lasts")
@setting("--token-listen", env="VAULT_TOKEN_LISTEN", default=None,
         help="host:port of a second TLS listener that asks for no client certificate: token-only clients "
              "and health checks (off unless given; needs --tls-dir)")
@setting("--metrics-listen", env="VAULT_METRICS_LISTEN", default=None,
         help="host:port for the Prometheus /metrics endpoint (off unless given; in a container 0.0.0.0:9464, "
              "published to the scrape network only)")
@setting("--call-timeout", env="VAULT_CALL_TIMEOUT", type=click.FloatRange(min=0.1), default=30.0,
         help="server-side deadline of one RPC, seconds")
@setting("--log-level", env="VAULT_LOG_LEVEL", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]), default="INFO",
         help="lowest level logged")
@setting("--log-format", env="VAULT_LOG_FORMAT", type=click.Choice(["text", "json"]), default="text",
         help="json: one object a line, with rpc, status, latency_ms, tenant, caller, role and decision_id for every call")
@setting("--identify-fpir", env="VAULT_IDENTIFY_FPIR", type=click.FloatRange(0, 1, min_open=True, max_open=True),
         default=0.01, help="false-positive identification rate Identify holds at any gallery size "
                            "(share of people not enrolled who get a candidate)")
@setting("--identify-max-fnir", env="VAULT_IDENTIFY_MAX_FNIR", type=click.FloatRange(0, 1, min_open=True), default=0.2,
         help="expected false-negative identification rate above which KeyStatus, a metric and the log say "
              "the gallery is too large for the FPIR target")
@setting("--group", env="VAULT_GROUP", default=None,
         help="replica group: load and answer only the tenants the store assigns to it (`vault group`); "
              "calls for other tenants get FAILED_PRECONDITION with the right group in the vault-group trailer")
def serve(**options) -> int:
    """Run the vault server (embedded SQLite and a local key file by default)."""
    from vault.core import IdentifyPolicy
    from vault.access.lockout import Limits
    from vault.logs import configure
    from vault.server import Settings
    from vault.server import serve as run_server

    configure(options["log_level"], options["log_format"])
    limits = Limits(options["max_failures_per_subject"], options["max_failures_per_client"],
                    options["failure_window"], options["lockout"])
    hsm = None
    if options["hsm_module"]:
        from vault.custody.hsm import HsmConfig, pin_from_environment

        pin = pin_from_environment()
        if not pin:
            raise click.UsageError("--hsm-module needs the token's PIN in VAULT_HSM_PIN_FILE (or VAULT_HSM_PIN)")
        hsm = HsmConfig(options["hsm_module"], options["hsm_token"], pin, options["hsm_key_label"])
    settings = Settings(
        state_dir=options["state_dir"], listen=options["listen"], store_url=options["store"],
        key_file=options["key_file"], workers=options["workers"], max_pending=options["max_pending"],
        sample_time_limit_s=options["sample_time_limit"], allow_face_embeddings=options["allow_face_embeddings"],
        port_file=options["port_file"], plaintext=options["plaintext"], tls_dir=options["tls_dir"],
        auditor_score_bands=options["auditor_score_bands"], limits=limits, metrics_listen=options["metrics_listen"],
        call_timeout_s=options["call_timeout"], hsm=hsm, shred_store=options["shred_store"],
        token_listen=options["token_listen"], group=options["group"],
        identification=IdentifyPolicy(options["identify_fpir"], options["identify_max_fnir"]))
    try:
        asyncio.run(run_server(settings))
    except VaultError as error:
        print(f"vault: {error.message}", file=sys.stderr)
        return 2
    return 0


# -- operator commands ------------------------------------------------------------------------------
@cli.group()
def pki():
    """A local CA and certificates for development and small sites."""


@pki.command("init")
@setting("--dir", "folder", type=click.Path(path_type=Path), default=Path("pki"),
         help="folder for the CA and certificates (never the state directory: ca.key signs identities)")
@setting("--host", multiple=True, default=["localhost", "127.0.0.1"], help="server name or IP (repeatable)")
def pki_init(folder: Path, host: tuple[str, ...]) -> int:
    """Create a CA and a server certificate."""
    from vault.custody import pki as authority

    authority.init_ca(folder)
    authority.issue(folder, "server", server_hosts=list(host))
    print(f"CA and server certificate in {folder} (ca.crt, server.crt, server.key)")
    return 0


@pki.command("issue")
@setting("--dir", "folder", type=click.Path(path_type=Path), default=Path("pki"), help="the CA's folder")
@click.option("--tenant", required=True, help="the tenant the certificate acts for")
@click.option("--role", required=True, type=click.Choice(ROLES), help="its role")
@setting("--days", type=click.IntRange(min=1), default=397, help="validity")
@click.argument("name")
def pki_issue(folder: Path, tenant: str, role: str, days: int, name: str) -> int:
    """Issue a client certificate NAME.crt / NAME.key for a tenant and role."""
    from vault.custody import pki as authority

    path = authority.issue(folder, name, tenant=tenant, role=role, days=days)
    print(f"{path} and {path.with_suffix('.key')}: {role} of tenant {tenant}")
    return 0


def store_options(command):
    command = setting("--store", env="VAULT_STORE", default="", show_default="STATE_DIR/vault.db",
                      help="sqlite:///path or postgresql://...")(command)
    return setting("--state-dir", env="VAULT_STATE_DIR", type=click.Path(path_type=Path), default=Path(".vault"),
                   help="the embedded store's folder (vault.db)")(command)


def archive_key_option(command):
    return setting("--key-file", env="VAULT_KEY_FILE", type=click.Path(dir_okay=False, path_type=Path), default=None,
                   show_default="STATE_DIR/keys.json",
                   help="the vault's key file: archives are authenticated (HMAC) under a key from it; passphrase "
                        "from VAULT_KEY_PASSPHRASE_FILE")(command)


@cli.command()
@store_options
@archive_key_option
@click.argument("archive", type=click.Path(dir_okay=False, path_type=Path))
def backup(state_dir: Path, store: str, key_file: Path | None, archive: Path) -> int:
    """Write ARCHIVE (0600) while the vault serves: sealed template rows, token HMACs and the audit
    chain, authenticated under the key store, never key material (back up the key store apart)."""
    if not store and not (state_dir / "vault.db").exists():
        raise click.UsageError(f"no store in {state_dir} (give --state-dir or --store)")
    return _backup_or_restore("backup", store or f"sqlite:///{state_dir / 'vault.db'}", key_file or state_dir / "keys.json",
                              archive)


@cli.command()
@store_options
@archive_key_option
@click.argument("archive", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def restore(state_dir: Path, store: str, key_file: Path | None, archive: Path) -> int:
    """Load ARCHIVE (from `vault backup`) into an empty store, SQLite or PostgreSQL: also the way to
    move a vault between backends. Needs the key file the backup was made with."""
    return _backup_or_restore("restore", store or f"sqlite:///{state_dir / 'vault.db'}", key_file or state_dir / "keys.json",
                              archive)


# -- replica groups --------------------------------------------------------------------------------
@cli.group("group")
def group_command():
    """Which replica group serves each tenant (servers started with `vault serve --group NAME`)."""


def _group_store(state_dir: Path, store: str):
    from vault.store import open_store

    return open_store(store or f"sqlite:///{state_dir / 'vault.db'}")


@group_command.command("list")
@store_options
def group_list(state_dir: Path, store: str) -> int:
    """Every tenant's replica group (and the group loading it ahead of a move)."""
    opened = _group_store(state_dir, store)
    try:
        print("tenant\tgroup\tjoining")
        for a in opened.assignments():
            print(f"{a.tenant}\t{a.group}\t{a.joining or '-'}")
    finally:
        opened.close()
    return 0


@group_command.command("assign")
@store_options
@click.option("--tenant", required=True, help="the tenant")
@click.option("--group", "group", required=True, help="its replica group")
def group_assign(state_dir: Path, store: str, tenant: str, group: str) -> int:
    """Assign a tenant to a replica group at once (a new tenant; to move one that is served, `group move`)."""
    from vault.access.auth import check_name
    from vault.replication import check_group

    check_name(tenant, "tenant")
    check_group(group)
    opened = _group_store(state_dir, store)
    try:
        opened.assign(tenant, group)
    finally:
        opened.close()
    print(f"tenant {tenant}: replica group {group}")
    return 0


@group_command.command("move")
@store_options
@click.option("--tenant", required=True, help="the tenant")
@click.option("--to", "group", required=True, help="the replica group that takes it over")
@setting("--settle", type=click.FloatRange(min=0), default=30.0,
         help="seconds the new group has to load the tenant before it takes over (its replicas log "
              "'tenants ... loaded'); one that is still loading then answers UNAVAILABLE, retryable")
def group_move(state_dir: Path, store: str, tenant: str, group: str, settle: float) -> int:
    """Move a tenant to another replica group without losing a decision: the new group loads it while
    the old one serves it, then the assignment flips, then the old group drops it."""
    import time

    from vault.access.auth import check_name
    from vault.replication import check_group

    check_name(tenant, "tenant")
    check_group(group)
    opened = _group_store(state_dir, store)
    try:
        current = opened.assignment(tenant)
        if current is not None and current.group != group:
            opened.assign(tenant, current.group, joining=group)
            print(f"tenant {tenant}: replica group {group} loads it while {current.group} serves it ({settle:g} s)")
            time.sleep(settle)
        opened.assign(tenant, group)
    finally:
        opened.close()
    print(f"tenant {tenant}: replica group {group}")
    return 0


@group_command.command("unassign")
@store_options
@click.option("--tenant", required=True, help="the tenant")
def group_unassign(state_dir: Path, store: str, tenant: str) -> int:
    """Take a tenant out of every replica group (only ungrouped servers answer it then)."""
    opened = _group_store(state_dir, store)
    try:
        found = opened.unassign(tenant)
    finally:
        opened.close()
    print(f"tenant {tenant}: " + ("no replica group" if found else "was in no replica group"))
    return 0


def _backup_or_restore(action: str, url: str, key_file: Path, archive: Path) -> int:
    from vault.custody.backup import CONTENTS, backup_key, restore_backup, write_backup
    from vault.custody.keys import LocalKeyFile, passphrase_from_environment
    from vault.store import open_store

    if not key_file.is_file():  # never a fresh key file made here: it would authenticate nothing
        raise click.UsageError(f"no key file at {key_file}: {action} needs the vault's key file (--key-file), "
                               "which authenticates the archive")
    key = backup_key(LocalKeyFile(key_file, passphrase_from_environment()))
    store = open_store(url)
    try:
        summary = write_backup(store, archive, key) if action == "backup" else restore_backup(archive, store, key)
    finally:
        store.close()
    counts = summary.counts
    done = f"wrote {summary.path}" if action == "backup" else f"restored {summary.path} into the store"
    print(f"{done}: {counts['templates']} templates, {counts['tokens']} tokens, {counts['audit']} audit records")
    print(f"it holds {CONTENTS}")
    return 0


# -- client commands: the vault_client package, the one every panel and HR system uses ---------------
def client_command(name: str, **kwargs):
    """A command that calls a running vault: the connection settings every client command shares."""

    def decorate(function):
        for option in reversed([
            setting("--server", env="VAULT_SERVER", default="127.0.0.1:50051", help="host:port of the vault"),
            setting("--groups", env="VAULT_GROUPS", default=None,
                    help="replica groups, NAME=HOST:PORT,...: calls go to the group serving this identity's tenant "
                         "(instead of --server)"),
            setting("--tls-dir", env="VAULT_TLS_DIR", type=click.Path(path_type=Path), default=None,
                    help="folder with ca.crt and IDENTITY.crt/.key (omit: plaintext, loopback only; with a token "
                         "and no --identity only ca.crt is read)"),
            setting("--identity", env="VAULT_IDENTITY", default=None,
                    help="client certificate name in --tls-dir (mutual TLS); not needed with a token on the server's "
                         "--token-listen port"),
            setting("--token", env="VAULT_TOKEN", default=None, show_default=False, help="API token"),
            setting("--token-file", env="VAULT_TOKEN_FILE", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                    default=None, help="file holding the API token (better than --token: not in the process list)"),
        ]):
            function = option(function)
        CLIENT_COMMANDS.append(name)
        return cli.command(name, epilog=EXIT_CODES, **kwargs)(function)

    return decorate


CLIENT_COMMANDS: list[str] = []
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration_s(value) -> int:
    """Seconds of a duration given as 90d, 12h, 30m, 45s or plain seconds."""
    text = str(value).strip().lower()
    unit = DURATION_UNITS.get(text[-1:], None)
    number = text[:-1] if unit else text
    try:
        seconds = int(number) * (unit or 1)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a duration (e.g. 90d, 12h, 30m, 3600)") from None
    if seconds <= 0:
        raise click.BadParameter("a duration must be positive")
    return seconds


def connection_settings(options: dict, server_only: bool = False):
    """vault_client Settings from the connection options every client command shares (consumed
    from `options`). server_only: TLS that checks the server alone is enough (health)."""
    from vault_client import Settings, TlsIdentity

    from vault_client.connection import parse_groups

    server, tls_dir, identity = options.pop("server"), options.pop("tls_dir"), options.pop("identity")
    try:
        groups = parse_groups(options.pop("groups", None) or "") or None
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--groups") from None
    token, token_file = options.pop("token"), options.pop("token_file")
    if token_file:
        token = token_file.read_text().strip()
    tls = None
    if tls_dir:
        if not identity and not token and not server_only:
            raise click.UsageError("--tls-dir needs --identity NAME (the client certificate NAME.crt) or a token "
                                   "(--token-file, VAULT_TOKEN_FILE; the server's --token-listen port)")
        tls = TlsIdentity.from_dir(tls_dir, identity or None)
    return Settings(server, tls=tls, token=token or None, groups=groups)


def connect(options: dict):
    from vault_client import VaultClient
    from vault_client.errors import InsecureToken

    try:
        return VaultClient(connection_settings(options))
    except InsecureToken as error:  # a token is never sent in the clear
        raise click.UsageError(f"{error} (--tls-dir, with --identity or alone on the --token-listen port)") from None


def modality_options(function):
    function = click.option("--single-face", is_flag=True, help="fail if several faces are found")(function)
    function = setting("--finger", type=FingerType(), default="unknown",
                       help="the finger: right-thumb, right-index, right-middle, right-ring, right-little, left-thumb, "
                            "..., left-little, or its ISO/IEC 19794-2 code 1-10 (unknown/0: any)")(function)
    return setting("--modality", type=click.Choice(["face", "fingerprint"]), default="face", help="the probe's kind")(function)


def one_claim(subject: str | None, template: str | None) -> None:
    if bool(subject) == bool(template):
        raise click.UsageError("give exactly one of --subject or --template")


FILES = click.Path(exists=True, dir_okay=False, path_type=Path)


@client_command("enroll")
@click.option("--subject", required=True, help="the person's id in your system")
@modality_options
@click.argument("files", nargs=-1, required=True, type=FILES)
def enroll(subject, modality, finger, single_face, files, **connection) -> int:
    """Enrol one subject from FILES: images or ISO/IEC 19794-2 records of one person (up to 10)."""
    response = connect(connection).enroll(subject, list(files), modality=modality, finger=finger,
                                          require_single_face=single_face)
    print(f"enrolled {subject}: template {response.template_id} ({response.profile}, key v{response.key_version})")
    return 0


def subjects_in(folder: Path) -> dict[str, list[Path]]:
    """Subfolders are subjects (LFW, ORL); in a flat folder the file-name prefix before '_' is (FVC)."""
    subjects: dict[str, list[Path]] = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            subject = path.parent.name if path.parent != folder else path.stem.split("_")[0]
            subjects.setdefault(subject, []).append(path)
    return subjects


@client_command("enroll-folder")
@modality_options
@setting("--samples", type=click.IntRange(1, 10), default=1, help="samples per subject (the first N files)")
@setting("--limit", type=click.IntRange(min=0), default=0, help="enrol at most this many subjects (0: all)")
@setting("--parallel", type=click.IntRange(min=1), default=4, help="concurrent enrolments")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
def enroll_folder(modality, finger, single_face, samples, limit, parallel, folder, **connection) -> int:
    """Enrol every subject of FOLDER (one sub-folder per person, or a file-name prefix before '_')."""
    from tqdm import tqdm

    from vault_client import pb

    vault = connect(connection)
    subjects = list(subjects_in(folder).items())
    if limit:
        subjects = subjects[:limit]
    # A re-run (after an interruption, or with a larger --limit) skips people who already have a
    # live template of this modality (and finger): enrolling them again would add a second template.
    wanted = pb.FACE if modality == "face" else pb.FINGERPRINT
    enrolled = {t.subject_id for t in vault.list_templates()
                if t.modality == wanted and (wanted == pb.FACE or t.finger == finger)}
    skipped = sum(subject in enrolled for subject, _ in subjects)
    subjects = [(subject, files) for subject, files in subjects if subject not in enrolled]
    if skipped:
        print(f"skipping {skipped} subjects already enrolled")

    def enrol(item):
        subject, files = item
        try:
            vault.enroll(subject, files[:samples], modality=modality, finger=finger, require_single_face=single_face)
            return subject, None
        except VaultCallError as error:
            return subject, str(error)

    failures = []
    with ThreadPoolExecutor(parallel) as pool:
        for subject, problem in tqdm(pool.map(enrol, subjects), total=len(subjects), unit="subject", desc="enrol"):
            if problem:
                failures.append((subject, problem))
    print(f"enrolled {len(subjects) - len(failures)} of {len(subjects)} subjects")
    for subject, problem in failures:
        print(f"  {subject}: {problem}", file=sys.stderr)
    return 1 if failures and len(failures) == len(subjects) else 0


@client_command("verify")
@click.option("--subject", help="the claimed person")
@click.option("--template", help="the claimed template id")
@modality_options
@click.argument("file", type=FILES)
def verify(subject, template, modality, finger, single_face, file, **connection) -> int:
    """1:1: does the probe FILE belong to the claimed subject or template? Exit 3 on NO_MATCH."""
    from vault_client import pb

    one_claim(subject, template)
    response = connect(connection).verify(file, subject_id=subject or "", template_id=template or "",
                                          modality=modality, finger=finger, require_single_face=single_face)
    print(f"{pb.Decision.Name(response.decision)} (decision {response.decision_id})")
    return 0 if response.decision == pb.MATCH else 3


@client_command("identify")
@modality_options
@setting("--max", "most", type=click.IntRange(1, 100), default=5, help="candidates at most")
@click.argument("file", type=FILES)
def identify(modality, finger, single_face, most, file, **connection) -> int:
    """1:N: who is the probe FILE? Exit 3 when no one is."""
    response = connect(connection).identify(file, modality=modality, finger=finger, max_candidates=most,
                                            require_single_face=single_face)
    if not response.candidates:
        print(f"no candidate (decision {response.decision_id})")
        return 3
    for candidate in response.candidates:
        print(f"{candidate.rank}. {candidate.subject_id} (template {candidate.template_id})")
    return 0


@client_command("revoke")
@click.option("--subject", help="revoke every live template of this person")
@click.option("--template", help="revoke this template")
@click.option("--reason", default="", help="recorded in the template and the audit trail")
def revoke(subject, template, reason, **connection) -> int:
    """Revoke a template, or every live template of a subject (auditor)."""
    one_claim(subject, template)
    for template_id in connect(connection).revoke(template_id=template or "", subject_id=subject or "", reason=reason):
        print(f"revoked {template_id}")
    return 0


@client_command("reissue")
@click.option("--template", required=True, help="the live template to replace")
@click.option("--reason", default="", help="recorded in the audit trail")
@click.option("--single-face", is_flag=True, help="refuse images with more than one face")
@click.argument("files", nargs=-1, required=True, type=FILES)
def reissue(template, reason, single_face, files, **connection) -> int:
    """Replace a template with one from new samples FILES under a fresh salt."""
    response = connect(connection).reissue(template, list(files), reason=reason, require_single_face=single_face)
    print(f"reissued {response.revoked_template_id} as {response.template_id}")
    return 0


@client_command("list")
@click.option("--subject", default="", help="one person's templates only")
@click.option("--all", "include_revoked", is_flag=True, help="include revoked templates")
def list_templates(subject, include_revoked, **connection) -> int:
    """Template metadata (never template bytes)."""
    from vault_client import pb

    templates = connect(connection).list_templates(subject, include_revoked=include_revoked)
    print(f"{'TEMPLATE':<32}  {'SUBJECT':<24} {'MODALITY':<11} {'FINGER':<12} {'STATUS':<7} {'PROFILE':<18} "
          f"{'KEY':<4} {'SAMPLES':<7} CREATED")
    for t in templates:
        finger = FINGER_NAMES.get(t.finger, str(t.finger)) if t.modality == pb.FINGERPRINT else "-"
        print(f"{t.template_id:<32}  {t.subject_id:<24} {pb.Modality.Name(t.modality):<11} {finger:<12} "
              f"{pb.TemplateStatus.Name(t.status):<7} {t.profile:<18} v{t.key_version:<3} {t.sample_count:<7} "
              f"{t.created_at.ToDatetime():%Y-%m-%d %H:%M:%S}"
              + (f" revoked ({t.revoke_reason})" if t.status == pb.REVOKED else ""))
    return 0


@client_command("token")
@click.argument("action", type=click.Choice(["create", "list", "revoke"]))
@click.option("--role", type=click.Choice(ROLES), help="create: the token's role")
@click.option("--name", default="", help="create: a name for the token (e.g. the door)")
@click.option("--id", "token_id", default="", help="revoke: the token id (from list)")
@setting("--expires-in", callback=lambda _c, _p, value: duration_s(value), default="90d",
         help="create: the token's lifetime, e.g. 90d, 12h, 30m or seconds (60 s to 730 d); then it is refused")
def token(action, role, name, token_id, expires_in, **connection) -> int:
    """API tokens of your tenant (admin): create, list, revoke."""
    import time

    if action == "create" and not role:
        raise click.UsageError(f"token create needs --role ({', '.join(ROLES)})")
    if action == "revoke" and not token_id:
        raise click.UsageError("token revoke needs --id (from `vault token list`)")
    vault = connect(connection)
    if action == "create":
        response = vault.create_token(role, name, expires_in_s=expires_in)
        expiry = f", expires {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(response.info.expires_at.seconds))}"
        print(f"token {response.info.token_id} ({response.info.role}, {response.info.name}{expiry}); shown once:")
        print(response.token)
    elif action == "list":
        for t in vault.list_tokens():
            expired = t.HasField("expires_at") and t.expires_at.seconds <= time.time()
            state = "revoked" if t.HasField("revoked_at") else "expired" if expired else "live"
            expiry = f"expires {t.expires_at.ToDatetime():%Y-%m-%d %H:%M}" if t.HasField("expires_at") else "no expiry"
            print(f"{t.token_id}  {t.role:<9} {t.name:<20} {state:<7} {expiry}")
    else:
        vault.revoke_token(token_id)
        print(f"revoked token {token_id}")
    return 0


@client_command("key")
@click.argument("action", type=click.Choice(["rotate", "status", "destroy"]))
@click.option("--version", type=click.IntRange(min=1), default=None, help="destroy: the key version")
def key(action, version, **connection) -> int:
    """Tenant key versions (admin): rotate starts a new version; status lists versions and who is on
    old ones; destroy deletes an old version no live template uses (crypto-shredding)."""
    from vault_client import pb

    vault = connect(connection)
    if action == "rotate":
        print(f"new key version {vault.rotate_key()}")
        return 0
    if action == "destroy":
        if not version:
            raise click.UsageError("key destroy needs --version N (an old version no live template uses)")
        shredded = vault.destroy_key_version(version)
        print(f"key version {version} destroyed; {shredded} revoked templates under it can never be opened")
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


@client_command("audit")
@click.argument("action", type=click.Choice(["read", "verify"]))
@setting("--after", type=click.IntRange(min=0), default=0, help="read: records after this number")
@setting("--limit", type=click.IntRange(1, AUDIT_READ_MAX), default=1000, help="read: at most this many (the server's cap)")
@click.option("--follow", "-f", is_flag=True, help="read: keep printing new records as they come (Ctrl-C ends it)")
@setting("--interval", type=click.FloatRange(min=0.2), default=2.0, help="read --follow: seconds between polls")
@click.option("--state-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="verify offline: read this embedded store instead of calling a server")
@click.option("--key-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="verify offline: the store's key file (default: STATE_DIR/keys.json, as in development)")
def audit(action, after, limit, follow, interval, state_dir, key_file, **connection) -> int:
    """The audit trail (auditor): read records (--follow: and wait for new ones), or verify the chain."""
    import time

    if action == "verify" and state_dir:
        return audit_verify_offline(state_dir, key_file or state_dir / "keys.json")
    vault = connect(connection)
    if action == "read":
        try:
            while True:
                count = 0
                for r in vault.read_audit(after, limit):
                    print(f"{r.seq:>6} {r.at.ToDatetime():%Y-%m-%d %H:%M:%S} {r.actor:<24} {r.rpc:<12} "
                          f"{r.decision:<12} subject={r.subject_id} template={r.template_id} {r.detail}", flush=True)
                    after, count = r.seq, count + 1
                if not follow:
                    return 0
                if count < limit:  # caught up: wait for more (a full batch: read on at once)
                    time.sleep(interval)
        except KeyboardInterrupt:
            return 0
    result = vault.verify_audit()
    return _report_chain(result.records, [(p.seq, p.problem) for p in result.problems])


def audit_verify_offline(state_dir: Path, key_file: Path) -> int:
    from vault.access.audit import AuditAnchor, anchor_path, verify_chain
    from vault.custody.keys import LocalKeyFile, passphrase_from_environment
    from vault.store import open_store

    keys = LocalKeyFile(key_file, passphrase_from_environment())
    store = open_store(f"sqlite:///{state_dir / 'vault.db'}", keys.audit_key())
    records = list(store.audit_records())
    anchor = AuditAnchor(anchor_path(key_file))
    problems = verify_chain(keys.audit_key(), records, anchor.head()) + anchor.alarms()
    return _report_chain(len(records), [(p.seq, p.problem) for p in problems])


def _report_chain(count: int, problems) -> int:
    if not problems:
        print(f"audit chain intact: {count} records")
        return 0
    print(f"audit chain BROKEN: {len(problems)} problems in {count} records")
    for seq, problem in problems:
        print(f"  seq {seq}: {problem}")
    return 4


@client_command("health")
def health(**connection) -> int:
    """Exit 0 when the server answers SERVING on the gRPC health service (container HEALTHCHECK).
    With --tls-dir and no --identity only ca.crt is needed: the server's --token-listen port."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from vault_client.connection import open_channel

    with open_channel(connection_settings(connection, server_only=True)) as channel:
        status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status
    print(health_pb2.HealthCheckResponse.ServingStatus.Name(status))
    return 0 if status == health_pb2.HealthCheckResponse.SERVING else 1


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return its exit code (see EXIT_CODES)."""
    try:
        code = cli.main(args=argv, prog_name="vault", standalone_mode=False)
    except click.exceptions.Exit as done:  # --help
        return done.exit_code
    except click.ClickException as error:  # bad usage or settings: 2
        error.show()
        return error.exit_code
    except click.Abort:
        return 1
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
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
