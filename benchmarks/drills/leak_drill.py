"""The leak drill: play the attacker of the seed breaches against a real deployment.

A vault is deployed in a temporary folder (mutual TLS, two tenants, real face images), people are
enrolled in both tenants under unrelated subject ids, some templates are reissued and tokens are
created. A backup is taken before the reissues revoke anything. The attacker then takes a copy of the database files and an online backup, and we measure
what the copy yields: images, feature vectors, templates in the clear, credentials in the clear,
linkage of one person's templates across tenants and across reissue, and whether the copy is of
any use to a second vault deployment (its own key store).

    uv run python -m benchmarks.drills.leak_drill [--data ../shared/data] [--people 30] [--keep FOLDER]

Exit status 5 when anything leaked. It deploys on research data (LFW), so it lives beside the
benchmarks, not in the product.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import shutil
import sqlite3
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np

from vault.custody import pki
from vault.core import Vault, row_identity
from vault.exceptions import VaultError
from vault.intake.extraction import IMAGE, extract
from vault.intake.features import fuse
from vault.custody.keys import LocalKeyFile
from vault.templates.profiles import CURRENT, FACE, PROFILES
from vault.templates.protection import Protector
from vault.server import Settings, VaultServer
from vault.custody.shredding import ledger_path, open_ledger
from vault.store import open_store
from vault_client.v1 import vault_pb2 as pb
from vault_client.v1 import vault_pb2_grpc


@dataclass
class DrillReport:
    people: int = 0
    rows_copied: int = 0
    images_found: int = 0
    feature_vectors_found: int = 0
    clear_templates_found: int = 0
    credentials_found: int = 0
    cross_tenant_linkage_auc: float = 0.0
    cross_tenant_linkage_z: float = 0.0  # standard deviations from chance (0.5)
    reissue_linkage_auc: float = 0.0
    reissue_linkage_z: float = 0.0
    revoked_rows_erased: int = 0
    key_file_in_state_dir: bool = False
    state_dir_rows_usable: int = 0  # templates a server started on the stolen state directory can match
    # A backup from before the revocations, opened later with the whole key store (file, passphrase, ledger):
    revoked_rows_opened_from_old_backup: int = 0  # revoke = erase: 0
    live_rows_opened_from_old_backup: int = 0  # the check's self-test: these do open
    unsealed_by_second_deployment: int = 0
    search_self_check: bool = False
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [
            f"people enrolled in two tenants: {self.people}; rows in the stolen copy: {self.rows_copied}",
            f"images recovered:                   {self.images_found}",
            f"feature vectors recovered:          {self.feature_vectors_found}",
            f"templates in the clear recovered:   {self.clear_templates_found}",
            f"credentials in the clear recovered: {self.credentials_found}",
            f"linkage across tenants (AUC, chance 0.5): {self.cross_tenant_linkage_auc:.3f} "
            f"(z {self.cross_tenant_linkage_z:+.1f})",
            f"linkage template/reissue (AUC, chance 0.5): {self.reissue_linkage_auc:.3f} "
            f"(z {self.reissue_linkage_z:+.1f})",
            f"revoked rows erased:                {self.revoked_rows_erased}",
            f"key file in the stolen state dir:   {'yes' if self.key_file_in_state_dir else 'no'}",
            f"templates a server on the stolen state dir can match: {self.state_dir_rows_usable}",
            f"pre-revocation backup + the whole key store stolen later: revoked rows opened "
            f"{self.revoked_rows_opened_from_old_backup} (live rows opened {self.live_rows_opened_from_old_backup})",
            f"templates a second deployment can unseal: {self.unsealed_by_second_deployment}",
            f"search self-check (each search finds its target in clear data): {'passed' if self.search_self_check else 'FAILED'}",
            *self.notes,
        ]


def windows(data: bytes, size: int, step: int) -> set[bytes]:
    """Every size-byte slice of data at step offsets: what a search of a stolen copy looks for."""
    return {data[i:i + size] for i in range(0, len(data) - size + 1, step)}


def linkage(mated: list[float], non_mated: list[float]) -> tuple[float, float]:
    """(AUC, z): AUC = P(mated score > non-mated score), ties counted half, 0.5 means no linkage;
    z = its distance from 0.5 in standard deviations of the Mann-Whitney statistic under chance
    (tie-corrected). With few people the AUC alone swings widely by chance (16 mated pairs: sd
    0.075), so a verdict reads z: |z| < 5 happens by chance with probability 1 - 6e-7."""
    mated, non_mated = np.asarray(mated, float), np.asarray(non_mated, float)
    m, n = mated[:, None], non_mated[None, :]
    auc = float(np.mean((m > n) + 0.5 * (m == n)))
    n1, n2 = len(mated), len(non_mated)
    total = n1 + n2
    _, ties = np.unique(np.concatenate([mated, non_mated]), return_counts=True)
    variance = n1 * n2 / 12 * ((total + 1) - float(np.sum(ties**3 - ties)) / (total * (total - 1)))
    z = (auc - 0.5) * n1 * n2 / np.sqrt(variance) if variance > 0 else 0.0
    return auc, float(z)


def _blob_similarity(a: bytes, b: bytes) -> float:
    """The best a keyless attacker can compare: equal bytes at equal offsets."""
    size = min(len(a), len(b))
    return float(np.mean(np.frombuffer(a[:size], np.uint8) == np.frombuffer(b[:size], np.uint8)))


def run(data_root: Path, people: int = 30, workers: int | None = None, keep: Path | None = None) -> DrillReport:
    folder = Path(keep or tempfile.mkdtemp(prefix="vault-leak-drill-"))
    try:
        return asyncio.run(_drill(data_root, people, workers, folder))
    finally:
        if keep is None:
            shutil.rmtree(folder, ignore_errors=True)


async def _drill(data_root: Path, count: int, workers: int | None, folder: Path) -> DrillReport:
    lfw = data_root / "face" / "lfw"
    persons = sorted(p.name for p in lfw.iterdir())[:count]
    images = {p: sorted((lfw / p).glob("*.jpg")) for p in persons}

    tls = folder / "pki"
    pki.init_ca(tls)
    pki.issue(tls, "server", server_hosts=["localhost", "127.0.0.1"])
    for tenant in ("hospital", "airport"):
        for role in ("enroller", "admin"):
            pki.issue(tls, f"{tenant}-{role}", tenant=tenant, role=role)
    state = folder / "deployment"
    # As the README deploys: the key file on its own volume, sealed under a passphrase from a secret
    # store; neither is in the state directory the thief copies.
    key_file = folder / "keys" / "keys.json"
    passphrase = secrets.token_urlsafe(24)
    server = VaultServer(Settings(state_dir=state, listen="127.0.0.1:0", tls_dir=tls, workers=workers,
                                  key_file=key_file, key_passphrase=passphrase))
    port = await server.start()

    def stub(identity: str, service: str = "Vault"):
        creds = grpc.ssl_channel_credentials((tls / "ca.crt").read_bytes(), (tls / f"{identity}.key").read_bytes(),
                                             (tls / f"{identity}.crt").read_bytes())
        channel = grpc.aio.secure_channel(f"localhost:{port}", creds)
        return getattr(vault_pb2_grpc, f"{service}Stub")(channel)

    report = DrillReport(people=len(persons))
    samples: dict[str, list[bytes]] = {}
    tenant_rows: dict[tuple[str, str], list[str]] = {}  # (tenant, person) -> template ids, oldest first
    tokens: list[str] = []
    try:
        hospital, airport = stub("hospital-enroller"), stub("airport-enroller")
        for number, person in enumerate(persons):
            first, second, third = (p.read_bytes() for p in images[person][:3])
            samples[person] = [first, second, third]
            # Unrelated subject ids in the two tenants, as two organisations would have.
            a = await hospital.Enroll(pb.EnrollRequest(subject_id=f"patient-{number:05d}", modality=pb.FACE, samples=[pb.Sample(image=first)]))
            b = await airport.Enroll(pb.EnrollRequest(subject_id=f"badge-{90000 - number}", modality=pb.FACE, samples=[pb.Sample(image=second)]))
            tenant_rows[("hospital", person)] = [a.template_id]
            tenant_rows[("airport", person)] = [b.template_id]
        # A nightly backup, online, before any revocation: it will outlive them.
        early_backup = folder / "early-backup.db"
        source, target = sqlite3.connect(state / "vault.db"), sqlite3.connect(early_backup)
        source.backup(target)
        source.close()
        target.close()
        for number, person in enumerate(persons):
            if number % 2 == 0:
                r = await hospital.Reissue(pb.ReissueRequest(template_id=tenant_rows[("hospital", person)][0],
                                                             samples=[pb.Sample(image=samples[person][2])], reason="drill"))
                tenant_rows[("hospital", person)].append(r.template_id)
        for tenant in ("hospital", "airport"):
            created = await stub(f"{tenant}-admin", "Admin").CreateToken(pb.CreateTokenRequest(role="panel", name="gate-1"))
            tokens.append(created.token)
    finally:
        await server.stop()

    # -- the attacker's copy: the database files, and an online backup ---------------------------
    loot = folder / "loot"
    loot.mkdir()
    for path in state.glob("vault.db*"):
        shutil.copy(path, loot / path.name)
    source = sqlite3.connect(state / "vault.db")
    backup = sqlite3.connect(loot / "backup.db")
    source.backup(backup)
    source.close()
    backup.close()
    stolen = b"".join(p.read_bytes() for p in sorted(loot.iterdir()))
    copy = sqlite3.connect(loot / "backup.db")
    rows = {tid: (bytes(salt), bytes(sealed)) for tid, salt, sealed in copy.execute("SELECT template_id, salt, sealed FROM templates")}
    report.rows_copied = len(rows)
    copy.close()

    # -- what the defender knows, to search the copy for ---------------------------------------
    image_needles, feature_needles, code_needles = set(), set(), set()
    keys = LocalKeyFile(key_file, passphrase)
    protector = Protector()
    profile = CURRENT[FACE]  # what the deployment enrolled with
    for person, blobs in samples.items():
        vectors = []
        for blob in blobs:
            image_needles |= windows(blob[len(blob) // 4:], 32, 512)
            vector = extract(FACE, IMAGE, blob, False)[0][CURRENT[FACE].features]
            vectors.append(vector)
            for dtype, size in (("<f4", 12), ("<f8", 16), ("<f2", 12)):
                feature_needles |= windows(vector.astype(dtype).tobytes(), size, 4)
        for tenant in ("hospital", "airport"):
            key = keys.tenant_key(tenant)
            for vector in vectors + [fuse(vectors)]:
                code = protector.protect(key, profile, vector)
                code_needles |= windows(code.astype("<u8").tobytes(), 16, 8)
    # Self-check: the search does find each kind of secret where it is in the clear.
    control = b"".join(b for blobs in samples.values() for b in blobs) + b"".join(
        extract(FACE, IMAGE, samples[persons[0]][0], False)[0][CURRENT[FACE].features].astype(dtype).tobytes() for dtype in ("<f4", "<f8", "<f2"))
    control += protector.protect(keys.tenant_key("hospital"), profile,
                                 extract(FACE, IMAGE, samples[persons[0]][0], False)[0][CURRENT[FACE].features]).astype("<u8").tobytes()
    report.search_self_check = all(any(n in control for n in needles) for needles in (image_needles, feature_needles, code_needles))
    report.images_found = sum(n in stolen for n in image_needles)
    report.feature_vectors_found = sum(n in stolen for n in feature_needles)
    report.clear_templates_found = sum(n in stolen for n in code_needles)
    report.credentials_found = sum(t.split(".", 1)[1].encode() in stolen for t in tokens)

    # -- linkage with the database only: compare sealed rows --------------------------------------
    def similarity(a: str, b: str) -> float:
        return _blob_similarity(rows[a][0] + rows[a][1], rows[b][0] + rows[b][1])

    # Each person's live rows (a reissued person's original row is revoked, and erased).
    mated = [similarity(tenant_rows[("hospital", p)][-1], tenant_rows[("airport", p)][0]) for p in persons]
    non_mated = [similarity(tenant_rows[("hospital", p)][-1], tenant_rows[("airport", q)][0])
                 for p, q in itertools.permutations(persons, 2)]
    report.cross_tenant_linkage_auc, report.cross_tenant_linkage_z = linkage(mated, non_mated)
    reissued = [p for p in persons if len(tenant_rows[("hospital", p)]) == 2]
    revoked = [tenant_rows[("hospital", p)][0] for p in reissued]
    report.revoked_rows_erased = sum(rows[t] == (b"", b"") for t in revoked)
    if report.revoked_rows_erased < len(revoked):  # what is left of revoked rows, linked to their reissues
        mated = [similarity(*tenant_rows[("hospital", p)]) for p in reissued]
        non_mated = [similarity(tenant_rows[("hospital", p)][0], tenant_rows[("hospital", q)][1])
                     for p, q in itertools.permutations(reissued, 2)]
        report.reissue_linkage_auc, report.reissue_linkage_z = linkage(mated, non_mated)
    else:
        report.reissue_linkage_auc, report.reissue_linkage_z = 0.5, 0.0
        report.notes.append("revoked rows are erased (no salt, no sealed code): nothing links them to their reissues")

    # -- the whole state directory, served by the thief ----------------------------------------
    stolen_state = loot / "state"
    shutil.copytree(state, stolen_state)
    report.key_file_in_state_dir = any(p.name.startswith("keys.json") and not p.name.endswith(".audit-head")
                                       for p in stolen_state.rglob("*"))
    thief_keys = LocalKeyFile(stolen_state / "keys.json")  # what `vault serve --plaintext` on the copy makes
    thief_store = open_store(f"sqlite:///{stolen_state / 'vault.db'}", thief_keys.audit_key())
    report.state_dir_rows_usable, _ = Vault(thief_store, thief_keys, extractor=None).load_index()
    thief_store.close()

    # -- years later, the key store leaks too (key file, passphrase, shred ledger): what opens in
    # the backup taken before the revocations? ---------------------------------------------------
    stolen_keys = LocalKeyFile(key_file, passphrase)
    ledger = open_ledger(ledger_path(key_file), stolen_keys)
    old_store = open_store(f"sqlite:///{early_backup}", stolen_keys.audit_key())
    revoked_ids = {tenant_rows[("hospital", p)][0] for p in reissued}
    shred_secrets = ledger.secrets()  # the whole stolen ledger
    for row in old_store.live_rows():
        try:
            Protector().unseal(stolen_keys.tenant_key(row.tenant, row.key_version), row_identity(row),
                               PROFILES[row.profile], row.salt, row.sealed, shred_secrets.get(row.template_id))
            opened = True
        except VaultError:
            opened = False
        if row.template_id in revoked_ids:
            report.revoked_rows_opened_from_old_backup += opened
        else:
            report.live_rows_opened_from_old_backup += opened
    old_store.close()
    ledger.close()

    # -- the copy in a second deployment: same tenant names, its own key store -------------------
    other_keys = LocalKeyFile(folder / "second" / "keys.json")
    for tenant in ("hospital", "airport"):
        other_keys.ensure_tenant(tenant)
    other = Protector()
    store = open_store(f"sqlite:///{loot / 'backup.db'}", other_keys.audit_key())
    for row in store.live_rows():
        try:
            other.unseal(other_keys.tenant_key(row.tenant, row.key_version), row_identity(row), PROFILES[row.profile],
                         row.salt, row.sealed)
            report.unsealed_by_second_deployment += 1
        except VaultError:
            pass
    store.close()
    report.notes.append("metadata the copy does reveal: tenant names, subject ids, template ids, timestamps, "
                        "statuses, key versions, the audit trail (ids and decisions)")
    return report


def main(argv=None) -> int:
    import argparse
    import logging

    parser = argparse.ArgumentParser(description="deploy a vault in a temp dir, steal its database, report what leaks")
    parser.add_argument("--data", type=Path, default=Path("../shared/data"), help="the shared research data (default: %(default)s)")
    parser.add_argument("--people", type=int, default=30, help="people enrolled in both tenants (default: %(default)s)")
    parser.add_argument("--keep", type=Path, default=None, help="keep the deployment and loot in this folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    report = run(args.data, args.people, keep=args.keep)
    print("\n".join(report.lines()))
    leaked = (report.images_found + report.feature_vectors_found + report.clear_templates_found
              + report.credentials_found + report.unsealed_by_second_deployment)
    return 0 if leaked == 0 else 5


if __name__ == "__main__":
    raise SystemExit(main())
