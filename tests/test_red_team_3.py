"""Issue 24 (red team, third round): each attack replayed as the attacker runs it, through the gRPC
API of a loopback server (the real VaultServer assembly: key file, anchor, ledgers, interceptor; fixed
vectors stand in for dlib, tests/doubles.py), the `vault` CLI, or the files a thief can read or write."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from conftest import ROOT, deterministic_key_file
from doubles import VectorExtractor, sample_bytes
from vault.access.lockout import Limits
from vault.server import Settings, VaultServer
from vault_client.v1 import vault_pb2 as pb
from vault_client.v1 import vault_pb2_grpc

NO_LOCKOUT = Limits(per_subject=1_000_000, per_client=1_000_000)


def run(coroutine):
    return asyncio.run(coroutine)


@contextlib.asynccontextmanager
async def loopback_vault(state: Path, key_file: Path, **overrides):
    """A VaultServer as `vault serve --plaintext` assembles it, on a free loopback port, with the
    fixed-vector extractor: yields (server, channel)."""
    settings = Settings(state_dir=state, listen=overrides.pop("listen", "127.0.0.1:0"), plaintext=True,
                        key_file=key_file, key_passphrase=None, limits=overrides.pop("limits", NO_LOCKOUT),
                        **overrides)
    server = VaultServer(settings)
    server.extractor.close()  # its worker processes never started
    server.extractor = server.vault.extractor = VectorExtractor()
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        yield server, channel
    finally:
        await channel.close()
        await server.stop()


def bearer(token: str):
    return (("authorization", f"Bearer {token}"),)


def face(person: str, shot: int) -> pb.Sample:
    return pb.Sample(image=sample_bytes(person, shot))


def cli(*args: str, timeout: float = 120, **env) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_KEY_PASSPHRASE", "VAULT_TOKEN"))}
    return subprocess.run([sys.executable, "-m", "vault.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout, env={**environment, **env})


@pytest.fixture
def site(tmp_path):
    """A state directory and a key file beside it (not inside: as a deployment keeps them)."""
    key_file = deterministic_key_file(tmp_path / "keys" / "keys.json")
    return tmp_path / "state", key_file


# -- finding 4: a cut audit tail stays visible however many records follow ---------------------------
def test_audit_tail_deleted_then_buried_under_new_records_is_still_reported(site):
    state, key_file = site

    async def main():
        async with loopback_vault(state, key_file) as (server, channel):
            admin, audit = vault_pb2_grpc.AdminStub(channel), vault_pb2_grpc.AuditStub(channel)
            for n in range(10):
                await admin.CreateToken(pb.CreateTokenRequest(role="panel", name=f"door-{n}"))
            assert (await audit.VerifyAudit(pb.VerifyAuditRequest())).intact
            # The attacker, with write access to the database, deletes the newest 5 records...
            db = sqlite3.connect(state / "vault.db")
            db.execute("DELETE FROM audit WHERE seq > (SELECT max(seq) FROM audit) - 5")
            db.commit()
            db.close()
            # ... and waits while the vault appends more than 5 new ones over the cut.
            for n in range(8):
                await admin.CreateToken(pb.CreateTokenRequest(role="panel", name=f"later-{n}"))
            result = await audit.VerifyAudit(pb.VerifyAuditRequest())
            assert not result.intact
            assert any("deleted from the end of the chain" in p.problem for p in result.problems)

    run(main())
    offline = cli("audit", "verify", "--state-dir", str(state), "--key-file", str(key_file))
    assert offline.returncode == 4 and "tail was cut" in offline.stdout, offline.stdout + offline.stderr


# -- finding 2: a revoked token stays revoked whatever happens to the database -----------------------
async def token_works(channel, token: str) -> bool:
    try:
        await vault_pb2_grpc.AdminStub(channel).ListTokens(pb.ListTokensRequest(), metadata=bearer(token))
        return True
    except grpc.aio.AioRpcError as error:
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED, error
        return False


def test_a_revoked_token_is_not_revived_by_an_old_row_or_a_restored_backup(site, tmp_path):
    state, key_file = site
    archive = tmp_path / "before-revocation.backup"

    async def issue_back_up_and_revoke():
        async with loopback_vault(state, key_file) as (server, channel):
            admin = vault_pb2_grpc.AdminStub(channel)
            created = await admin.CreateToken(pb.CreateTokenRequest(role="admin", name="ops"))
            assert await token_works(channel, created.token)
            db = sqlite3.connect(state / "vault.db")
            old_row = db.execute("SELECT secret_hash, revoked_at FROM tokens WHERE token_id = ?",
                                 (created.info.token_id,)).fetchone()
            backup = await asyncio.to_thread(cli, "backup", *backup_keys(key_file), "--state-dir", str(state),
                                             str(archive))
            assert backup.returncode == 0, backup.stderr
            await admin.RevokeToken(pb.RevokeTokenRequest(token_id=created.info.token_id))
            assert not await token_works(channel, created.token)
            # The attacker writes the row of the older copy back: its MAC is intact, revoked_at NULL.
            db.execute("UPDATE tokens SET secret_hash = ?, revoked_at = ? WHERE token_id = ?",
                       (*old_row, created.info.token_id))
            db.commit()
            db.close()
            assert not await token_works(channel, created.token)
            return created.token

    token = run(issue_back_up_and_revoke())
    # The backup from before the revocation restored into a fresh store, under the same key file.
    restored = tmp_path / "restored"
    restore = cli("restore", *backup_keys(key_file), "--state-dir", str(restored), str(archive))
    assert restore.returncode == 0, restore.stderr

    async def after_restore():
        async with loopback_vault(restored, key_file) as (server, channel):
            assert not await token_works(channel, token)

    run(after_restore())


def backup_keys(key_file: Path) -> tuple[str, ...]:
    """What `vault backup` and `vault restore` need to authenticate archives (finding 10)."""
    return ("--key-file", str(key_file))


# -- finding 8: a server on the wrong key file refuses to start ---------------------------------------
def test_a_server_on_another_key_file_refuses_to_start_instead_of_serving_nobody(site, tmp_path):
    from vault.exceptions import VaultError

    state, key_file = site

    async def enrol():
        async with loopback_vault(state, key_file) as (server, channel):
            stub = vault_pb2_grpc.VaultStub(channel)
            for person in ("ana", "ben", "cy"):
                await stub.Enroll(pb.EnrollRequest(subject_id=person, modality=pb.FACE, samples=[face(person, 1)]))

    run(enrol())
    other_keys = deterministic_key_file(tmp_path / "other-keys" / "keys.json", seed="another deployment")

    async def start_on(keys: Path):
        async with loopback_vault(state, keys):
            pass

    with pytest.raises(VaultError, match="3 live templates and none of them opens"):
        run(start_on(other_keys))
    with pytest.raises(VaultError, match="none of them opens"):  # a mistyped path: a fresh key file
        run(start_on(tmp_path / "typo" / "keys.json"))
    served = cli("serve", "--plaintext", "--state-dir", str(state), "--key-file", str(other_keys),
                 "--listen", "127.0.0.1:0", "--workers", "1", timeout=90)
    assert served.returncode == 2 and "none of them opens with the key file" in served.stderr, served.stderr
    run(start_on(key_file))  # the right key file still serves


# -- finding 9: a second server on a taken address refuses to start -----------------------------------
def test_a_second_vault_serve_on_the_same_address_refuses_to_start(site, tmp_path):
    from vault.exceptions import VaultError

    state, key_file = site

    async def main():
        async with loopback_vault(state, key_file) as (first, channel):
            address = f"127.0.0.1:{first.port}"
            intruder_keys = deterministic_key_file(tmp_path / "intruder-keys" / "keys.json", seed="intruder")
            with pytest.raises(VaultError, match="address is in use"):
                async with loopback_vault(tmp_path / "intruder", intruder_keys, listen=address):
                    pass
            second = await asyncio.to_thread(
                cli, "serve", "--plaintext", "--state-dir", str(tmp_path / "intruder-cli"), "--listen", address,
                "--workers", "1", timeout=90)
            assert second.returncode == 2 and "address is in use" in second.stderr, second.stderr
            # Every call still reaches the first server.
            health = await vault_pb2_grpc.AdminStub(channel).ListTokens(pb.ListTokensRequest())
            assert list(health.tokens) == []

    run(main())


# -- finding 10: archives are authenticated under the key store and written 0600 ----------------------
def test_an_edited_archive_with_its_checksum_recomputed_is_refused(site, tmp_path):
    import gzip
    import hashlib
    import json

    state, key_file = site

    async def enrol():
        async with loopback_vault(state, key_file) as (server, channel):
            stub = vault_pb2_grpc.VaultStub(channel)
            for person in ("ana", "ben"):
                await stub.Enroll(pb.EnrollRequest(subject_id=person, modality=pb.FACE, samples=[face(person, 1)]))
            await vault_pb2_grpc.AdminStub(channel).CreateToken(pb.CreateTokenRequest(role="panel", name="door"))

    run(enrol())
    archive = tmp_path / "nightly.backup"
    made = cli("backup", *backup_keys(key_file), "--state-dir", str(state), str(archive))
    assert made.returncode == 0, made.stderr
    # The thief of the backup volume edits it (here: an audit record's caller) and recomputes every
    # unkeyed digest the archive carries.
    lines = gzip.open(archive, "rt").read().splitlines(keepends=True)
    edited = [line.replace('"local-operator"', '"someone-else"') for line in lines[:-1]]
    assert edited != lines[:-1]
    trailer = json.loads(lines[-1])
    trailer["sha256"] = hashlib.sha256("".join(edited[1:]).encode()).hexdigest()
    forged = tmp_path / "forged.backup"
    with gzip.open(forged, "wt") as out:
        out.writelines(edited + [json.dumps(trailer) + "\n"])
    restored = tmp_path / "restored"
    refused = cli("restore", *backup_keys(key_file), "--state-dir", str(restored), str(forged))
    assert refused.returncode != 0 and "not authenticated" in refused.stderr, refused.stdout + refused.stderr
    assert sqlite3.connect(restored / "vault.db").execute("SELECT count(*) FROM audit").fetchone() == (0,)
    # The honest archive restores with its key file, and with no other.
    other_keys = deterministic_key_file(tmp_path / "other" / "keys.json", seed="another deployment")
    foreign = cli("restore", "--key-file", str(other_keys), "--state-dir", str(tmp_path / "foreign"), str(archive))
    assert foreign.returncode != 0 and "another deployment" in foreign.stderr, foreign.stderr
    honest = cli("restore", *backup_keys(key_file), "--state-dir", str(tmp_path / "honest"), str(archive))
    assert honest.returncode == 0 and "2 templates" in honest.stdout, honest.stderr


def test_backup_archives_and_key_side_files_are_written_0600(site, tmp_path):
    state, key_file = site

    async def use():
        async with loopback_vault(state, key_file) as (server, channel):
            await vault_pb2_grpc.AdminStub(channel).CreateToken(pb.CreateTokenRequest(role="panel", name="door"))

    previous = os.umask(0o022)  # an ordinary login's umask: files are world-readable unless made otherwise
    try:
        run(use())
        archive = tmp_path / "nightly.backup"
        made = cli("backup", *backup_keys(key_file), "--state-dir", str(state), str(archive))
    finally:
        os.umask(previous)
    assert made.returncode == 0, made.stderr
    readable = {path.name: oct(path.stat().st_mode & 0o777) for path in
                (archive, key_file, Path(f"{key_file}.audit-head"), Path(f"{key_file}.shred.db"), state / "vault.db")
                if path.stat().st_mode & 0o077}
    assert readable == {}


# -- finding 10c: no token in settings files, none sent in the clear -----------------------------------
@contextlib.contextmanager
def listening_in_the_clear():
    """A plaintext gRPC endpoint that records the metadata of every call it gets (what anyone on the
    path, or a program holding the port, reads): yields (address, metadata seen)."""
    from concurrent.futures import ThreadPoolExecutor

    seen: list[dict] = []

    class Recorder(grpc.GenericRpcHandler):
        def service(self, details):
            seen.append(dict(details.invocation_metadata))
            return None  # UNIMPLEMENTED

    server = grpc.server(ThreadPoolExecutor(2), handlers=[Recorder()])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", seen
    finally:
        server.stop(None)


def test_a_token_is_never_sent_over_a_plaintext_channel():
    from vault_client import Settings, VaultClient, errors

    token = "vt_0123456789abcdef.the-secret-part-of-a-real-token"
    with listening_in_the_clear() as (address, seen):
        listed = cli("list", "--server", address, "--token", token, timeout=60)
        assert listed.returncode == 2 and "plaintext channel" in listed.stderr, listed.stdout + listed.stderr
        with pytest.raises(errors.InsecureToken, match="plaintext channel"):
            with VaultClient(Settings(address, token=token)) as vault:
                vault.list_templates()
        assert not [m for m in seen if "authorization" in m]
        # Without a token, plaintext (loopback development) still calls out as before.
        assert cli("list", "--server", address, timeout=60).returncode == 1 and seen


def test_a_settings_file_holding_a_token_is_refused(tmp_path):
    config = tmp_path / "vault.toml"
    config.write_text('[client]\nserver = "127.0.0.1:1"\ntoken = "vt_0123456789abcdef.secret"\n')
    refused = cli("--config", str(config), "list", timeout=60)
    assert refused.returncode == 2 and "never go in a settings file" in refused.stderr, refused.stdout + refused.stderr


# -- finding 2, second part: tokens expire -------------------------------------------------------------
def test_tokens_expire_and_a_database_write_does_not_extend_them(site):
    import time

    state, key_file = site

    async def main():
        async with loopback_vault(state, key_file) as (server, channel):
            admin = vault_pb2_grpc.AdminStub(channel)
            default = await admin.CreateToken(pb.CreateTokenRequest(role="admin", name="default-life"))
            lifetime = default.info.expires_at.seconds - default.info.created_at.seconds
            assert 90 * 86400 - 2 <= lifetime <= 90 * 86400 + 1
            short = await admin.CreateToken(pb.CreateTokenRequest(role="admin", name="short", expires_in_seconds=60))
            assert await token_works(channel, short.token)
            # The attacker with write access to the database pushes the expiry out by a year.
            db = sqlite3.connect(state / "vault.db")
            db.execute("UPDATE tokens SET expires_at = expires_at + 31536000 WHERE token_id = ?", (short.info.token_id,))
            db.commit()
            db.close()
            assert not await token_works(channel, short.token)
            # Honest rows past their expiry are refused too (the clock moved on 61 s).
            later = await admin.CreateToken(pb.CreateTokenRequest(role="admin", name="later", expires_in_seconds=60))
            assert await token_works(channel, later.token)
            server.tokens.clock = lambda: time.time() + 61
            assert not await token_works(channel, later.token) and await token_works(channel, default.token)
            for bad in (-5, 59, 10 * 365 * 86400):
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await admin.CreateToken(pb.CreateTokenRequest(role="panel", name="x", expires_in_seconds=bad))
                assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            created = await asyncio.to_thread(cli, "token", "create", "--server", f"127.0.0.1:{server.port}",
                                              "--role", "panel", "--name", "gate-3", "--expires-in", "2h")
            assert created.returncode == 0 and "expires" in created.stdout, created.stderr
            listed = await admin.ListTokens(pb.ListTokensRequest())
            gate = [t for t in listed.tokens if t.name == "gate-3"]
            assert len(gate) == 1 and gate[0].expires_at.seconds - gate[0].created_at.seconds in (7199, 7200)

    run(main())


# -- finding 3: revoke = erase on PostgreSQL, dead tuples and WAL included ------------------------------
def pageinspect(admin_url: str):
    """A superuser connection with pageinspect, as the attacker who reached the database server has."""
    import psycopg

    conn = psycopg.connect(admin_url, autocommit=True)
    try:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pageinspect")
    except psycopg.errors.UniqueViolation:  # another test process created it at the same moment
        pass
    return conn


def relation_pages(conn, relation: str) -> list[bytes]:
    """Every raw page of a relation and of its TOAST table: live rows, dead tuples, free space."""
    toast = conn.execute("SELECT reltoastrelid::regclass::text FROM pg_class WHERE oid = %s::regclass AND "
                         "reltoastrelid <> 0", (relation,)).fetchone()
    pages = []
    for name in (relation, *(toast or ())):
        blocks = conn.execute("SELECT pg_relation_size(%s::regclass) / current_setting('block_size')::int",
                              (name,)).fetchone()[0]
        pages += [bytes(conn.execute("SELECT get_raw_page(%s, %s)", (name, b)).fetchone()[0]) for b in range(blocks)]
    return pages


def tuple_columns(conn, relation: str) -> list[list[bytes | None]]:
    """Each tuple on the relation's pages, live or dead (pageinspect), as raw column values."""
    def unvarlena(raw):
        if raw is None:
            return None
        raw = bytes(raw)
        return raw[1:] if raw[0] & 1 else raw[4:]  # 1-byte or 4-byte varlena header (little-endian)

    found = []
    blocks = conn.execute("SELECT pg_relation_size(%s::regclass) / current_setting('block_size')::int",
                          (relation,)).fetchone()[0]
    for block in range(blocks):
        for (columns,) in conn.execute(
                "SELECT tuple_data_split(%s::regclass, t_data, t_infomask, t_infomask2, t_bits) "
                "FROM heap_page_items(get_raw_page(%s, %s)) WHERE t_data IS NOT NULL", (relation, relation, block)):
            found.append([unvarlena(c) if i < 3 else c for i, c in enumerate(columns)])
    return found


