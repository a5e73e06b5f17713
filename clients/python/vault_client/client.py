"""VaultClient: one typed method per RPC of the vault API.

Requests and answers are the API's own messages (vault_client.v1.vault_pb2), so every field is
typed and documented in the proto. Every failed call raises a vault_client.errors exception.
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Iterable, Iterator, List, Optional, Union

import grpc

from vault_client.connection import Settings, open_channel
from vault_client.errors import InsecureToken, from_rpc_error
from vault_client.v1 import vault_pb2 as pb
from vault_client.v1 import vault_pb2_grpc

__all__ = ["VaultClient", "SampleLike", "sample"]

SampleLike = Union[pb.Sample, bytes, Path]
_MODALITIES = {"face": pb.FACE, "fingerprint": pb.FINGERPRINT}
_ISO_19794_2 = b"FMR\x00"


def sample(data: SampleLike) -> pb.Sample:
    """A Sample from image bytes, an ISO/IEC 19794-2 record (told by its "FMR" header) or a file."""
    if isinstance(data, pb.Sample):
        return data
    if isinstance(data, Path):
        data = data.read_bytes()
    if data[:4] == _ISO_19794_2:
        return pb.Sample(iso_19794_2=data)
    return pb.Sample(image=data)


def _modality(modality: Union[str, int]) -> int:
    return _MODALITIES[modality] if isinstance(modality, str) else modality


class VaultClient:
    """A connection to one vault. Thread-safe; use one per process and close it (or use `with`)."""

    def __init__(self, settings: Optional[Settings] = None, *, channel: Optional[grpc.Channel] = None):
        self.settings = settings or Settings.from_environment()
        if self.settings.token and self.settings.tls is None:
            raise InsecureToken(f"refusing to send an API token to {self.settings.target} over a plaintext channel: "
                                "anyone on the path could read and reuse it. Connect with TLS (Settings(tls="
                                "TlsIdentity.from_dir(...))); a plaintext loopback server needs no token")
        if self.settings.groups and channel is None:
            self._router: Optional[_Router] = _Router(self.settings)
            self._channel = None
            self._vault, self._admin, self._audit = (_RoutedStub(self._router, kind) for kind in _STUBS)
        else:
            self._router = None
            self._channel = channel or open_channel(self.settings)
            self._vault = vault_pb2_grpc.VaultStub(self._channel)
            self._admin = vault_pb2_grpc.AdminStub(self._channel)
            self._audit = vault_pb2_grpc.AuditStub(self._channel)
        self._metadata = (("authorization", f"Bearer {self.settings.token}"),) if self.settings.token else ()

    @property
    def group(self) -> Optional[str]:
        """The replica group this client's calls go to (None without groups, or before the first call)."""
        return self._router.home if self._router is not None and self._router.located else None

    def close(self) -> None:
        if self._router is not None:
            self._router.close()
        else:
            self._channel.close()

    def __enter__(self) -> "VaultClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, method, request, timeout: Optional[float] = None):
        try:
            return method(request, timeout=timeout or self.settings.timeout_s, metadata=self._metadata)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None

    # -- Vault: panels, HR systems --------------------------------------------------------------
    def enroll(self, subject_id: str, samples: Iterable[SampleLike], *, modality: Union[str, int] = "face",
               finger: int = 0, require_single_face: bool = False) -> pb.EnrollResponse:
        """Enrol one person from one or more samples of one modality (and finger)."""
        request = pb.EnrollRequest(subject_id=subject_id, modality=_modality(modality), finger=finger,
                                   samples=[sample(s) for s in samples], require_single_face=require_single_face)
        return self._call(self._vault.Enroll, request, self.settings.enroll_timeout_s)

    def verify(self, probe: SampleLike, *, subject_id: str = "", template_id: str = "",
               modality: Union[str, int] = "face", finger: int = 0,
               require_single_face: bool = False) -> pb.VerifyResponse:
        """1:1: does the probe belong to the claimed subject (or template)? `.decision == pb.MATCH`."""
        if bool(subject_id) == bool(template_id):
            raise ValueError("verify needs exactly one of subject_id or template_id")
        claim = {"subject_id": subject_id} if subject_id else {"template_id": template_id}
        request = pb.VerifyRequest(**claim, modality=_modality(modality), finger=finger, probe=sample(probe),
                                   require_single_face=require_single_face)
        return self._call(self._vault.Verify, request)

    def identify(self, probe: SampleLike, *, modality: Union[str, int] = "face", finger: int = 0,
                 max_candidates: int = 5, require_single_face: bool = False) -> pb.IdentifyResponse:
        """1:N: the enrolled people the probe matches, best first (empty for a stranger)."""
        request = pb.IdentifyRequest(modality=_modality(modality), finger=finger, probe=sample(probe),
                                     max_candidates=max_candidates, require_single_face=require_single_face)
        return self._call(self._vault.Identify, request)

    def revoke(self, *, template_id: str = "", subject_id: str = "", reason: str = "") -> List[str]:
        """Revoke one template, or every live template of a subject; returns the revoked ids."""
        if bool(subject_id) == bool(template_id):
            raise ValueError("revoke needs exactly one of subject_id or template_id")
        target = {"subject_id": subject_id} if subject_id else {"template_id": template_id}
        return list(self._call(self._vault.Revoke, pb.RevokeRequest(**target, reason=reason)).revoked_template_ids)

    def reissue(self, template_id: str, samples: Iterable[SampleLike], *, reason: str = "",
                require_single_face: bool = False) -> pb.ReissueResponse:
        """Replace a template with one from new samples under a fresh salt (the old one is revoked)."""
        request = pb.ReissueRequest(template_id=template_id, samples=[sample(s) for s in samples], reason=reason,
                                    require_single_face=require_single_face)
        return self._call(self._vault.Reissue, request, self.settings.enroll_timeout_s)

    def list_templates(self, subject_id: str = "", *, include_revoked: bool = False,
                       only_old_key_versions: bool = False, page_size: int = 1000) -> List[pb.TemplateInfo]:
        """Template metadata (never template bytes), every page of it (page_size templates a call)."""
        return list(self.iter_templates(subject_id, include_revoked=include_revoked,
                                        only_old_key_versions=only_old_key_versions, page_size=page_size))

    def iter_templates(self, subject_id: str = "", *, include_revoked: bool = False,
                       only_old_key_versions: bool = False, page_size: int = 1000) -> Iterator[pb.TemplateInfo]:
        """Template metadata a page at a time (ListTemplates' page_token), in template id order."""
        token = ""
        while True:
            request = pb.ListTemplatesRequest(subject_id=subject_id, include_revoked=include_revoked,
                                              only_old_key_versions=only_old_key_versions, page_size=page_size,
                                              page_token=token)
            response = self._call(self._vault.ListTemplates, request)
            yield from response.templates
            token = response.next_page_token
            if not token:
                return

    # -- Admin ------------------------------------------------------------------------------------
    def create_token(self, role: str, name: str = "", expires_in_s: int = 0) -> pb.CreateTokenResponse:
        """A new API token of the caller's tenant; `.token` is shown this once. It expires after
        `expires_in_s` seconds (0: the server's default, 90 days)."""
        return self._call(self._admin.CreateToken,
                          pb.CreateTokenRequest(role=role, name=name, expires_in_seconds=expires_in_s))

    def list_tokens(self) -> List[pb.TokenInfo]:
        return list(self._call(self._admin.ListTokens, pb.ListTokensRequest()).tokens)

    def revoke_token(self, token_id: str) -> None:
        self._call(self._admin.RevokeToken, pb.RevokeTokenRequest(token_id=token_id))

    def rotate_key(self) -> int:
        """Start a new key version; returns its number."""
        return self._call(self._admin.RotateKey, pb.RotateKeyRequest()).key_version

    def key_status(self) -> pb.KeyStatusResponse:
        """Key versions, who is on an old one, and whether Identify holds its FPIR at this gallery size."""
        return self._call(self._admin.KeyStatus, pb.KeyStatusRequest())

    def destroy_key_version(self, key_version: int) -> int:
        """Crypto-shred an old key version no live template uses; returns the templates shredded."""
        request = pb.DestroyKeyVersionRequest(key_version=key_version)
        return self._call(self._admin.DestroyKeyVersion, request).shredded_templates

    # -- Audit ------------------------------------------------------------------------------------
    def read_audit(self, after_seq: int = 0, limit: int = 1000) -> Iterator[pb.AuditRecord]:
        """The tenant's audit records after `after_seq`, oldest first."""
        try:
            yield from self._audit.ReadAudit(pb.ReadAuditRequest(after_seq=after_seq, limit=limit),
                                             timeout=self.settings.timeout_s, metadata=self._metadata)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None

    def verify_audit(self) -> pb.VerifyAuditResponse:
        """Check the tenant's hash chain and the server's anchor of its head."""
        return self._call(self._audit.VerifyAudit, pb.VerifyAuditRequest())


