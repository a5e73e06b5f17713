"""Feature extraction off the gRPC event loop: a bounded pool of worker processes.

dlib and LEADER (OpenVINO) take 0.1-0.6 s a sample and hold a core, so they run in separate processes, one per
core. The queue is bounded: when `max_pending` samples are already waiting or running, a new
request fails at once with RESOURCE_EXHAUSTED instead of queueing without bound.

Each sample also has a hard time limit: the worker arms a SIGALRM timer whose default action is to
end the process, so a sample that keeps dlib or OpenVINO busy in native code (where no Python
check can run) is stopped by the kernel. The pool is then rebuilt and the calls in flight get a
retryable RESOURCE_EXHAUSTED.

Each client gets a fair share (issue 24, finding 7): at most `per_client_workers` of its samples run
at once (all workers but one, at least one: one is always free for another client's sample; the rest
of its samples wait their turn in the server, not in the pool's queue) and at most `per_client_pending` wait or run, so one client sending costly
samples (a large image without a face: seconds of a worker each) cannot occupy every worker nor fill
the queue, and other clients' samples go to a free worker at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import select
import signal
import threading
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np

from vault.exceptions import InvalidArgument, Overloaded, VaultError
from vault.intake.features import SampleReport, unit
from vault.modalities import CURRENT_EXTRACTORS, DLIB, FACE, FINGERPRINT, MINUTIAE, SFACE

IMAGE, ISO_19794_2 = "image", "iso_19794_2"

Vectors = dict[str, np.ndarray]  # unit feature vector per extractor (vault.modalities: DLIB, SFACE, MINUTIAE)


def extract(modality: int, kind: str, payload: bytes, require_single_face: bool,
            time_limit_s: float = 0.0, features: tuple[str, ...] = ()) -> tuple[Vectors, SampleReport]:
    """Unit feature vectors (one per extractor in `features`; default: the current profile's) and
    the report for one sample. Runs in a worker process, which the kernel ends if the sample takes
    longer than `time_limit_s` (0: no limit)."""
    if time_limit_s > 0:
        signal.signal(signal.SIGALRM, signal.SIG_DFL)  # default action: terminate this worker
        signal.setitimer(signal.ITIMER_REAL, time_limit_s)
    try:
        if not features and modality in CURRENT_EXTRACTORS:
            features = (CURRENT_EXTRACTORS[modality],)
        return _extract(modality, kind, payload, require_single_face, features)
    finally:
        if time_limit_s > 0:
            signal.setitimer(signal.ITIMER_REAL, 0)


def _extract(modality: int, kind: str, payload: bytes, require_single_face: bool,
             features: tuple[str, ...]) -> tuple[Vectors, SampleReport]:
    from vault.intake import images

    if modality == FACE:
        if kind != IMAGE:
            raise InvalidArgument("face samples must be images")
        rgb = images.decode_face(payload)
        vectors, report = {}, SampleReport()
        # The current extractor first: its report is the one the caller gets, and its refusal
        # (no face, poor quality) is the answer.
        for name in sorted(features, key=lambda f: f != CURRENT_EXTRACTORS[FACE]):
            if name == SFACE:
                from vault.intake.features import sface as extractor
            elif name == DLIB:
                from vault.intake.features import face as extractor
            else:
                raise InvalidArgument(f"no face extractor {name!r}")
            vector, seen = extractor.face_features(rgb, require_single_face)
            vectors[name] = unit(vector)
            if len(vectors) == 1:
                report = SampleReport(faces_found=seen.faces_found, largest_face_used=seen.largest_face_used)
        return vectors, report
    if modality == FINGERPRINT:
        from vault.intake.features import fingerprint
        from vault.intake.iso19794 import parse_iso19794_2

        if kind == IMAGE:
            record = fingerprint.extract_minutiae(payload)
        elif kind == ISO_19794_2:
            record = parse_iso19794_2(payload)
        else:
            raise InvalidArgument("fingerprint samples must be images or ISO/IEC 19794-2 records")
        vector = fingerprint.minutiae_features(record)
        return {MINUTIAE: unit(vector)}, SampleReport(minutiae=len(record.minutiae))
    raise InvalidArgument("modality must be FACE or FINGERPRINT")


def exit_with_server(server_pid: int) -> None:
    """End this worker as soon as the server process is gone, even after kill -9 of the server
    (which runs no clean-up): a daemon thread waits on a pidfd of the server. Unlike
    PR_SET_PDEATHSIG this follows the server process, not the thread that happened to spawn us."""
    if os.getppid() != server_pid:  # the server died before this worker got here
        os._exit(0)
    try:
        handle = os.pidfd_open(server_pid)
    except ProcessLookupError:
        os._exit(0)
    except (AttributeError, OSError):  # not Linux >= 5.3: poll instead
        handle = None

    def watch() -> None:
        if handle is not None:
            select.select([handle], [], [])  # readable once the server has exited
        else:
            while os.getppid() == server_pid:
                time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="vault-server-watch", daemon=True).start()


def one_native_thread() -> None:
    """Run BLAS and OpenMP on the calling thread only. The extraction workers already occupy every
    core; a BLAS pool fanning each small product (a probe's 128 x 16384 projection) out over all
    cores spends more spinning than it saves: measured, 54 ms of the server's CPU per face verify
    with the default pool, 11 ms with one thread (benchmarks/performance/throughput.py)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)


def _warm_up(server_pid: int) -> None:
    """Tie the worker's life to the server's, then load the dlib models and the SFace, YuNet and
    LEADER networks once per worker, before the first request."""
    exit_with_server(server_pid)
    # Ctrl-C in a terminal signals the whole process group: the server drains and ends its workers;
    # a worker interrupted on its own would only print a traceback into the log.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    one_native_thread()
    # face_recognition_models imports pkg_resources (hence setuptools<81), which warns on every
    # worker start; the warning says nothing an operator can act on.
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
    import cv2
    import face_recognition  # noqa: F401  (older face profiles' templates match until reissued)

    cv2.setNumThreads(1)
    from vault.intake.features import leader, sface

    sface.networks()
    leader.network()


class Extractor:
    work = staticmethod(extract)  # what a worker runs per sample (a module-level function: it is pickled)

    def __init__(self, workers: int | None = None, max_pending: int | None = None, sample_time_limit_s: float = 15.0):
        self.workers = workers or len(os.sched_getaffinity(0))
        self.max_pending = max_pending or 8 * self.workers
        self.sample_time_limit_s = sample_time_limit_s
        self._pending = 0
        self.per_client_workers = max(1, self.workers - 1)  # one worker always left for the others
        self.per_client_pending = max(10, self.max_pending // 4)  # 10: one enrolment's samples
        self._clients: dict[object, list] = {}  # client -> [samples pending, asyncio.Semaphore]
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        # spawn, not fork: the parent runs gRPC threads, which must not be forked.
        return ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_warm_up, initargs=(os.getpid(),))

    @property
    def pending(self) -> int:
        return self._pending

    async def extract(self, modality: int, kind: str, payload: bytes, require_single_face: bool = False,
                      features: tuple[str, ...] = (), client: object = None) -> tuple[Vectors, SampleReport]:
        return (await self.extract_many(modality, [(kind, payload)], require_single_face, features, client))[0]

    async def extract_many(self, modality: int, samples: list[tuple[str, bytes]], require_single_face: bool = False,
                           features: tuple[str, ...] = (), client: object = None) -> list[tuple[Vectors, SampleReport]]:
        """Extract several samples in parallel; all-or-nothing admission against the bound, and
        `client`'s fair share (None: no share, e.g. tools)."""
        if self._pending + len(samples) > self.max_pending:
            raise Overloaded(
                f"extraction queue is full ({self._pending} samples pending, limit {self.max_pending}); retry later"
            )
        share = self._clients.get(client) if client is not None else None
        if share is not None and share[0] + len(samples) > self.per_client_pending:
            raise Overloaded(f"this client already has {share[0]} samples waiting for extraction (limit "
                             f"{self.per_client_pending}); retry later")
        if client is not None and share is None:
            share = self._clients[client] = [0, asyncio.Semaphore(self.per_client_workers)]
        self._pending += len(samples)
        if share is not None:
            share[0] += len(samples)
        pool = self._pool

        async def one(kind: str, payload: bytes):
            async with share[1] if share is not None else contextlib.nullcontext():
                return await asyncio.wrap_future(pool.submit(self.work, modality, kind, payload, require_single_face,
                                                             self.sample_time_limit_s, features))

        try:
            results = await asyncio.gather(*(one(kind, payload) for kind, payload in samples), return_exceptions=True)
        except BrokenProcessPool:
            results = [BrokenProcessPool()]
        finally:
            self._pending -= len(samples)
            if share is not None:
                share[0] -= len(samples)
                if not share[0]:
                    self._clients.pop(client, None)
        for result in results:
            if isinstance(result, VaultError):
                raise result
            if isinstance(result, BrokenProcessPool):
                # A worker died (killed, or crashed in native code): replace the pool once.
                if self._pool is pool:
                    self._pool = self._new_pool()
                    pool.shutdown(wait=False, cancel_futures=True)
                raise Overloaded("an extraction worker failed or ran past the per-sample time limit "
                                 f"({self.sample_time_limit_s:g} s) and was restarted; retry") from None
            if isinstance(result, BaseException):
                raise result
        return results

    def warm(self) -> None:
        """Start every worker now (blocks until their models are loaded)."""
        list(self._pool.map(_noop, range(self.workers)))

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def _noop(_):
    return None