def wal_since(conn, start_file: str) -> bytes:
    """The WAL segments written since `start_file` (pg_read_binary_file: a superuser's read of pg_wal)."""
    names = [n for (n,) in conn.execute("SELECT name FROM pg_ls_waldir() WHERE name ~ '^[0-9A-F]{24}$' "
                                        "AND name >= %s ORDER BY name", (start_file,))]
    return b"".join(bytes(conn.execute("SELECT pg_read_binary_file(%s)", (f"pg_wal/{n}",)).fetchone()[0])
                    for n in names)


@pytest.mark.postgres
def test_a_revoked_template_does_not_open_from_postgresql_dead_tuples_toast_or_wal(site):
    from benchmarks.postgres_scratch import scratch_schema
    from tests.test_store import postgres_admin_url
    from vault.core import row_identity
    from vault.exceptions import VaultError
    from vault.custody.keys import LocalKeyFile
    from vault.templates.profiles import PROFILES
    from vault.templates.protection import Protector

    state, key_file = site
    admin_url = postgres_admin_url()
    attacker = pageinspect(admin_url)
    wal_start = attacker.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()[0]
    with scratch_schema(admin_url, prefix="vault_rt3_data") as store_url, \
            scratch_schema(admin_url, prefix="vault_rt3_keys") as ledger_url:
        data_schema = store_url.rsplit("%3D", 1)[1]
        ledger_schema = ledger_url.rsplit("%3D", 1)[1]

        async def enrol_and_revoke():
            async with loopback_vault(state, key_file, store_url=store_url, shred_store=ledger_url) as (server, channel):
                stub = vault_pb2_grpc.VaultStub(channel)
                ids = {}
                for person in ("ana", "ben", "cy"):
                    done = await stub.Enroll(pb.EnrollRequest(subject_id=person, modality=pb.FACE,
                                                              samples=[face(person, 1)]))
                    ids[person] = done.template_id
                before = server.store.get("default", ids["ana"])
                secret = server.shreds.secrets([ids["ana"]])[ids["ana"]]
                await stub.Revoke(pb.RevokeRequest(template_id=ids["ana"], reason="left"))
                await stub.Revoke(pb.RevokeRequest(template_id=ids["cy"], reason="left"))
                assert (await stub.Verify(pb.VerifyRequest(subject_id="ben", modality=pb.FACE,
                                                           probe=face("ben", 2)))).decision == pb.MATCH
                return ids, before, secret

        ids, before, secret = run(enrol_and_revoke())
        attacker.execute("CHECKPOINT")
        # The attacker holds the database server (superuser: pageinspect, pg_wal) and, later, the key
        # file as it is now. The revoked row's old salt and sealed code are still in a dead tuple:
        template_pages = relation_pages(attacker, f"{data_schema}.templates")
        assert any(before.sealed[12:60] in page for page in template_pages)
        # ... and so is every version of the ledger's rows for that template.
        candidates = [cols[2] for cols in tuple_columns(attacker, f"{ledger_schema}.shred_secrets")
                      if cols[0] == ids["ana"].encode()]
        assert candidates, "the ledger's dead tuple of the revoked template is gone (vacuumed?)"
        stolen_keys = LocalKeyFile(key_file)
        key = stolen_keys.tenant_key("default", before.key_version)

        def opens(shred: bytes | None) -> bool:
            try:
                Protector().unseal(key, row_identity(before), PROFILES[before.profile], before.salt, before.sealed,
                                   shred)
                return True
            except VaultError:
                return False

        assert not any(opens(c) for c in candidates), "the revoked template opened from a dead ledger tuple"
        # The ledger holds secrets wrapped under epoch keys kept on the key side; the epoch that
        # wrapped the revoked template's secret was destroyed with its revocation.
        from vault.custody.shredding import bucket_of, unwrap

        bucket = bucket_of(ids["ana"])
        epochs = stolen_keys.shred_epochs(bucket)
        for blob in candidates:
            for epoch, epoch_key in epochs.items():
                assert unwrap(epoch_key, ids["ana"], "default", bucket, epoch, blob) is None
        # Not in clear anywhere: ledger pages (live, dead, free space), TOAST, or the WAL since the start.
        assert not any(secret in page for page in relation_pages(attacker, f"{ledger_schema}.shred_secrets"))
        assert secret not in wal_since(attacker, wal_start)

        # The live template still opens after its bucket's epochs were rotated (a restart reads it back).
        async def restart():
            async with loopback_vault(state, key_file, store_url=store_url, shred_store=ledger_url) as (server, channel):
                stub = vault_pb2_grpc.VaultStub(channel)
                assert (await stub.Verify(pb.VerifyRequest(subject_id="ben", modality=pb.FACE,
                                                           probe=face("ben", 3)))).decision == pb.MATCH
                assert (await stub.Verify(pb.VerifyRequest(subject_id="ana", modality=pb.FACE,
                                                           probe=face("ana", 3)))).decision == pb.NO_MATCH

        run(restart())
    attacker.close()