# -- replica groups -------------------------------------------------------------------------------
_STUBS = (vault_pb2_grpc.VaultStub, vault_pb2_grpc.AdminStub, vault_pb2_grpc.AuditStub)
_STREAMS = {"ReadAudit"}  # server-streaming: its refusal comes with the first message
_RECONNECT_MAX_S = 1.0


class _Router:
    """Sends each call to the replica group serving this client's tenant (Settings.groups).

    A replica answering for another group's tenant refuses before doing or counting anything
    (FAILED_PRECONDITION, vault-reason wrong-group) and names the right group in the vault-group
    trailer: the call is resent there, and later calls go there first (a tenant that moves is
    followed the same way). Until one group has answered, an UNAVAILABLE group is passed over for
    the next; after that, UNAVAILABLE is the caller's (errors.Unavailable, retryable): the tenant's
    own group is down, and no other group holds its templates."""

    def __init__(self, settings: Settings):
        # A group that restarts is tried again within a second or two, not after gRPC's growing backoff.
        self.channels = {name: open_channel(dataclasses.replace(settings, target=target, groups=None),
                                            reconnect_max_s=_RECONNECT_MAX_S) for name, target in settings.groups.items()}
        self.stubs = {name: tuple(kind(channel) for kind in _STUBS) for name, channel in self.channels.items()}
        self.home = next(iter(self.channels))
        self.located = False
        self._lock = threading.Lock()

    def call(self, kind: int, name: str, request, **options):
        group, tried = self.home, set()
        while True:
            try:
                answer = getattr(self.stubs[group][kind], name)(request, **options)
                if name in _STREAMS:
                    answer = _peeked(answer)
            except grpc.RpcError as error:
                tried.add(group)
                group = self._next(error, tried)
                if group is None:
                    raise
                continue
            with self._lock:
                self.home, self.located = group, True
            return answer

    def _next(self, error: grpc.RpcError, tried: set) -> Optional[str]:
        """The group to resend a refused call to, or None (the error stands)."""
        trailers = dict(error.trailing_metadata() or ())
        if error.code() == grpc.StatusCode.FAILED_PRECONDITION and trailers.get("vault-reason") == "wrong-group":
            right = trailers.get("vault-group", "")
            return right if right in self.stubs and right not in tried else None
        if error.code() == grpc.StatusCode.UNAVAILABLE and not self.located:
            return next((g for g in self.stubs if g not in tried), None)
        return None

    def close(self) -> None:
        for channel in self.channels.values():
            channel.close()


def _peeked(responses):
    """A response stream whose first message (or error) has arrived: a refusal raises here."""
    import itertools

    try:
        first = next(responses)
    except StopIteration:
        return iter(())
    return itertools.chain([first], responses)


class _RoutedStub:
    """Stands in for a VaultStub, AdminStub or AuditStub: every method goes through the router."""

    def __init__(self, router: _Router, kind):
        self._router, self._kind = router, _STUBS.index(kind)

    def __getattr__(self, name: str):
        return lambda request, **options: self._router.call(self._kind, name, request, **options)
