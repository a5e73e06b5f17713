"""Face verify throughput through the service against the embedding library alone, on the same
cores and the same images (issue 15: the service's own work must not eat the workers' cores).

    uv run python -m benchmarks.performance.throughput [--library sface|sface-openvino|dlib] [--images 120] [--seconds 30]
                                           [--clients 6] [--report FILE]

Raw: one process per core, each running the library's own calls on LFW photos, images a second over
all cores: for SFace (face-sface-v1, the current face profile) OpenCV's YuNet detect, alignCrop and
SFace feature on the decoded photo, as OpenCV Zoo's own demo does; sface-openvino: the same steps
as the service runs them (vault.intake.features.sface.face_features: SFace on OpenVINO, with the
quality gate), without the service around them; for dlib (face-iom-v1..v3)
`face_recognition.face_encodings(load_image_file(f))`. Service: `vault serve`
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

ROOT = Path(__file__).resolve().parents[2]


def _encode_dlib(path: str) -> int:
    import face_recognition

    return len(face_recognition.face_encodings(face_recognition.load_image_file(path)))


_opencv = {}  # this process's OpenCV networks (opencv_zoo_sface)


def opencv_zoo_sface(path: str) -> int:
    """OpenCV Zoo's SFace alone: read, detect, align the first face, embed (no quality gate, no
    protection, no service)."""
    import cv2

    from vault.intake.features.sface import DETECTION_SCORE, model_path

    if not _opencv:
        cv2.setNumThreads(1)
        _opencv["detector"] = cv2.FaceDetectorYN.create(str(model_path("detector")), "", (320, 320),
                                                        DETECTION_SCORE, 0.3, 5000)
        _opencv["recognizer"] = cv2.FaceRecognizerSF.create(str(model_path("recognizer")), "")
    image = cv2.imread(path)
    detector, recognizer = _opencv["detector"], _opencv["recognizer"]
    detector.setInputSize((image.shape[1], image.shape[0]))
    _, faces = detector.detect(image)
    if faces is None:
        return 0
    return len(recognizer.feature(recognizer.alignCrop(image, faces[0])))


def _service_features(path: str) -> int:
    """The service's own face features (SFace on OpenVINO, the quality gate), without the service."""
    from vault.exceptions import VaultError
    from vault.intake import images
    from vault.intake.features import sface

    try:
        return len(sface.face_features(images.decode_face(Path(path).read_bytes()))[0])
    except VaultError:
        return 0


ENCODERS = {"sface": opencv_zoo_sface, "sface-openvino": _service_features, "dlib": _encode_dlib}


def _warm(library: str) -> None:
    if library == "dlib":
        import face_recognition  # noqa: F401 (loads dlib's models)
    if library == "sface-openvino":  # as an extraction worker runs (vault.intake.extraction)
        import cv2

        from vault.intake.extraction import one_native_thread
        from vault.intake.features import sface

        cv2.setNumThreads(1)
        one_native_thread()
        sface.networks()


class Library:
    """The library alone in `cores` processes, measured in turns (`rate`)."""

    def __init__(self, paths: list[str], cores: int, library: str):
        self.paths, self.encode = paths, ENCODERS[library]
        self.pool = ProcessPoolExecutor(cores)
        list(self.pool.map(_warm, [library] * cores))
        list(self.pool.map(self.encode, paths[: 4 * cores]))  # load the networks in every process

    def run(self, seconds: float) -> tuple[int, float]:
        done, started = 0, time.monotonic()
        while time.monotonic() - started < seconds:
            done += len(list(self.pool.map(self.encode, self.paths, chunksize=2)))
        return done, time.monotonic() - started

    def close(self) -> None:
        self.pool.shutdown()