# -- finding 6: no template-id liveness oracle ------------------------------------------------------------
def test_verify_by_template_id_answers_alike_for_live_unknown_and_revoked_ids(site):
    state, key_file = site

    async def main():
        limits = Limits(per_subject=5, per_client=1_000_000)
        async with loopback_vault(state, key_file, limits=limits) as (server, channel):
            stub, audit = vault_pb2_grpc.VaultStub(channel), vault_pb2_grpc.AuditStub(channel)
            touches = [pb.Sample(iso_19794_2=sample_bytes(f"dee-{n}", 1)) for n in range(2)]
            live = (await stub.Enroll(pb.EnrollRequest(subject_id="dee", modality=pb.FINGERPRINT, finger=2,
                                                       samples=touches))).template_id
            revoked = (await stub.Enroll(pb.EnrollRequest(subject_id="eve", modality=pb.FINGERPRINT, finger=2,
                                                          samples=touches))).template_id
            await stub.Revoke(pb.RevokeRequest(template_id=revoked, reason="test"))
            unknown = "0" * 32
            probe = pb.Sample(iso_19794_2=sample_bytes("mallory", 1))  # modality left unset, as the attacker did
            seen = {}
            for name, template_id in (("live", live), ("unknown", unknown), ("revoked", revoked)):
                answers = []
                for _ in range(6):
                    try:
                        reply = await stub.Verify(pb.VerifyRequest(template_id=template_id, probe=probe))
                        answers.append(("OK", pb.Decision.Name(reply.decision), bool(reply.decision_id)))
                    except grpc.aio.AioRpcError as error:
                        answers.append((error.code().name, dict(error.trailing_metadata() or ()).get("vault-reason")))
                seen[name] = answers
            assert seen["live"] == seen["unknown"] == seen["revoked"], seen
            assert seen["live"] == [("OK", "NO_MATCH", True)] * 5 + [("RESOURCE_EXHAUSTED", "locked-out")]
            records = [r async for r in audit.ReadAudit(pb.ReadAuditRequest())]
            for template_id in (live, unknown, revoked):
                verdicts = [r.decision for r in records if r.rpc == "Verify" and r.template_id == template_id]
                assert verdicts == ["NO_MATCH"] * 5, (template_id, verdicts)
            assert sum(r.rpc == "Lockout" for r in records) == 3

    run(main())


