"""End to end: tenants spread over three replica groups (issue 27), real `vault serve --group`
processes on loopback, mutual TLS, one PostgreSQL database.

Three groups of one replica each, two tenants a group. Every Verify and Identify goes through the
client package's routing (Settings(groups=...)) and is answered by its tenant's group; a replica
asked for another group's tenant refuses it, naming the right group. One group is killed with
SIGKILL: its tenants get UNAVAILABLE (retryable), the other groups' tenants lose no decision; the
group restarts on the same store and answers its tenants again.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest

from tests.conftest import (NO_LOCKOUT, TEST_PASSPHRASE, ServerProcess, alive, descendants, deterministic_key_file,
                            free_port)
from tests.test_store import postgres_admin_url

GROUPS = {"g1": ("t1", "t2"), "g2": ("t3", "t4"), "g3": ("t5", "t6")}
SUBJECTS = 3  # enrolled people a tenant


def embedding(rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal(128)
    return v / np.linalg.norm(v)


def probe_of(enrolled: np.ndarray, rng: np.random.Generator) -> list[float]:
    """Another 'photo' of the same person: the embedding and a little noise (cosine ~0.98)."""
    v = enrolled + 0.2 * rng.standard_normal(128) / np.sqrt(128)
    return [float(x) for x in v / np.linalg.norm(v)]


def kill_hard(server: ServerProcess) -> None:
    """kill -9 the server, then its extraction workers (orphans now), each by its own pid."""
    workers = descendants(server.process.pid)
    server.process.send_signal(signal.SIGKILL)
    server.process.wait()
    for pid in workers:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    server.process = None


@pytest.mark.postgres
def test_three_groups_answer_their_tenants_and_survive_a_kill_9_of_one(tmp_path):
    from benchmarks.postgres_scratch import scratch_schema
    from vault.custody import pki
    from vault.custody.keys import LocalKeyFile
    from vault.store import open_store
    from vault_client import Settings, TlsIdentity, VaultClient, errors, pb

    folder = tmp_path / "pki"
    pki.init_ca(folder)
    pki.issue(folder, "server", server_hosts=["127.0.0.1", "localhost"])
    tenants = [t for members in GROUPS.values() for t in members]
    for tenant in tenants:
        for role in ("enroller", "panel"):
            pki.issue(folder, f"{tenant}-{role}", tenant=tenant, role=role)
    keys = deterministic_key_file(tmp_path / "keys" / "keys.json")
    key_file = LocalKeyFile(keys)
    for tenant in tenants:  # made once here, not by three replicas at once
        key_file.ensure_tenant(tenant)
    key_file.reseal(TEST_PASSPHRASE)

    servers: dict[str, ServerProcess] = {}
    clients: list[VaultClient] = []
    with scratch_schema(postgres_admin_url(), prefix="vault_test") as url:
        store = open_store(url)
        for group, members in GROUPS.items():
            for tenant in members:
                store.assign(tenant, group)
        store.close()
        try:
            for group in GROUPS:
                # A fixed port (the later --listen wins): the restarted replica is where clients know it.
                servers[group] = ServerProcess(tmp_path / group, "--listen", f"127.0.0.1:{free_port()}",
                                               "--tls-dir", str(folder), "--store", url,
                                               "--key-file", str(keys), "--group", group, "--allow-face-embeddings",
                                               *NO_LOCKOUT)
            starting = [threading.Thread(target=s.start) for s in servers.values()]  # in parallel: ~3x faster
            for thread in starting:
                thread.start()
            for thread in starting:
                thread.join()
            assert all(s.port for s in servers.values()), "a server did not start"
            targets = {group: f"localhost:{s.port}" for group, s in servers.items()}

            def client(tenant: str, role: str) -> VaultClient:
                made = VaultClient(Settings(tls=TlsIdentity.from_dir(folder, f"{tenant}-{role}"), groups=targets,
                                            timeout_s=20))
                clients.append(made)
                return made

            rng = np.random.default_rng(27)
            people = {t: [embedding(rng) for _ in range(SUBJECTS)] for t in tenants}
            panels = {t: client(t, "panel") for t in tenants}
            for tenant in tenants:
                hr = client(tenant, "enroller")
                for i, person in enumerate(people[tenant]):
                    sample = pb.Sample(face_embedding=pb.FaceEmbedding(values=[float(x) for x in person]))
                    hr.enroll(f"p{i}", [sample])
                assert hr.group == next(g for g, m in GROUPS.items() if tenant in m)

            def decide(tenant: str) -> bool:
                """One Verify and one Identify per enrolled person: all right?"""
                panel = panels[tenant]
                for i, person in enumerate(people[tenant]):
                    probe = pb.Sample(face_embedding=pb.FaceEmbedding(values=probe_of(person, rng)))
                    if panel.verify(probe, subject_id=f"p{i}").decision != pb.MATCH:
                        return False
                    if [c.subject_id for c in panel.identify(probe, max_candidates=1).candidates] != [f"p{i}"]:
                        return False
                return True

            for group, members in GROUPS.items():
                for tenant in members:
                    assert decide(tenant), tenant
                    assert panels[tenant].group == group  # answered by its tenant's group

            # A replica asked directly for another group's tenant refuses, naming the right group.
            direct = VaultClient(Settings(targets["g1"], tls=TlsIdentity.from_dir(folder, "t3-panel"), timeout_s=20))
            clients.append(direct)
            with pytest.raises(errors.WrongGroup) as refused:
                direct.verify(pb.Sample(face_embedding=pb.FaceEmbedding(values=probe_of(people["t3"][0], rng))),
                              subject_id="p0")
            assert refused.value.group == "g2"

            # kill -9 of g2: its tenants UNAVAILABLE (retryable), the others lose no decision.
            kill_hard(servers["g2"])
            for tenant in GROUPS["g2"]:
                with pytest.raises(errors.Unavailable) as down:
                    decide(tenant)
                assert down.value.retryable
            lost = sum(not decide(t) for g in ("g1", "g3") for t in GROUPS[g])
            assert lost == 0

            # g2 restarts on the same store and port; its tenants' clients get answers again.
            started = time.monotonic()
            servers["g2"].start()
            while True:
                try:
                    if all(decide(t) for t in GROUPS["g2"]):
                        break
                except errors.Unavailable:
                    pass  # the clients' channels reconnect with backoff
                assert time.monotonic() - started < 60, "g2 did not answer again within 60 s"
                time.sleep(0.2)
            back = time.monotonic() - started
            print(f"g2 back {back:.1f} s after its restart began")
            assert all(decide(t) for t in tenants)
        finally:
            for made in clients:
                made.close()
            for server in servers.values():
                server.stop()
