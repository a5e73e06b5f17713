"""Faults: SIGTERM drains, kill -9 loses nothing acknowledged, deadlines and metrics."""

from __future__ import annotations

import random
import signal
import threading
import time
import urllib.request

import grpc
import pytest

from tests.conftest import alive, data_path, descendants, free_port, read
from vault.access.audit import verify_chain
from vault.custody.keys import LocalKeyFile
from vault.store import LIVE, REVOKED, open_store
from vault_client.v1 import vault_pb2 as pb


def orl(subject: int, image: int) -> pb.Sample:
    return pb.Sample(image=read("face", "orl", f"s{subject}", f"{image}.pgm"))


def lfw_samples(count: int) -> list[pb.Sample]:
    files = sorted(data_path("face", "lfw").glob("*/*.jpg"))[:count]
    return [pb.Sample(image=f.read_bytes()) for f in files]


def extraction_pending(metrics_port: int) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
    return float(next(line.split()[-1] for line in text.splitlines() if line.startswith("vault_extraction_pending ")))


def test_sigterm_drains_in_flight_calls_and_refuses_new_ones(server_factory):
    metrics_port = free_port()
    server = server_factory("drain", "--workers", "1", "--max-pending", "32", "--metrics-listen", f"127.0.0.1:{metrics_port}")
    stub = server.stub()
    slow = pb.EnrollRequest(subject_id="slow", modality=pb.FACE, samples=lfw_samples(10))
    outcome = {}

    def enrol():
        try:
            outcome["template"] = stub.Enroll(slow, timeout=60).template_id
        except grpc.RpcError as error:
            outcome["error"] = error.code()

    caller = threading.Thread(target=enrol)
    caller.start()
    deadline = time.monotonic() + 30
    while extraction_pending(metrics_port) == 0:  # until the enrolment is extracting in the single worker
        assert time.monotonic() < deadline, "the enrolment never reached extraction"
        time.sleep(0.05)
    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    with pytest.raises(grpc.RpcError) as refused:
        server.stub().ListTemplates(pb.ListTemplatesRequest(), timeout=5)
    assert refused.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
    caller.join(60)
    assert "template" in outcome, outcome  # the in-flight call finished
    assert server.process.wait(30) == 0 and time.monotonic() - started < 15
    server.process = None
    server.start()
    listed = server.stub().ListTemplates(pb.ListTemplatesRequest(subject_id="slow")).templates
    assert [t.template_id for t in listed] == [outcome["template"]]


def check_consistency(state_dir, acknowledged: set[str]):
    """After a crash: every acknowledged change is there, nothing is half-written, the audit verifies."""
    keys = LocalKeyFile(state_dir / "keys.json")
    store = open_store(f"sqlite:///{state_dir / 'vault.db'}", keys.audit_key())
    try:
        rows = {r.template_id: r for r in store.list("default", include_revoked=True)}
        assert acknowledged <= set(rows), acknowledged - set(rows)
        records = list(store.audit_records())
        assert verify_chain(keys.audit_key(), records) == []
        audited = {t for r in records if r.entry.rpc in ("Enroll", "Reissue") for t in r.entry.template_id.replace("->", ",").split(",")}
        assert set(rows) <= audited  # no template without its audit record
        for row in rows.values():
            if row.status == REVOKED and row.replaced_by:
                assert rows[row.replaced_by].status in (LIVE, REVOKED)
        live_per_subject = {}
        for row in rows.values():
            live_per_subject[row.subject_id] = live_per_subject.get(row.subject_id, 0) + (row.status == LIVE)
        return rows, live_per_subject
    finally:
        store.close()