# -- start-up sweep: the right keys on an empty or another store destroy nothing --------------------------
def test_a_start_on_an_empty_or_foreign_store_does_not_shred_the_ledger(site, tmp_path):
    state, key_file = site

    async def enrol(where: Path, people):
        async with loopback_vault(where, key_file) as (server, channel):
            stub = vault_pb2_grpc.VaultStub(channel)
            for person in people:
                await stub.Enroll(pb.EnrollRequest(subject_id=person, modality=pb.FACE, samples=[face(person, 1)]))

    run(enrol(state, ("ana", "ben", "cy")))
    ledger = sqlite3.connect(f"{key_file}.shred.db")  # two hours later: past the sweep's grace period
    ledger.execute("UPDATE shred_secrets SET created_at = created_at - 7200")
    ledger.commit()
    ledger.close()
    # The operator starts on the right key file but a mistyped state directory (a new, empty store),
    # then on another store sealed under the same keys (a test site's).
    run(enrol(tmp_path / "mistyped-state", ()))
    run(enrol(tmp_path / "test-site", ("zed",)))
    run(enrol(tmp_path / "test-site", ()))  # restarted: its start-up sweep runs against the foreign store

    async def back_on_the_right_store():
        async with loopback_vault(state, key_file) as (server, channel):
            stub = vault_pb2_grpc.VaultStub(channel)
            for person in ("ana", "ben", "cy"):
                reply = await stub.Verify(pb.VerifyRequest(subject_id=person, modality=pb.FACE, probe=face(person, 2)))
                assert reply.decision == pb.MATCH, person

    run(back_on_the_right_store())


