"""Load and soak: drive a real `vault serve` with verify and identify from several client processes.

    uv run python -m benchmarks.performance.load --clients 4 --duration 60 --out bench-out/load
    uv run python -m benchmarks.performance.load --clients 2 --duration 600 --out bench-out/soak     # 10-minute soak

Enrols LFW people (first photo each), then each client process loops for a fixed time over real
probes (their other photos), alternating Verify and Identify, with a per-call deadline. Reports
throughput, p50/p99 latency and errors by status, and samples the server's memory (the process and
its extraction workers) every second; writes report.md and memory.png to --out.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

from benchmarks.data import lfw

ROOT = Path(__file__).resolve().parents[2]


def start_server(state: Path, workers: int, max_pending: int | None) -> tuple[subprocess.Popen, int]:
    port_file = state.parent / "port"
    command = [sys.executable, "-m", "vault.cli", "serve", "--plaintext", "--state-dir", str(state), "--listen",
               "127.0.0.1:0", "--port-file", str(port_file), "--workers", str(workers),
               "--max-failures-per-subject", "1000000", "--max-failures-per-client", "1000000"]
    if max_pending:
        command += ["--max-pending", str(max_pending)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=open(state.parent / "server.log", "wb"), stderr=subprocess.STDOUT)
    while not port_file.exists():
        if process.poll() is not None:
            raise SystemExit((state.parent / "server.log").read_text())
        time.sleep(0.1)
    return process, int(port_file.read_text())


def rss_bytes(pid: int) -> int:
    """Resident memory of a process and its children (the extraction workers)."""
    total = 0
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        pids += [int(c) for c in (task / "children").read_text().split()]
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except FileNotFoundError:
            pass
    return total


def client(port: int, probes: list[tuple[str, bytes]], duration: float, deadline: float, seed: int, results):
    import grpc

    from vault_client.v1 import vault_pb2 as pb
    from vault_client.v1 import vault_pb2_grpc

    stub = vault_pb2_grpc.VaultStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
    rng = random.Random(seed)
    records = []
    end = time.monotonic() + duration
    i = 0
    while time.monotonic() < end:
        subject, image = rng.choice(probes)
        kind = "verify" if i % 2 == 0 else "identify"
        started = time.perf_counter()
        try:
            if kind == "verify":
                stub.Verify(pb.VerifyRequest(subject_id=subject, modality=pb.FACE, probe=pb.Sample(image=image)), timeout=deadline)
            else:
                stub.Identify(pb.IdentifyRequest(modality=pb.FACE, probe=pb.Sample(image=image), max_candidates=5), timeout=deadline)
            code = "OK"
        except grpc.RpcError as error:
            code = error.code().name
        records.append((kind, code, time.perf_counter() - started))
        i += 1
    results.put(records)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--duration", type=float, default=60)
    parser.add_argument("--people", type=int, default=200)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--max-pending", type=int, default=None)
    parser.add_argument("--deadline", type=float, default=10.0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    import grpc
    from tqdm import tqdm

    from vault_client.v1 import vault_pb2 as pb
    from vault_client.v1 import vault_pb2_grpc

    folder = Path(tempfile.mkdtemp(prefix="vault-load-"))
    workers = args.workers or len(os.sched_getaffinity(0))
    server, port = start_server(folder / "state", workers, args.max_pending)
    try:
        stub = vault_pb2_grpc.VaultStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
        by_person: dict[str, list[Path]] = {}
        for sample in lfw().samples:
            by_person.setdefault(sample.subject, []).append(sample.path)
        people = sorted(by_person)[: args.people]
        probes = []
        for person in tqdm(people, desc="enrol", unit="person"):
            try:
                stub.Enroll(pb.EnrollRequest(subject_id=person, modality=pb.FACE,
                                             samples=[pb.Sample(image=by_person[person][0].read_bytes())]), timeout=60)
            except grpc.RpcError:
                continue
            probes += [(person, p.read_bytes()) for p in by_person[person][1:]]

        results = multiprocessing.get_context("spawn").Queue()
        clients = [multiprocessing.get_context("spawn").Process(
            target=client, args=(port, probes, args.duration, args.deadline, seed, results)) for seed in range(args.clients)]
        memory = []
        started = time.monotonic()
        for c in clients:
            c.start()
        with tqdm(total=int(args.duration), desc="load", unit="s") as bar:
            while time.monotonic() - started < args.duration:
                memory.append((time.monotonic() - started, rss_bytes(server.pid)))
                time.sleep(1.0)
                bar.update(1)
        records = [r for _ in clients for r in results.get(timeout=args.deadline + 60)]
        for c in clients:
            c.join()
        elapsed = time.monotonic() - started
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)

    lines = [f"# Load: {args.clients} client processes, {args.duration:g} s, {len(probes)} LFW probes, "
             f"{workers} extraction workers", "",
             f"Machine: {os.cpu_count()} cores. Command: `uv run python -m benchmarks.performance.load {' '.join(sys.argv[1:])}`", "",
             "| RPC | calls | ok/s | p50 ms (ok) | p99 ms (ok) | errors by status |", "|---|---|---|---|---|---|"]
    for kind in ("verify", "identify"):
        rows = [r for r in records if r[0] == kind]
        ok = np.array([t for _, code, t in rows if code == "OK"]) * 1000
        errors = Counter(code for _, code, _ in rows if code != "OK")
        p50, p99 = (np.percentile(ok, 50), np.percentile(ok, 99)) if len(ok) else (float("nan"),) * 2
        lines.append(f"| {kind} | {len(rows)} | {len(ok) / elapsed:.1f} | {p50:.0f} | {p99:.0f} | "
                     f"{', '.join(f'{k} {v}' for k, v in sorted(errors.items())) or 'none'} |")
    mem = np.array(memory, dtype=float)
    if len(mem) > 4:
        slope = np.polyfit(mem[:, 0], mem[:, 1], 1)[0]
        lines += ["", f"Server memory (process + workers): start {mem[0, 1] / 2**20:.0f} MiB, end {mem[-1, 1] / 2**20:.0f} MiB, "
                      f"max {mem[:, 1].max() / 2**20:.0f} MiB; trend {slope * 60 / 2**20:+.2f} MiB/min over the run."]
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3))
        ax.plot(mem[:, 0], mem[:, 1] / 2**20)
        ax.set_xlabel("seconds")
        ax.set_ylabel("RSS MiB")
        ax.set_ylim(0, mem[:, 1].max() / 2**20 * 1.1)  # from zero: a cut axis makes any drift look like a leak
        ax.set_title("vault server memory under load")
        fig.tight_layout()
        fig.savefig(args.out / "memory.png", dpi=100)
    (args.out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
