"""Fast tier: nothing blocks the event loop. The real interceptor, servicers, core, SQLite store,
key file, protection and match index serve concurrent Enroll, Verify, Identify, ListTemplates,
Revoke and KeyStatus calls on a loopback gRPC server in this process, with asyncio's debug mode
reporting every callback that holds the loop longer than SLOW_S ("Executing ... took ...").

Extraction runs in a thread (as in the real pool's processes). The store, the key store and the
index's searches are delayed by a blocking sleep of DELAY_S per call, as a PostgreSQL round trip to
a far replica or a large gallery would be: any of them made on the loop shows up as a slow
callback, and is named (a delayed call notes whether it runs on the loop's thread). A delayed call
made in a worker thread does neither."""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from conftest import deterministic_key_file
from doubles import VectorExtractor, sample_bytes
from vault.administration import Administration
from vault.access.auth import AccessPolicy, Authenticator
from vault.core import Vault
from vault.custody.keys import LocalKeyFile
from vault.access.lockout import FailureLimiter, Limits
from vault.templates.matching import MatchIndex, warm_up
from vault.templates.profiles import PROFILES
from vault.rpc.interceptor import Gatekeeper
from vault.rpc.servicers import AdminServicer, AuditServicer, VaultServicer
from vault.server import SERVICE_NAMES
from vault.store import open_store
from vault.access.tokens import TokenRegistry
from vault_client.v1 import vault_pb2 as pb
from vault_client.v1 import vault_pb2_grpc

DELAY_S = 0.5  # each delayed call blocks its thread this long
# asyncio debug mode reports a callback that holds the loop longer: a delayed call made on the loop
# always does; an ordinary callback on a busy 2-core test machine does not come near it.
SLOW_S = 0.45
ON_LOOP: list[str] = []  # delayed calls made on the event loop's thread (named, for the failure message)


def delay(what: str) -> None:
    try:
        asyncio.get_running_loop()  # raises in a worker thread: only the loop's thread has one running
        ON_LOOP.append(what)
    except RuntimeError:
        pass
    time.sleep(DELAY_S)


class Delayed:
    """A real object whose public methods each block for DELAY_S first, counting the calls."""

    def __init__(self, inner):
        object.__setattr__(self, "_inner", inner)
        object.__setattr__(self, "calls", 0)

    def __getattr__(self, name):
        value = getattr(self._inner, name)
        if name.startswith("_") or not callable(value):
            return value

        def delayed(*args, **kwargs):
            delay(f"{type(self._inner).__name__}.{name}")
            object.__setattr__(self, "calls", self.calls + 1)
            return value(*args, **kwargs)

        return delayed

    def __setattr__(self, name, value):
        setattr(self._inner, name, value)


class DelayedIndex(MatchIndex):
    """The real match index, its searches and gallery reads delayed like a large gallery's."""

    calls = 0

    def _delay(self, what: str):
        delay(f"MatchIndex.{what}")
        self.calls += 1

    def verify(self, *args, **kwargs):
        self._delay("verify")
        return super().verify(*args, **kwargs)

    def identify(self, *args, **kwargs):
        self._delay("identify")
        return super().identify(*args, **kwargs)

    def galleries(self, *args, **kwargs):
        self._delay("galleries")
        return super().galleries(*args, **kwargs)


class PooledExtractor(VectorExtractor):
    """The fixed-vector double, off the loop as the real extraction pool's worker processes are."""

    async def extract_many(self, modality, samples, require_single_face=False, features=(), client=None):
        parent = super()
        return await asyncio.to_thread(lambda: asyncio.run(parent.extract_many(modality, samples, require_single_face,
                                                                               features, client)))


