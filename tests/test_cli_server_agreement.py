"""The CLI and the server agree (issue 25, friction 7 and 8): limits, required options, finger
names, format errors, ListTemplates paging. In-process, no server process (fast tier)."""

from __future__ import annotations

import asyncio
import io
from types import SimpleNamespace

import pytest
from PIL import Image

from vault.administration import MAX_AUDIT_BATCH
from vault.access.auth import Identity
from vault.cli import AUDIT_READ_MAX, FINGERS, FingerType, main
from vault.exceptions import InvalidArgument, InvalidSample
from vault.intake.images import decode_face
from vault.rpc import interceptor
from vault.rpc.servicers import VaultServicer
from vault_client.v1 import vault_pb2 as pb


def test_audit_read_limit_is_the_servers_cap(capsys):
    assert AUDIT_READ_MAX == MAX_AUDIT_BATCH
    assert main(["audit", "read", "--limit", str(MAX_AUDIT_BATCH + 1)]) == 2
    assert "10000" in capsys.readouterr().err


def test_token_create_without_a_role_is_a_usage_error(capsys):
    # Refused before any connection is made (nothing listens on this port).
    assert main(["token", "create", "--server", "127.0.0.1:1", "--name", "gate"]) == 2
    assert "--role" in capsys.readouterr().err
    assert main(["token", "revoke", "--server", "127.0.0.1:1"]) == 2


def test_fingers_by_name_or_code():
    finger = FingerType()
    assert finger.convert("right-thumb", None, None) == pb.RIGHT_THUMB == 1
    assert finger.convert("LEFT_LITTLE", None, None) == pb.LEFT_LITTLE == 10
    assert finger.convert("2", None, None) == pb.RIGHT_INDEX
    assert finger.convert("unknown", None, None) == 0
    assert {name.upper().replace("-", "_") for name in FINGERS} - {"UNKNOWN"} == (
        set(pb.FingerPosition.keys()) - {"FINGER_UNKNOWN"})
    for bad in ("11", "thumb", "-1"):
        with pytest.raises(Exception, match="not a finger"):
            finger.convert(bad, None, None)


def test_a_face_in_a_format_not_taken_names_the_formats_that_work():
    gif = io.BytesIO()
    Image.new("RGB", (64, 64)).save(gif, "GIF")
    with pytest.raises(InvalidSample, match=r"BMP, JPEG, PGM/PPM, PNG or TIFF; got GIF"):
        decode_face(gif.getvalue())
    with pytest.raises(InvalidSample, match=r"not a readable image file \(send BMP, JPEG, PGM/PPM, PNG or TIFF\)"):
        decode_face(b"this is not an image")


class _Listing:
    def __init__(self, ids):
        self.rows = [SimpleNamespace(template_id=i, subject_id=f"s-{i}", modality=pb.FACE, finger=0, status=pb.LIVE,
                                     created_at=1.0, revoked_at=None, key_version=1, profile="p", sample_count=1,
                                     revoke_reason="", replaced_by="") for i in ids]

    async def list_templates(self, caller, subject_id, include_revoked, only_old_key_versions):
        return list(self.rows)


def _list(servicer, **fields):
    async def call():
        interceptor._CALLER.set(Identity("t", frozenset({"auditor"}), "a"))
        return await servicer.ListTemplates(pb.ListTemplatesRequest(**fields), None)

    return asyncio.run(call())


def test_list_templates_pages_by_template_id_and_old_clients_get_everything():
    listing = _Listing([f"{n:04x}" for n in range(25, 0, -1)])
    servicer = VaultServicer(listing)
    everything = _list(servicer)
    assert len(everything.templates) == 25 and not everything.next_page_token  # page_size 0: as before paging
    seen, token, pages = [], "", 0
    while True:
        page = _list(servicer, page_size=10, page_token=token)
        seen += [t.template_id for t in page.templates]
        pages += 1
        token = page.next_page_token
        if not token:
            break
        listing.rows.append(listing.rows[0].__class__(**{**vars(listing.rows[0]), "template_id": "0000"}))  # enrolled between pages, sorts first
    assert pages == 3 and seen == sorted(f"{n:04x}" for n in range(1, 26))  # no repeat, no skip
    for bad in ("nope", "bm90LWEtdG9rZW4=", "!!!"):
        with pytest.raises(InvalidArgument, match="page_token"):
            _list(servicer, page_size=10, page_token=bad)
    with pytest.raises(InvalidArgument, match="page_size"):
        _list(servicer, page_size=10_001)
