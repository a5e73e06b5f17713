"""Hostile input: every RPC with property-based requests against a real server, and a bounded
coverage-guided (atheris) run of the ISO/IEC 19794-2 parser and the image decoders."""

from __future__ import annotations

import struct
import subprocess
import sys
import zlib

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import ROOT, data_path, read
from vault_client.v1 import vault_pb2 as pb

EXPECTED = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION,
            grpc.StatusCode.NOT_FOUND, grpc.StatusCode.RESOURCE_EXHAUSTED}
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares width x height pixels but carries almost no data (a decompression bomb's header)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 1024)) + chunk(b"IEND", b""))


REAL = {
    "face": read("face", "orl", "s1", "1.pgm"),
    "jpeg": sorted(data_path("face", "lfw", "Al_Gore").glob("*.jpg"))[0].read_bytes(),
    "tif": read("fingerprint", "fvc2002", "db1_b", "101_1.tif"),
    "iso": read("fingerprint_iso19794_2", "fvc2002", "db1_b", "101_1.iso"),
}

ids = st.one_of(st.just(""), st.text(max_size=40), st.builds(lambda c, n: c * n, st.sampled_from("a\u00e9\x00"), st.integers(129, 10_000)),
                st.sampled_from(["'; DROP TABLE templates; --", "\x00\x01", "s1", "../../etc/passwd", "\ufffd\u202e"]))
payloads = st.one_of(
    st.binary(max_size=2048),
    st.sampled_from(list(REAL.values())),
    st.builds(lambda blob, cut: blob[:cut], st.sampled_from(list(REAL.values())), st.integers(0, 4000)),
    st.builds(lambda blob, pos, byte: blob[:pos] + bytes([byte]) + blob[pos + 1:], st.sampled_from(list(REAL.values())),
              st.integers(0, 3000), st.integers(0, 255)),
    st.builds(png_header, st.integers(1, 200_000), st.integers(1, 200_000)),
)
samples = st.lists(st.one_of(st.builds(lambda b: pb.Sample(image=b), payloads),
                             st.builds(lambda b: pb.Sample(iso_19794_2=b), payloads),
                             st.just(pb.Sample())), max_size=3)
int32 = st.integers(-(2 ** 31), 2 ** 31 - 1)
modality = st.one_of(st.sampled_from([0, 1, 2]), int32)
finger = st.one_of(st.integers(0, 10), int32)


@pytest.fixture(scope="module")
def stub(vault_server):
    stub = vault_server.stub()
    stub.Enroll(pb.EnrollRequest(subject_id="s1", modality=pb.FACE, samples=[pb.Sample(image=REAL["face"])]))
    return stub


def call(stub, method: str, request):
    try:
        getattr(stub, method)(request, timeout=60)
        return grpc.StatusCode.OK, ""
    except grpc.RpcError as error:
        return error.code(), error.details() or ""


def check(outcome):
    code, details = outcome
    assert code in EXPECTED, outcome
    assert "Traceback" not in details and 'File "' not in details and "/work/" not in details


@FUZZ
@given(subject=ids, modality=modality, finger=finger, samples=samples, single=st.booleans())
def test_fuzz_enroll(stub, subject, modality, finger, samples, single):
    check(call(stub, "Enroll", pb.EnrollRequest(subject_id=subject, modality=modality, finger=finger,
                                                samples=samples, require_single_face=single)))


@FUZZ
@given(claim=st.sampled_from(["subject_id", "template_id", None]), value=ids, modality=modality, finger=finger,
       probe=samples)
def test_fuzz_verify(stub, claim, value, modality, finger, probe):
    request = pb.VerifyRequest(modality=modality, finger=finger, probe=probe[0] if probe else None)
    if claim:
        setattr(request, claim, value)
    check(call(stub, "Verify", request))


@FUZZ
@given(modality=modality, finger=finger, probe=samples, limit=int32)
def test_fuzz_identify(stub, modality, finger, probe, limit):
    check(call(stub, "Identify", pb.IdentifyRequest(modality=modality, finger=finger, probe=probe[0] if probe else None,
                                                     max_candidates=limit)))


@FUZZ
@given(template=ids, subject=ids, reason=ids, samples=samples, list_subject=ids, revoked=st.booleans())
def test_fuzz_revoke_reissue_list(stub, template, subject, reason, samples, list_subject, revoked):
    check(call(stub, "Revoke", pb.RevokeRequest(template_id=template, reason=reason)))
    check(call(stub, "Revoke", pb.RevokeRequest(subject_id=subject + "-fuzz", reason=reason)))
    check(call(stub, "Reissue", pb.ReissueRequest(template_id=template, samples=samples, reason=reason)))
    check(call(stub, "ListTemplates", pb.ListTemplatesRequest(subject_id=list_subject, include_revoked=revoked)))


def test_server_survives_and_still_matches_after_fuzzing(stub, vault_server):
    assert vault_server.process.poll() is None
    probe = pb.Sample(image=read("face", "orl", "s1", "3.pgm"))
    assert stub.Verify(pb.VerifyRequest(subject_id="s1", modality=pb.FACE, probe=probe)).decision == pb.MATCH
    assert "Traceback" not in vault_server.log()


def test_oversized_message_is_refused(stub):
    code, _ = call(stub, "Enroll", pb.EnrollRequest(subject_id="big", modality=pb.FACE,
                                                    samples=[pb.Sample(image=b"\xff" * (17 * 1024 * 1024))]))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_decompression_bomb_is_refused_before_decoding(stub):
    code, details = call(stub, "Enroll", pb.EnrollRequest(subject_id="bomb", modality=pb.FACE,
                                                          samples=[pb.Sample(image=png_header(60_000, 60_000))]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "pixels" in details


@pytest.mark.parametrize("target, runs", [("iso", 10_000), ("face", 1_000), ("fingerprint", 1_000)])
def test_atheris_parsers(target, runs, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    seeds = {"iso": [REAL["iso"]], "face": [REAL["face"], REAL["jpeg"][:3000]], "fingerprint": [REAL["tif"][:4000]]}[target]
    for i, seed in enumerate(seeds):
        (corpus / f"seed{i}").write_bytes(seed)
    result = subprocess.run([sys.executable, "tests/fuzz/parsers.py", target, f"-atheris_runs={runs}",
                             "-max_len=65536", "-rss_limit_mb=4096", str(corpus)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Done" in result.stderr