# -- finding 7: failed extractions are spent from the client's budget, and no client takes every worker --
def test_probes_without_a_face_are_counted_and_end_in_a_lockout(site):
    from doubles import NO_SIGNAL

    state, key_file = site

    async def main():
        async with loopback_vault(state, key_file, limits=Limits(per_subject=5, per_client=10)) as (server, channel):
            stub, audit = vault_pb2_grpc.VaultStub(channel), vault_pb2_grpc.AuditStub(channel)
            await stub.Enroll(pb.EnrollRequest(subject_id="ana", modality=pb.FACE, samples=[face("ana", 1)]))
            answers = []
            for n in range(12):  # the attacker's large images without a face: seconds of a worker each
                request = (pb.VerifyRequest(subject_id="ana", modality=pb.FACE, probe=pb.Sample(image=NO_SIGNAL))
                           if n % 2 else pb.IdentifyRequest(modality=pb.FACE, probe=pb.Sample(image=NO_SIGNAL)))
                try:
                    await (stub.Verify if n % 2 else stub.Identify)(request)
                    answers.append("OK")
                except grpc.aio.AioRpcError as error:
                    answers.append(f"{error.code().name}/{dict(error.trailing_metadata() or ()).get('vault-reason')}")
            assert answers == ["FAILED_PRECONDITION/None"] * 10 + ["RESOURCE_EXHAUSTED/locked-out"] * 2, answers
            records = [r async for r in audit.ReadAudit(pb.ReadAuditRequest())]
            assert [r.decision for r in records if r.rpc == "Lockout"] == ["LOCKED_OUT"]

    run(main())


