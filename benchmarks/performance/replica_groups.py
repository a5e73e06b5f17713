"""Tenants spread over replica groups (issue 27): three `vault serve --group` processes on this
machine, one PostgreSQL database, N templates across T tenants.

    uv run python -m benchmarks.performance.replica_groups [--templates 1000000] [--tenants 30] [--groups 3]
        [--postgres postgresql://root@127.0.0.1:5432/test] [--report benchmarks/results/replica_groups.json]

1. A scratch schema is filled with --templates live rows of the current face profile, spread evenly over
   --tenants tenants, each sealed under its tenant's key as the service seals them (distractors: random
   codes, every bit pattern being a valid IoM code), written with COPY; tenant i is assigned to group
   i mod --groups (`vault group assign`'s store call).
2. One replica a group is started, one after another (mutual TLS, --workers 1, --allow-face-embeddings):
   start-up = process start until it serves, with the live templates it loaded and its resident memory.
3. --people people a tenant are enrolled through the client package's routing (Settings(groups=...):
   each call goes to its tenant's group), with pre-computed face embeddings (no extraction: what is
   measured is routing and search, not dlib).
4. Every person: one Verify (their own claim: MATCH expected) and one Identify (them first expected);
   the group that answered is the one the client's routing settled on, checked against the assignment.
5. kill -9 of one group (its extraction worker ended by pid): for --outage seconds every tenant is asked
   in turn; the killed group's tenants must get UNAVAILABLE (retryable), every other answer must be
   right (decisions lost = wrong answers or errors there). The group is restarted: seconds until it
   serves again and until its tenants' clients get right answers; then a last full round.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
PASSPHRASE = "replica-groups-benchmark"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def seed(store, keys, tenants: list[str], n: int, rng: np.random.Generator) -> dict:
    """n live rows spread over the tenants, sealed under each tenant's key, written with COPY."""
    from vault.core import row_identity
    from vault.modalities import FACE
    from vault.store import TemplateRow
    from vault.store.base import TEMPLATE_COLUMNS, row_values
    from vault.templates.profiles import CURRENT
    from vault.templates.protection import Protector

    profile = CURRENT[FACE]
    planes = int(np.log2(profile.hash_width))
    protector = Protector()
    seal_s = copy_s = 0.0
    started = time.perf_counter()
    for t, tenant in enumerate(tenants):
        key = keys.tenant_key(tenant, 1)
        share = n // len(tenants) + (1 if t < n % len(tenants) else 0)
        for start in range(0, share, 20_000):
            size = min(20_000, share - start)
            t0 = time.perf_counter()
            # Every bit pattern is a valid code at a power-of-two hash width: random distractors.
            codes = rng.integers(0, 2**64 - 1, size=(size, planes, profile.hash_count // 64), dtype=np.uint64,
                                 endpoint=True)
            rows = []
            for i in range(size):
                row = TemplateRow(uuid.uuid4().hex, tenant, f"d{start + i}", FACE, 0, profile.name, 1, b"", b"", 1,
                                  time.time())
                salt, sealed = protector.seal(key, row_identity(row), codes[i])
                values = row_values(row)
                rows.append(values[:7] + (salt, sealed) + values[9:])
            t1 = time.perf_counter()
            with store.database.pool.connection() as conn, conn.cursor() as cur:
                with cur.copy(f"COPY templates ({TEMPLATE_COLUMNS}) FROM STDIN") as copy:
                    for values in rows:
                        copy.write_row(values)
            copy_s += time.perf_counter() - t1
            seal_s += t1 - t0
        print(f"  seeded {tenant}: {share:,} rows ({time.perf_counter() - started:.0f} s so far)", flush=True)
    with store.database.pool.connection() as conn:
        conn.execute("ANALYZE templates")
    return {"rows": n, "seed_s": round(time.perf_counter() - started, 1), "make_and_seal_s": round(seal_s, 1),
            "copy_s": round(copy_s, 1)}


class Replica:
    def __init__(self, group: str, workdir: Path, url: str, pki: Path, key_file: Path):
        self.group = group
        self.port = free_port()
        self.log_path = workdir / f"{group}.log"
        self.port_file = workdir / f"{group}.port"
        self.command = [sys.executable, "-m", "vault.cli", "serve", "--state-dir", str(workdir / group),
                        "--listen", f"127.0.0.1:{self.port}", "--port-file", str(self.port_file), "--store", url,
                        "--key-file", str(key_file), "--tls-dir", str(pki), "--group", group, "--workers", "1",
                        "--allow-face-embeddings", "--max-failures-per-subject", "1000000",
                        "--max-failures-per-client", "1000000"]
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 900) -> float:
        """Start and wait until it serves: seconds."""
        self.port_file.unlink(missing_ok=True)
        env = dict(os.environ, VAULT_KEY_PASSPHRASE=PASSPHRASE)
        started = time.monotonic()
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        while not self.port_file.exists():
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.group} exited: {self.log_path.read_text()[-3000:]}")
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"{self.group} did not start within {timeout} s")
            time.sleep(0.05)
        return time.monotonic() - started

    def loaded(self) -> int:
        """Live templates it loaded, from its start-up log line."""
        import re

        found = re.findall(r"replica group \S+: \d+ tenants, (\d+) live templates loaded", self.log_path.read_text())
        return int(found[-1]) if found else -1

    def kill_9(self) -> int:
        """kill -9, then its extraction workers (orphaned) by pid: how many workers were ended."""
        workers = descendants(self.process.pid)
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        for pid in workers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process = None
        return len(workers)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            workers = descendants(self.process.pid)
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            for pid in workers:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.process = None


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def run(args) -> dict:
    from benchmarks.postgres_scratch import scratch_schema
    from vault.custody import pki
    from vault.custody.keys import LocalKeyFile
    from vault.store import open_store
    from vault_client import Settings, TlsIdentity, VaultClient, errors, pb

    groups = [f"g{i + 1}" for i in range(args.groups)]
    tenants = [f"t{i:02d}" for i in range(args.tenants)]
    home = {tenant: groups[i % len(groups)] for i, tenant in enumerate(tenants)}
    rng = np.random.default_rng(27)
    report: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                    "templates": args.templates, "tenants": args.tenants, "groups": args.groups,
                    "people_per_tenant": args.people}
    with tempfile.TemporaryDirectory(prefix="replica-groups-") as tmp, \
            scratch_schema(args.postgres, prefix="vault_bench") as url:
        workdir = Path(tmp)
        folder = workdir / "pki"
        pki.init_ca(folder)
        pki.issue(folder, "server", server_hosts=["127.0.0.1", "localhost"])
        for tenant in tenants:
            for role in ("enroller", "panel"):
                pki.issue(folder, f"{tenant}-{role}", tenant=tenant, role=role)
        key_file = workdir / "keys" / "keys.json"
        keys = LocalKeyFile(key_file)
        for tenant in tenants:
            keys.ensure_tenant(tenant)
        store = open_store(url, keys.audit_key())
        print(f"seeding {args.templates:,} templates over {args.tenants} tenants ...", flush=True)
        report["seed"] = seed(store, keys, tenants, args.templates, rng)
        for tenant, group in home.items():
            store.assign(tenant, group)
        store.close()
        keys.reseal(PASSPHRASE)

        replicas = {g: Replica(g, workdir, url, folder, key_file) for g in groups}
        clients: list = []
        try:
            report["startup"] = []
            for g, replica in replicas.items():
                seconds = replica.start()
                figures = {"group": g, "tenants": sum(1 for t in tenants if home[t] == g), "start_s": round(seconds, 1),
                           "templates_loaded": replica.loaded(), "rss_mb": round(rss_mb(replica.process.pid))}
                report["startup"].append(figures)
                print(f"  {g}: serving after {seconds:.1f} s, {figures['templates_loaded']:,} templates, "
                      f"{figures['rss_mb']} MB resident", flush=True)
            targets = {g: f"localhost:{r.port}" for g, r in replicas.items()}

            def client(tenant: str, role: str):
                made = VaultClient(Settings(tls=TlsIdentity.from_dir(folder, f"{tenant}-{role}"), groups=targets,
                                            timeout_s=30))
                clients.append(made)
                return made

            people = {t: [unit(rng.standard_normal(128)) for _ in range(args.people)] for t in tenants}
            started = time.monotonic()
            for tenant in tenants:
                hr = client(tenant, "enroller")
                for i, person in enumerate(people[tenant]):
                    hr.enroll(f"p{i}", [pb.Sample(face_embedding=pb.FaceEmbedding(values=person.tolist()))])
            report["enrol_s"] = round(time.monotonic() - started, 1)
            panels = {t: client(t, "panel") for t in tenants}

            def probe(tenant: str, i: int):
                noisy = unit(people[tenant][i] + 0.2 * rng.standard_normal(128) / np.sqrt(128))
                return pb.Sample(face_embedding=pb.FaceEmbedding(values=noisy.tolist()))

            def decide(tenant: str, i: int, timings: list | None = None) -> bool:
                """Verify then Identify of person i: both right?"""
                panel = panels[tenant]
                t0 = time.perf_counter()
                verified = panel.verify(probe(tenant, i), subject_id=f"p{i}").decision == pb.MATCH
                t1 = time.perf_counter()
                found = [c.subject_id for c in panel.identify(probe(tenant, i), max_candidates=1).candidates]
                if timings is not None:
                    timings.append((t1 - t0, time.perf_counter() - t1))
                return verified and found == [f"p{i}"]

            # Every Verify and Identify answered by the right group.
            timings: list = []
            right = wrong_group = wrong = 0
            for tenant in tenants:
                for i in range(args.people):
                    ok = decide(tenant, i, timings)
                    right += ok
                    wrong += not ok
                wrong_group += panels[tenant].group != home[tenant]
            verify_ms = sorted(1e3 * v for v, _ in timings)
            identify_ms = sorted(1e3 * d for _, d in timings)
            report["decisions"] = {
                "verify_and_identify_pairs": right + wrong, "right": right, "wrong": wrong,
                "tenants_answered_by_another_group": wrong_group,
                "verify_ms_median": round(verify_ms[len(verify_ms) // 2], 1),
                "identify_ms_median": round(identify_ms[len(identify_ms) // 2], 1),
                "identify_ms_p95": round(identify_ms[int(0.95 * (len(identify_ms) - 1))], 1)}
            print(f"  decisions: {right} right, {wrong} wrong, {wrong_group} tenants answered by another group; "
                  f"Verify median {report['decisions']['verify_ms_median']} ms, Identify median "
                  f"{report['decisions']['identify_ms_median']} ms", flush=True)

            # kill -9 of one group.
            victim = groups[len(groups) // 2]
            workers = replicas[victim].kill_9()
            killed_at = time.monotonic()
            outage = {"group": victim, "workers_ended": workers, "victim_unavailable": 0, "victim_other": 0,
                      "others_right": 0, "others_lost": 0}
            def ask(members: list[str], rng_: np.random.Generator) -> None:
                """Each tenant in turn, until the outage is over (one thread for the killed group's
                tenants, whose calls wait out the channel's retries, one for everyone else's)."""
                while time.monotonic() - killed_at < args.outage:
                    for tenant in members:
                        i = int(rng_.integers(args.people))
                        try:
                            ok = decide(tenant, i)
                        except errors.VaultCallError as error:
                            if home[tenant] == victim and isinstance(error, errors.Unavailable) and error.retryable:
                                outage["victim_unavailable"] += 1
                            elif home[tenant] == victim:
                                outage["victim_other"] += 1
                            else:
                                outage["others_lost"] += 1
                            continue
                        if home[tenant] == victim:
                            outage["victim_other"] += 1  # an answer from a dead group: impossible
                        elif ok:
                            outage["others_right"] += 1
                        else:
                            outage["others_lost"] += 1

            askers = [threading.Thread(target=ask, args=([t for t in tenants if (home[t] == victim) == dead],
                                                          np.random.default_rng(seed)))
                      for seed, dead in ((1, True), (2, False))]
            for thread in askers:
                thread.start()
            for thread in askers:
                thread.join()
            print(f"  kill -9 {victim}: its tenants UNAVAILABLE {outage['victim_unavailable']} times "
                  f"(other outcomes {outage['victim_other']}); other tenants {outage['others_right']} right, "
                  f"{outage['others_lost']} lost", flush=True)

            restart_began = time.monotonic()
            outage["restart_serving_s"] = round(replicas[victim].start(), 1)
            outage["templates_reloaded"] = replicas[victim].loaded()
            victims = [t for t in tenants if home[t] == victim]
            while True:
                try:
                    if all(decide(t, 0) for t in victims):
                        break
                except errors.Unavailable:
                    pass  # the clients' channels reconnect with backoff
                time.sleep(0.1)
            outage["restart_answering_s"] = round(time.monotonic() - restart_began, 1)
            outage["down_s"] = round(time.monotonic() - killed_at, 1)
            report["kill_9"] = outage
            print(f"  {victim} restarted: serving after {outage['restart_serving_s']} s "
                  f"({outage['templates_reloaded']:,} templates), its tenants answered again after "
                  f"{outage['restart_answering_s']} s", flush=True)
            final = sum(decide(t, i) for t in tenants for i in range(args.people))
            report["after_restart"] = {"pairs": len(tenants) * args.people, "right": final}
            print(f"  after the restart: {final} of {len(tenants) * args.people} right", flush=True)
        finally:
            for made in clients:
                made.close()
            for replica in replicas.values():
                replica.stop()
    return report


def write_markdown(report: dict, path: Path) -> None:
    lines = [
        "# Replica groups (issue 27)",
        "",
        "`uv run python -m benchmarks.performance.replica_groups "
        f"--templates {report['templates']} --tenants {report['tenants']} --groups {report['groups']}`, "
        f"{report['machine']['cpus']}-core development machine, PostgreSQL on the same machine, "
        "one `vault serve --group` replica a group (mutual TLS, one extraction worker), current face profile "
        "(4 KiB codes).",
        "",
        f"Seeding {report['seed']['rows']:,} sealed rows: {report['seed']['seed_s']} s "
        f"(make and seal {report['seed']['make_and_seal_s']} s, COPY {report['seed']['copy_s']} s).",
        "",
        "| group | tenants | templates loaded | start-up (started one after another) | resident memory |",
        "|---|---|---|---|---|",
    ]
    for s in report["startup"]:
        lines.append(f"| {s['group']} | {s['tenants']} | {s['templates_loaded']:,} | {s['start_s']} s | {s['rss_mb']} MB |")
    d, k = report["decisions"], report["kill_9"]
    lines += [
        "",
        f"Decisions: {d['verify_and_identify_pairs']} Verify + Identify pairs ({report['people_per_tenant']} people a "
        f"tenant, enrolled through the client's routing), {d['right']} right, {d['wrong']} wrong; tenants answered "
        f"by another group than their own: {d['tenants_answered_by_another_group']}. Verify median "
        f"{d['verify_ms_median']} ms, Identify median {d['identify_ms_median']} ms (p95 {d['identify_ms_p95']} ms), "
        "client to answer over TLS.",
        "",
        f"kill -9 of {k['group']} (then its {k['workers_ended']} child processes, extraction worker included, by pid): while it was down its "
        f"tenants got UNAVAILABLE (retryable; each after the channel's retries) {k['victim_unavailable']} times and anything else {k['victim_other']} "
        f"times; the other groups' tenants, asked at the same time from another thread, got {k['others_right']} right answers and **{k['others_lost']} decisions "
        f"lost**. Restarted: serving again after **{k['restart_serving_s']} s** ({k['templates_reloaded']:,} "
        f"templates reloaded), its tenants answered by their clients after {k['restart_answering_s']} s; then "
        f"{report['after_restart']['right']} of {report['after_restart']['pairs']} pairs right.",
    ]
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--postgres", default=os.environ.get("VAULT_BENCH_POSTGRES", "postgresql://root@127.0.0.1:5432/test"))
    parser.add_argument("--templates", type=int, default=1_000_000)
    parser.add_argument("--tenants", type=int, default=30)
    parser.add_argument("--groups", type=int, default=3)
    parser.add_argument("--people", type=int, default=3, help="people enrolled a tenant, each verified and identified")
    parser.add_argument("--outage", type=float, default=10.0, help="seconds of calls while one group is down")
    parser.add_argument("--report", type=Path, default=Path("benchmarks/results/replica_groups.json"))
    args = parser.parse_args()
    report = run(args)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(report, indent=2) + "\n")
    write_markdown(report, args.report.with_suffix(".md"))
    print(f"report: {args.report} and {args.report.with_suffix('.md')}")


if __name__ == "__main__":
    main()