class SlowCallbacks(logging.Handler):
    """Records asyncio debug mode's "Executing <handle> took N seconds" warnings."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("Executing") and " took " in message:
            self.seen.append(message)


@pytest.fixture
def slow_callbacks():
    handler = SlowCallbacks()
    logger = logging.getLogger("asyncio")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.WARNING)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


def run_in_debug_mode(coroutine):
    async def main():
        loop = asyncio.get_running_loop()
        loop.slow_callback_duration = SLOW_S
        # More threads than the default, so the test waits for more delays at once (not so many
        # that their contention for the GIL stretches the loop's own callbacks).
        loop.set_default_executor(ThreadPoolExecutor(16))
        return await coroutine

    return asyncio.run(main(), debug=True)


def test_the_detector_sees_a_blocking_call_on_the_loop(slow_callbacks):
    """The check below can fail: one delayed store call made on the loop is reported."""
    async def blocking():
        delay("a blocking call")

    ON_LOOP.clear()
    run_in_debug_mode(blocking())
    assert len(slow_callbacks.seen) == 1 and "took" in slow_callbacks.seen[0]
    assert ON_LOOP == ["a blocking call"]


def test_concurrent_calls_never_block_the_event_loop(tmp_path, slow_callbacks):
    ON_LOOP.clear()
    keys = LocalKeyFile(deterministic_key_file(tmp_path / "keys.json"))
    real_store = open_store(f"sqlite:///{tmp_path / 'vault.db'}", keys.audit_key())
    store, slow_keys, index = Delayed(real_store), Delayed(keys), DelayedIndex()
    warm_up(PROFILES.values())
    tokens = TokenRegistry(store, keys.token_key())
    core = Vault(store, slow_keys, PooledExtractor(), index,
                 limiter=FailureLimiter(store, Limits(per_subject=1000, per_client=1000)))
    administration = Administration(slow_keys, store, tokens, core.identify_capacity)
    people = ["ana", "bob", "cem", "dia"]

    async def main():
        gatekeeper = Gatekeeper(set(SERVICE_NAMES), Authenticator(tls=False, tokens=tokens), AccessPolicy(), store,
                                None, 120.0)
        server = grpc.aio.server(interceptors=[gatekeeper])
        vault_pb2_grpc.add_VaultServicer_to_server(VaultServicer(core), server)
        vault_pb2_grpc.add_AdminServicer_to_server(AdminServicer(administration), server)
        vault_pb2_grpc.add_AuditServicer_to_server(AuditServicer(administration), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        stub, admin = vault_pb2_grpc.VaultStub(channel), vault_pb2_grpc.AdminStub(channel)

        def face(person: str, shot: int) -> pb.Sample:
            return pb.Sample(image=sample_bytes(person, shot))

        try:
            enrolled = await asyncio.gather(*(
                stub.Enroll(pb.EnrollRequest(subject_id=p, modality=pb.FACE, samples=[face(p, 1), face(p, 2)]))
                for p in people + ["eve"]))
            calls = [stub.Verify(pb.VerifyRequest(subject_id=p, modality=pb.FACE, probe=face(p, 3))) for p in people]
            calls += [stub.Verify(pb.VerifyRequest(subject_id=p, modality=pb.FACE, probe=face("zed", 1)))
                      for p in people]
            calls += [stub.Verify(pb.VerifyRequest(template_id=e.template_id, probe=face(p, 4)))
                      for p, e in zip(people, enrolled)]
            calls += [stub.Identify(pb.IdentifyRequest(modality=pb.FACE, probe=face(p, 5), max_candidates=2))
                      for p in people]
            calls += [stub.ListTemplates(pb.ListTemplatesRequest()), admin.KeyStatus(pb.KeyStatusRequest()),
                      stub.Revoke(pb.RevokeRequest(subject_id="eve", reason="left"))]
            answers = await asyncio.gather(*calls)
        finally:
            await channel.close()
            await server.stop(None)
        return answers

    try:
        answers = run_in_debug_mode(main())
    finally:
        real_store.close()
    verified = [a.decision for a in answers[:12]]
    assert verified[:4] == [pb.MATCH] * 4 and verified[4:8] == [pb.NO_MATCH] * 4
    assert verified[8:] == [pb.MATCH] * 4
    assert [a.candidates[0].subject_id for a in answers[12:16]] == people
    assert len(answers[-1].revoked_template_ids) == 1
    assert store.calls > 50 and slow_keys.calls > 10 and index.calls > 20  # the delayed parts were used
    assert ON_LOOP == []
    assert slow_callbacks.seen == []