def test_one_client_with_costly_samples_cannot_starve_another_of_extraction_workers(site):
    import time
    from concurrent.futures import ProcessPoolExecutor
    import multiprocessing

    from doubles import SLOW_NO_FACE, timed_extract
    from vault.access.auth import PANEL, Identity
    from vault.core import IMAGE, Sample
    from vault.exceptions import PoorSample
    from vault.intake.extraction import Extractor

    class ModelFreeExtractor(Extractor):
        """The real pool (worker processes, queue bound, fair share) running timed_extract."""

        work = staticmethod(timed_extract)

        def _new_pool(self):
            return ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))

    state, key_file = site
    attacker, door = (Identity("default", frozenset({PANEL}), name) for name in ("attacker", "door-7"))

    async def main():
        async with loopback_vault(state, key_file) as (server, channel):
            extractor = ModelFreeExtractor(workers=2)
            await asyncio.to_thread(extractor.warm)
            server.vault.extractor = extractor
            try:
                await vault_pb2_grpc.VaultStub(channel).Enroll(
                    pb.EnrollRequest(subject_id="ana", modality=pb.FACE, samples=[face("ana", 1)]))

                async def flood():
                    try:
                        await server.vault.verify(attacker, Sample(IMAGE, SLOW_NO_FACE), subject_id="ana", modality=1)
                    except PoorSample:
                        pass

                attack = [asyncio.create_task(flood()) for _ in range(8)]  # 4 threads x 2, as the red team ran
                await asyncio.sleep(0.3)
                started = time.perf_counter()
                answer = await server.vault.verify(door, Sample(IMAGE, sample_bytes("ana", 2)), subject_id="ana",
                                                   modality=1)
                waited = time.perf_counter() - started
                await asyncio.gather(*attack)
            finally:
                extractor.close()
            assert answer.matched
            # Without a fair share the door's sample queues behind the attacker's eight (1.5 s each
            # on two workers: ~6 s); with it, a worker is free for the door at once.
            assert waited < 1.2, f"the door waited {waited:.1f} s for a worker"

    run(main())


