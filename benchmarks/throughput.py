"""Face verify throughput through the service against the face_recognition library alone, on the
same cores and the same images (issue 15: the service's own work must not eat the workers' cores).

    uv run python -m benchmarks.throughput [--images 120] [--seconds 30] [--clients 6] [--report FILE]

Raw: one process per core, each running the library's own call on LFW photos
(`face_encodings(load_image_file(f))`), images a second over all cores. Service: `vault serve`
with one extraction worker per core; client threads in this process send Verify calls with the same
photos as probes for a fixed time; verifies a second. The ratio is service / raw.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from benchmarks.data import lfw
from benchmarks.transcript import Transcript

ROOT = Path(__file__).resolve().parents[1]


def _encode(path: str) -> int:
    import face_recognition

    return len(face_recognition.face_encodings(face_recognition.load_image_file(path)))


def _warm(_) -> None:
    import face_recognition  # noqa: F401 (loads dlib's models)


def raw_rate(paths: list[str], seconds: float, cores: int) -> float:
    """Images a second of the library alone, `cores` processes, for about `seconds`."""
    with ProcessPoolExecutor(cores) as pool:
        list(pool.map(_warm, range(cores)))
        done, started = 0, time.monotonic()
        while time.monotonic() - started < seconds:
            done += len(list(pool.map(_encode, paths, chunksize=2)))
        return done / (time.monotonic() - started)


def service_rate(paths: list[str], seconds: float, cores: int, clients: int, folder: Path) -> float:
    """Verifies a second through a real `vault serve` with `cores` extraction workers."""
    from vault_client import Settings, VaultClient

    port_file = folder / "port"
    server = subprocess.Popen([sys.executable, "-m", "vault.cli", "serve", "--plaintext", "--state-dir",
                               str(folder / "state"), "--listen", "127.0.0.1:0", "--port-file", str(port_file),
                               "--workers", str(cores), "--max-pending", str(8 * cores),
                               "--max-failures-per-subject", "1000000", "--max-failures-per-client", "1000000"],
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not port_file.exists():
            if server.poll() is not None:
                raise RuntimeError("vault serve did not start")
            time.sleep(0.1)
        vault = VaultClient(Settings(f"127.0.0.1:{port_file.read_text()}", timeout_s=120))
        vault.enroll("subject", [Path(paths[0])])
        images = [Path(p).read_bytes() for p in paths]
        done, stop = [0] * clients, threading.Event()

        def client(number: int) -> None:
            index = number
            while not stop.is_set():
                vault.verify(images[index % len(images)], subject_id="subject")
                done[number] += 1
                index += clients

        threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        time.sleep(seconds)
        stop.set()
        for thread in threads:
            thread.join()
        rate = sum(done) / (time.monotonic() - started)
        vault.close()
        return rate
    finally:
        server.terminate()
        server.wait(30)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=120, help="LFW photos used, the same on both sides")
    parser.add_argument("--seconds", type=float, default=30.0, help="measuring time of each side")
    parser.add_argument("--clients", type=int, default=6, help="client threads calling Verify")
    parser.add_argument("--report", type=Path, default=None)
    args = parser.parse_args(argv)
    out = Transcript()
    cores = len(os.sched_getaffinity(0))
    paths = [str(s.path) for s in lfw().samples[: args.images]]
    raw = raw_rate(paths, args.seconds, cores)
    with tempfile.TemporaryDirectory() as folder:
        served = service_rate(paths, args.seconds, cores, args.clients, Path(folder))
    out(f"Face verify throughput, {cores} cores, {len(paths)} LFW photos, {args.seconds:.0f} s each side")
    out()
    out("| | images a second |")
    out("|---|---|")
    out(f"| face_recognition alone (`face_encodings(load_image_file(f))`, {cores} processes) | {raw:.1f} |")
    out(f"| vault Verify through gRPC ({cores} extraction workers, {args.clients} client threads) | {served:.1f} |")
    out()
    out(f"Ratio service / library: {served / raw:.2f} (target >= 0.9)  ({out.elapsed:.0f} s)")
    out.save(args.report, timed=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