@pytest.mark.parametrize("round_", range(2))
def test_kill_9_during_bulk_enrolment_and_reissue_loses_nothing(server_factory, round_):
    rng = random.Random(round_)
    server = server_factory(f"crash{round_}")
    stub = server.stub()
    acknowledged: set[str] = set()
    # Subject s1 enrolled from images 1 and 3 matches its image 5 (tests/test_service.py).
    pair = [orl(1, 1), orl(1, 3)]
    reissue_subject = stub.Enroll(pb.EnrollRequest(subject_id="r", modality=pb.FACE, samples=pair)).template_id
    acknowledged.add(reissue_subject)
    stop = threading.Event()

    def bulk():
        subject = 2
        while not stop.is_set() and subject <= 40:
            try:
                acknowledged.add(stub.Enroll(pb.EnrollRequest(subject_id=f"s{subject}", modality=pb.FACE,
                                                              samples=[orl(subject, 1)]), timeout=30).template_id)
            except grpc.RpcError:
                return
            subject += 1

    def reissue():
        current = reissue_subject
        while not stop.is_set():
            try:
                current = stub.Reissue(pb.ReissueRequest(template_id=current, samples=pair), timeout=30).template_id
                acknowledged.add(current)
            except grpc.RpcError:
                return

    threads = [threading.Thread(target=bulk), threading.Thread(target=reissue)]
    for t in threads:
        t.start()
    # Kill at a random moment once work is under way (a slow machine must not turn this into a
    # kill before the first acknowledgement).
    deadline = time.monotonic() + 60
    while len(acknowledged) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(rng.uniform(0.0, 1.5))
    workers = descendants(server.process.pid)
    assert workers  # the extraction workers (and multiprocessing's resource tracker)
    server.stop(signal.SIGKILL)
    stop.set()
    for t in threads:
        t.join(30)

    # Nothing outlives a killed server: its workers notice at once and exit.
    deadline = time.monotonic() + 15
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in workers if alive(pid)]

    rows, live = check_consistency(server.state_dir, acknowledged)
    assert live["r"] == 1  # a reissue chain never loses or doubles its live template
    assert len(acknowledged) >= 2

    server.start()  # the restarted vault serves every acknowledged template
    stub = server.stub()
    assert "failed authentication" not in server.log()
    listed = {t.template_id for t in stub.ListTemplates(pb.ListTemplatesRequest(include_revoked=True)).templates}
    assert acknowledged <= listed
    assert stub.Verify(pb.VerifyRequest(subject_id="r", modality=pb.FACE, probe=orl(1, 5))).decision == pb.MATCH


def test_server_side_deadline(server_factory):
    # 0.1 s (the least allowed): shorter than extracting six faces (SFace, ~40 ms each on one worker), so the deadline falls mid-extraction
    server = server_factory("deadline", "--workers", "1", "--max-pending", "32", "--call-timeout", "0.1")
    with pytest.raises(grpc.RpcError) as slow:
        server.stub().Enroll(pb.EnrollRequest(subject_id="slow", modality=pb.FACE, samples=lfw_samples(6)), timeout=30)
    assert slow.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED and "longer than" in slow.value.details()
    # Nothing half-done: no template was stored for the timed-out enrolment, and the vault still serves.
    time.sleep(1.5)
    assert not server.stub().ListTemplates(pb.ListTemplatesRequest(subject_id="slow")).templates


def test_prometheus_metrics(server_factory, tmp_path):
    port = free_port()
    server = server_factory("metrics", "--metrics-listen", f"127.0.0.1:{port}")
    stub = server.stub()
    stub.Enroll(pb.EnrollRequest(subject_id="secret-subject-42", modality=pb.FACE, samples=[orl(3, 1)]))
    with pytest.raises(grpc.RpcError):
        stub.Enroll(pb.EnrollRequest(subject_id="x", modality=pb.FACE, samples=[pb.Sample(image=b"junk")]))
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert 'vault_rpc_total{code="OK",rpc="Enroll"} 1.0' in text
    assert 'vault_rpc_total{code="INVALID_ARGUMENT",rpc="Enroll"} 1.0' in text
    assert 'vault_rpc_seconds_bucket{le="+Inf",rpc="Enroll"} 2.0' in text
    assert 'vault_live_templates{tenant="default"} 1.0' in text
    assert 'vault_identify_expected_fnir{modality="face",tenant="default"}' in text
    assert "vault_extraction_pending 0.0" in text
    assert "secret-subject-42" not in text