# -- finding 5: hill-climbing on score bands, and answers that count toward no limit ---------------------
def test_a_climb_on_score_bands_gets_no_gradient_and_every_answer_is_spent(site):
    import numpy as np

    from doubles import VectorExtractor

    state, key_file = site

    async def main():
        async with loopback_vault(state, key_file, allow_face_embeddings=True, auditor_score_bands=True,
                                  limits=Limits(per_subject=1_000_000, per_client=40)) as (server, channel):
            stub = vault_pb2_grpc.VaultStub(channel)
            await stub.Enroll(pb.EnrollRequest(subject_id="ana", modality=pb.FACE, samples=[face("ana", 1)]))
            # A genuine probe still gets its band, and that answer is spent from the budget too.
            auditor_view = [await stub.Verify(pb.VerifyRequest(subject_id="ana", modality=pb.FACE, probe=face("ana", n)))
                            for n in (2, 3)]
            assert all(r.decision == pb.MATCH and 1 <= r.score_band <= 10 for r in auditor_view)
            # The auditor climbs from another person's face, keeping a step when the band rises.
            start, _ = VectorExtractor().vector(pb.FACE, "image", sample_bytes("mallory", 1))
            rng = np.random.default_rng(7)
            x, best, bands, calls = start, 0, [], 0
            while True:
                step = x + 0.15 * rng.standard_normal(x.shape) / np.sqrt(x.size)
                try:
                    reply = await stub.Verify(pb.VerifyRequest(
                        subject_id="ana", modality=pb.FACE,
                        probe=pb.Sample(face_embedding=pb.FaceEmbedding(values=step.tolist()))))
                except grpc.aio.AioRpcError as error:
                    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                    break
                calls += 1
                assert reply.decision == pb.NO_MATCH
                bands.append(reply.score_band)
                if reply.score_band > best:
                    x, best = step, reply.score_band
            assert set(bands) == {0}, "a NO_MATCH disclosed a score band: a gradient to climb"
            assert calls == 40 - 2  # the per-client budget (less the two banded matches) ends the climb

    run(main())


