"""The Vault service end to end: a real `vault serve` process on a loopback port, a real SQLite
file, real faces from ../shared/data (ORL, LFW)."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.conftest import data_path, read
from vault.templates.profiles import CURRENT, FACE
from vault_client.v1 import vault_pb2 as pb

ORL_SUBJECTS = [f"s{i}" for i in range(1, 11)]


def orl(subject: str, image: int) -> pb.Sample:
    return pb.Sample(image=read("face", "orl", subject, f"{image}.pgm"))


def enrol_orl(stub, subject: str, images=(1, 3)) -> str:
    response = stub.Enroll(pb.EnrollRequest(subject_id=subject, modality=pb.FACE,
                                            samples=[orl(subject, i) for i in images]))
    assert len(response.sample_reports) == len(images)
    assert all(r.faces_found >= 1 for r in response.sample_reports)
    return response.template_id


def verify(stub, probe: pb.Sample, **claim) -> int:
    claim.setdefault("modality", pb.FACE)
    return stub.Verify(pb.VerifyRequest(probe=probe, **claim)).decision


def status_of(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as error:
        call()
    return error.value.code(), error.value.details()


@pytest.fixture(scope="module")
def enrolled(vault_server):
    stub = vault_server.stub()
    return {s: enrol_orl(stub, s) for s in ORL_SUBJECTS}


def test_health_and_reflection(vault_server):
    health = health_pb2_grpc.HealthStub(vault_server.channel)
    for service in ("", "vault.v1.Vault"):
        assert health.Check(health_pb2.HealthCheckRequest(service=service)).status == health_pb2.HealthCheckResponse.SERVING
    for health_of in ("vault.v1.Admin", "vault.v1.Audit"):
        assert health.Check(health_pb2.HealthCheckRequest(service=health_of)).status == health_pb2.HealthCheckResponse.SERVING
    # Reflection v1alpha through its stub, and v1 (the same messages under the v1 service name).
    v1alpha = reflection_pb2_grpc.ServerReflectionStub(vault_server.channel).ServerReflectionInfo
    v1 = vault_server.channel.stream_stream("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                                            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                                            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)
    for version in (v1alpha, v1):
        listed = next(version(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
        names = {s.name for s in listed.list_services_response.service}
        assert {"vault.v1.Vault", "vault.v1.Admin", "vault.v1.Audit", "grpc.health.v1.Health",
                "grpc.reflection.v1.ServerReflection"} <= names
        described = next(version(iter([reflection_pb2.ServerReflectionRequest(file_containing_symbol="vault.v1.Vault")])))
        assert described.file_descriptor_response.file_descriptor_proto


def test_genuine_verify_matches(vault_server, enrolled):
    stub = vault_server.stub()
    decisions = [verify(stub, orl(s, 5), subject_id=s) for s in ORL_SUBJECTS]
    assert decisions.count(pb.MATCH) >= 9, decisions  # ORL genuine accept is ~0.97 at FMR 1e-3
    by_template = [verify(stub, orl(s, 7), template_id=t) for s, t in enrolled.items()]
    assert by_template.count(pb.MATCH) >= 9, by_template


def test_impostor_verify_fails(vault_server, enrolled):
    stub = vault_server.stub()
    for claimed, actual in zip(ORL_SUBJECTS, ORL_SUBJECTS[1:] + ORL_SUBJECTS[:1]):
        assert verify(stub, orl(actual, 5), subject_id=claimed) == pb.NO_MATCH, (claimed, actual)


def test_identify_finds_the_right_subject(vault_server, enrolled):
    stub = vault_server.stub()
    correct = 0
    for subject in ORL_SUBJECTS:
        response = stub.Identify(pb.IdentifyRequest(modality=pb.FACE, probe=orl(subject, 8), max_candidates=3))
        assert [c.rank for c in response.candidates] == list(range(1, len(response.candidates) + 1))
        correct += bool(response.candidates) and response.candidates[0].subject_id == subject
    assert correct >= 9


def test_identify_stranger_gets_no_candidate(vault_server, enrolled):
    stub = vault_server.stub()
    strangers = [f"s{i}" for i in range(31, 36)]
    empty = sum(not stub.Identify(pb.IdentifyRequest(modality=pb.FACE, probe=orl(s, 1), max_candidates=5)).candidates
                for s in strangers)
    assert empty == len(strangers)


def test_lfw_identify_among_many(vault_server):
    """30 LFW people enrolled with one photo each: their second photo finds them, while 30 people
    never enrolled get no candidate (Identify holds its FPIR target, 1%, at the gallery's size)."""
    stub = vault_server.stub()
    everyone = sorted(p.name for p in data_path("face", "lfw").iterdir())
    people, strangers = everyone[100:130], everyone[300:330]

    def photo(person: str, n: int) -> pb.Sample:
        return pb.Sample(image=sorted(data_path("face", "lfw", person).glob("*.jpg"))[n].read_bytes())

    for person in people:
        stub.Enroll(pb.EnrollRequest(subject_id=f"lfw:{person}", modality=pb.FACE, samples=[photo(person, 0)]))
    found = 0
    for person in people:
        response = stub.Identify(pb.IdentifyRequest(modality=pb.FACE, probe=photo(person, 1), max_candidates=1))
        found += bool(response.candidates) and response.candidates[0].subject_id == f"lfw:{person}"
    # In-the-wild photos: FNIR ~0.1 at this size (benchmarks/results/identify_fpir.md); the key is
    # fixed, so the count is too.
    assert found >= 24, found
    admitted = sum(bool(stub.Identify(pb.IdentifyRequest(modality=pb.FACE, probe=photo(person, n))).candidates)
                   for person in strangers for n in (0, 1))
    assert admitted <= 2, admitted  # 60 searches at FPIR 0.01: ~0.6 expected


def test_revoke_stops_matches(vault_server):
    stub = vault_server.stub()
    template = enrol_orl(stub, "s20")
    assert verify(stub, orl("s20", 5), subject_id="s20") == pb.MATCH
    revoked = stub.Revoke(pb.RevokeRequest(template_id=template, reason="left the company"))
    assert list(revoked.revoked_template_ids) == [template]
    assert verify(stub, orl("s20", 5), subject_id="s20") == pb.NO_MATCH
    assert verify(stub, orl("s20", 5), template_id=template) == pb.NO_MATCH
    identified = stub.Identify(pb.IdentifyRequest(modality=pb.FACE, probe=orl("s20", 6), max_candidates=5))
    assert "s20" not in [c.subject_id for c in identified.candidates]
    code, _ = status_of(lambda: stub.Revoke(pb.RevokeRequest(template_id=template)))
    assert code == grpc.StatusCode.NOT_FOUND
    listed = stub.ListTemplates(pb.ListTemplatesRequest(subject_id="s20", include_revoked=True)).templates
    assert [(t.status, t.revoke_reason) for t in listed] == [(pb.REVOKED, "left the company")]


def test_revoke_by_subject_revokes_every_template(vault_server):
    stub = vault_server.stub()
    first, second = enrol_orl(stub, "s21", (1,)), enrol_orl(stub, "s21", (2, 3))
    revoked = stub.Revoke(pb.RevokeRequest(subject_id="s21", reason="offboarding"))
    assert sorted(revoked.revoked_template_ids) == sorted([first, second])
    assert not stub.ListTemplates(pb.ListTemplatesRequest(subject_id="s21")).templates


def test_reissue_replaces_the_template(vault_server):
    stub = vault_server.stub()
    old = enrol_orl(stub, "s22", (1,))
    response = stub.Reissue(pb.ReissueRequest(template_id=old, samples=[orl("s22", 2), orl("s22", 4)], reason="suspected leak"))
    assert response.revoked_template_id == old and response.template_id != old
    assert verify(stub, orl("s22", 6), template_id=old) == pb.NO_MATCH
    assert verify(stub, orl("s22", 6), template_id=response.template_id) == pb.MATCH
    assert verify(stub, orl("s22", 6), subject_id="s22") == pb.MATCH
    listed = {t.template_id: t for t in stub.ListTemplates(pb.ListTemplatesRequest(subject_id="s22", include_revoked=True)).templates}
    assert listed[old].status == pb.REVOKED and listed[old].replaced_by == response.template_id
    assert listed[response.template_id].status == pb.LIVE and listed[response.template_id].sample_count == 2
    code, _ = status_of(lambda: stub.Reissue(pb.ReissueRequest(template_id=old, samples=[orl("s22", 5)])))
    assert code == grpc.StatusCode.NOT_FOUND


def test_list_templates_is_metadata_only(vault_server, enrolled):
    stub = vault_server.stub()
    templates = stub.ListTemplates(pb.ListTemplatesRequest(subject_id="s1")).templates
    assert [t.template_id for t in templates] == [enrolled["s1"]]
    t = templates[0]
    assert (t.modality, t.status, t.profile, t.key_version, t.sample_count) == (pb.FACE, pb.LIVE, CURRENT[FACE].name, 1, 2)
    assert set(f.name for f, _ in t.ListFields()) <= {
        "template_id", "subject_id", "modality", "status", "created_at", "key_version", "profile", "sample_count"}


BAD_SAMPLES = {
    "empty": b"",
    "garbage": b"this is not an image" * 10,
    "truncated jpeg": None,  # filled from a real file below
    "gif": b"GIF89a\x01\x00\x01\x00\x00\x00\x00;",
}


@pytest.mark.parametrize("name", list(BAD_SAMPLES))
def test_corrupt_or_empty_images_get_invalid_argument(vault_server, name):
    stub = vault_server.stub()
    payload = BAD_SAMPLES[name]
    if payload is None:
        payload = sorted(data_path("face", "lfw", "Al_Gore").glob("*.jpg"))[0].read_bytes()[:600]
    code, details = status_of(lambda: stub.Enroll(pb.EnrollRequest(subject_id="x", modality=pb.FACE,
                                                                   samples=[pb.Sample(image=payload)])))
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    assert "image" in details and "Traceback" not in details


def test_no_face_is_failed_precondition(vault_server):
    stub = vault_server.stub()
    fingerprint = read("fingerprint", "fvc2002", "db1_b", "101_1.tif")
    # TIFF is not a face format; a fingerprint re-sent as PNG decodes but holds no face.
    from io import BytesIO

    from PIL import Image

    png = BytesIO()
    Image.open(BytesIO(fingerprint)).save(png, format="PNG")
    code, details = status_of(lambda: stub.Verify(pb.VerifyRequest(subject_id="s1", modality=pb.FACE,
                                                                   probe=pb.Sample(image=png.getvalue()))))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "no face" in details


@pytest.mark.parametrize("request_, expected", [
    (pb.EnrollRequest(modality=pb.FACE), "subject_id"),
    (pb.EnrollRequest(subject_id="a", samples=[pb.Sample(image=b"x")]), "modality"),
    (pb.EnrollRequest(subject_id="a", modality=pb.FACE), "sample"),
    (pb.EnrollRequest(subject_id="a" * 500, modality=pb.FACE), "subject_id"),
    (pb.EnrollRequest(subject_id="a", modality=pb.FACE, finger=pb.LEFT_INDEX), "finger"),
    (pb.EnrollRequest(subject_id="a", modality=pb.FINGERPRINT, finger=99), "finger"),
    (pb.EnrollRequest(subject_id="a", modality=pb.FACE, samples=[pb.Sample(iso_19794_2=b"FMR\x00")]), "ISO"),
])
def test_bad_requests_get_invalid_argument(vault_server, request_, expected):
    code, details = status_of(lambda: vault_server.stub().Enroll(request_))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and expected in details


def test_face_embeddings_are_off_by_default(vault_server):
    sample = pb.Sample(face_embedding=pb.FaceEmbedding(values=[0.1] * 128))
    code, details = status_of(lambda: vault_server.stub().Enroll(pb.EnrollRequest(
        subject_id="a", modality=pb.FACE, samples=[sample])))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "embedding" in details


def test_identify_max_candidates_bounds(vault_server):
    code, _ = status_of(lambda: vault_server.stub().Identify(pb.IdentifyRequest(
        modality=pb.FACE, probe=orl("s1", 2), max_candidates=-1)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT


def test_the_cli_walk_through(vault_server, enrolled, capsys, monkeypatch):
    """The README's client commands against the server: exit codes 0, 3 and 1 mean what --help says."""
    from vault.cli import main

    monkeypatch.setenv("VAULT_SERVER", f"127.0.0.1:{vault_server.port}")
    photo = lambda subject, image: str(data_path("face", "orl", subject, f"{image}.pgm"))  # noqa: E731
    assert main(["enroll", "--subject", "cli-person", photo("s12", 1), photo("s12", 3)]) == 0
    assert "enrolled cli-person: template" in capsys.readouterr().out
    assert main(["verify", "--subject", "cli-person", photo("s12", 5)]) == 0
    assert capsys.readouterr().out.startswith("MATCH (decision ")
    assert main(["verify", "--subject", "cli-person", photo("s13", 5)]) == 3
    assert capsys.readouterr().out.startswith("NO_MATCH")
    assert main(["identify", photo("s12", 6)]) == 0
    assert "cli-person" in capsys.readouterr().out
    assert main(["list", "--subject", "cli-person"]) == 0
    listed = capsys.readouterr().out
    assert "cli-person" in listed and " LIVE " in listed
    assert main(["revoke", "--subject", "cli-person", "--reason", "test"]) == 0
    assert "revoked " in capsys.readouterr().out
    assert main(["enroll", "--subject", "x", __file__]) == 1  # not an image: INVALID_ARGUMENT, exit 1
    assert "INVALID_ARGUMENT" in capsys.readouterr().err
    assert main(["health"]) == 0


def population_photo(folder: str, person: str, index: int) -> pb.Sample:
    files = sorted(p for p in data_path("face", folder, person).iterdir() if not p.name.startswith("."))
    return pb.Sample(image=files[index].read_bytes())


@pytest.mark.parametrize("folder, people", [("jaffe", ("KA", "KL", "KM", "KR", "MK")),
                                            ("casia_face_v5", ("000", "001", "002", "003", "004"))])
def test_east_asian_faces_from_tiff_and_bmp_match_their_own_and_no_one_else(vault_server, folder, people):
    """The face issue's attack on the LFW-fitted threshold: an East Asian site's people, enrolled from
    the TIFF (JAFFE) and BMP (CASIA-FaceV5) files their capture delivers, probed as each other. With
    one global threshold, JAFFE's impostors passed at 0.76; normalised against the tenant's own
    cohort, none passes, and each person's own other photo still does."""
    stub = vault_server.stub()
    tag = f"{folder}-pop"
    for person in people:
        stub.Enroll(pb.EnrollRequest(subject_id=f"{tag}-{person}", modality=pb.FACE,
                                     samples=[population_photo(folder, person, 0)]))
    for person in people:
        probe = population_photo(folder, person, 2)
        assert verify(stub, probe, subject_id=f"{tag}-{person}") == pb.MATCH
        others = [p for p in people if p != person]
        assert all(verify(stub, probe, subject_id=f"{tag}-{other}") == pb.NO_MATCH for other in others)
    found = stub.Identify(pb.IdentifyRequest(modality=pb.FACE, probe=population_photo(folder, people[0], 2),
                                             max_candidates=3))
    assert [c.subject_id for c in found.candidates][:1] == [f"{tag}-{people[0]}"]