class Service:
    """A real `vault serve` with `cores` extraction workers, Verify calls from client threads."""

    def __init__(self, paths: list[str], cores: int, clients: int, folder: Path):
        from vault_client import Settings, VaultClient

        port_file = folder / "port"
        self.server = subprocess.Popen([sys.executable, "-m", "vault.cli", "serve", "--plaintext", "--state-dir",
                                        str(folder / "state"), "--listen", "127.0.0.1:0", "--port-file",
                                        str(port_file), "--workers", str(cores), "--max-pending", str(8 * cores),
                                        "--max-failures-per-subject", "1000000", "--max-failures-per-client",
                                        "1000000"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while not port_file.exists():
            if self.server.poll() is not None:
                raise RuntimeError("vault serve did not start")
            time.sleep(0.1)
        self.vault = VaultClient(Settings(f"127.0.0.1:{port_file.read_text()}", timeout_s=120))
        self.vault.enroll("subject", [Path(paths[0])])
        self.images = [Path(p).read_bytes() for p in paths]
        self.clients = clients
        self.run(2.0)  # every worker warm

    def run(self, seconds: float) -> tuple[int, float]:
        done, stop = [0] * self.clients, threading.Event()

        def client(number: int) -> None:
            index = number
            while not stop.is_set():
                self.vault.verify(self.images[index % len(self.images)], subject_id="subject")
                done[number] += 1
                index += self.clients

        threads = [threading.Thread(target=client, args=(n,)) for n in range(self.clients)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        time.sleep(seconds)
        stop.set()
        for thread in threads:
            thread.join()
        return sum(done), time.monotonic() - started

    def close(self) -> None:
        self.vault.close()
        self.server.terminate()
        self.server.wait(30)


def measure(paths: list[str], seconds: float, cores: int, clients: int, library: str, turns: int,
            folder: Path) -> tuple[float, float]:
    """Images a second of the library alone and verifies a second of the service, measured in
    alternating turns so that whatever else the machine runs meanwhile weighs on both alike."""
    alone, service = Library(paths, cores, library), Service(paths, cores, clients, folder)
    try:
        totals = {"alone": [0, 0.0], "service": [0, 0.0]}
        for _ in range(turns):
            for name, side in (("alone", alone), ("service", service)):
                done, took = side.run(seconds / turns)
                totals[name][0] += done
                totals[name][1] += took
        return totals["alone"][0] / totals["alone"][1], totals["service"][0] / totals["service"][1]
    finally:
        alone.close()
        service.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--library", choices=sorted(ENCODERS), default="sface",
                        help="the embedding library alone: sface (OpenCV, the current face profile's library), "
                             "sface-openvino (the service's own runtime for it) or dlib (older profiles)")
    parser.add_argument("--images", type=int, default=120, help="LFW photos used, the same on both sides")
    parser.add_argument("--seconds", type=float, default=30.0, help="measuring time of each side")
    parser.add_argument("--clients", type=int, default=6, help="client threads calling Verify")
    parser.add_argument("--turns", type=int, default=6, help="alternating turns each side's time is split into")
    parser.add_argument("--report", type=Path, default=None)
    args = parser.parse_args(argv)
    out = Transcript()
    cores = len(os.sched_getaffinity(0))
    paths = [str(s.path) for s in lfw().samples[: args.images]]
    with tempfile.TemporaryDirectory() as folder:
        raw, served = measure(paths, args.seconds, cores, args.clients, args.library, args.turns, Path(folder))
    out(f"Face verify throughput, {cores} cores, {len(paths)} LFW photos, {args.seconds:.0f} s each side "
        f"in {args.turns} alternating turns")
    out()
    out("| | images a second |")
    out("|---|---|")
    alone = {"sface": "OpenCV YuNet + SFace alone (`detect`, `alignCrop`, `feature`)",
             "sface-openvino": "the service's face features alone (YuNet on OpenCV, SFace on OpenVINO, quality gate)",
             "dlib": "face_recognition alone (`face_encodings(load_image_file(f))`)"}[args.library]
    out(f"| {alone}, {cores} processes | {raw:.1f} |")
    out(f"| vault Verify through gRPC ({cores} extraction workers, {args.clients} client threads) | {served:.1f} |")
    out()
    out(f"Ratio service / library: {served / raw:.2f} (target >= 0.9)  ({out.elapsed:.0f} s)")
    out.save(args.report, timed=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