def test_identify_answers_with_candidates_are_spent_from_the_client_budget(site):
    state, key_file = site

    async def main():
        async with loopback_vault(state, key_file, limits=Limits(per_subject=5, per_client=6)) as (server, channel):
            stub = vault_pb2_grpc.VaultStub(channel)
            for person in ("ana", "ben"):
                await stub.Enroll(pb.EnrollRequest(subject_id=person, modality=pb.FACE, samples=[face(person, 1)]))
            named = []
            for n in range(10):  # the red team learnt 7 subject ids with 120 calls that counted for nothing
                try:
                    found = await stub.Identify(pb.IdentifyRequest(modality=pb.FACE, probe=face("ana", n + 2)))
                    named.append([c.subject_id for c in found.candidates])
                except grpc.aio.AioRpcError as error:
                    assert dict(error.trailing_metadata() or ()).get("vault-reason") == "locked-out"
                    named.append("locked-out")
            assert named == [["ana"]] * 6 + ["locked-out"] * 4, named

    run(main())


# -- finding 10: enrolment told by timing, look-alike subject ids ----------------------------------------
def test_a_verify_for_an_unknown_subject_transforms_the_probe_as_an_enrolled_ones_does(site):
    """The timing attack measured the probe's transform (~3 ms) that only an enrolled subject's
    Verify paid; the attack's signal is that work, counted here per Verify."""
    state, key_file = site

    async def main():
        async with loopback_vault(state, key_file) as (server, channel):
            stub = vault_pb2_grpc.VaultStub(channel)
            await stub.Enroll(pb.EnrollRequest(subject_id="ann", modality=pb.FACE, samples=[face("ann", 1)]))
            enrolled = (await stub.Enroll(pb.EnrollRequest(subject_id="bob", modality=pb.FACE,
                                                           samples=[face("bob", 1)]))).template_id
            await stub.Revoke(pb.RevokeRequest(template_id=enrolled, reason="test"))
            protector, transforms = server.vault.protector, []
            protect = protector.protect
            protector.protect = lambda *args, **kwargs: transforms.append(1) or protect(*args, **kwargs)
            counts = {}
            for name, request in (("enrolled", pb.VerifyRequest(subject_id="ann", modality=pb.FACE)),
                                  ("unknown", pb.VerifyRequest(subject_id="nobody", modality=pb.FACE)),
                                  ("revoked template", pb.VerifyRequest(template_id=enrolled, modality=pb.FACE))):
                transforms.clear()
                request.probe.CopyFrom(face("mallory", 1))
                assert (await stub.Verify(request)).decision == pb.NO_MATCH
                counts[name] = len(transforms)
            assert counts == {"enrolled": 1, "unknown": 1, "revoked template": 1}, counts

    run(main())


def test_a_look_alike_subject_id_is_refused_and_a_full_width_one_is_the_same_person(site):
    state, key_file = site

    async def main():
        async with loopback_vault(state, key_file) as (server, channel):
            stub = vault_pb2_grpc.VaultStub(channel)
            await stub.Enroll(pb.EnrollRequest(subject_id="alice", modality=pb.FACE, samples=[face("alice", 1)]))
            with pytest.raises(grpc.aio.AioRpcError) as refused:  # a Cyrillic "а" before "lice"
                await stub.Enroll(pb.EnrollRequest(subject_id="\u0430lice", modality=pb.FACE,
                                                   samples=[face("mallory", 1)]))
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "several scripts" in refused.value.details()
            verdict = await stub.Verify(pb.VerifyRequest(subject_id="\uff41\uff4c\uff49\uff43\uff45", modality=pb.FACE,
                                                         probe=face("alice", 2)))
            assert verdict.decision == pb.MATCH  # NFKC: full-width "ａｌｉｃｅ" is "alice"
            japanese = await stub.Enroll(pb.EnrollRequest(subject_id="山田たろう", modality=pb.FACE,
                                                          samples=[face("taro", 1)]))
            assert japanese.template_id  # scripts one name is written in together stay allowed

    run(main())
