"""What a failed vault call means, as exceptions a panel can act on.

Every failed call raises a `VaultCallError` subclass chosen from the gRPC status and the vault's
`vault-reason` trailer, which tells apart causes that share a status: RESOURCE_EXHAUSTED is either
`LockedOut` (too many failures: do not retry, send the person to a desk) or `Overloaded` (the
server's queue is full: back off and retry). Messages never carry biometric data.
"""

from __future__ import annotations

import grpc

__all__ = [
    "VaultCallError", "InvalidRequest", "PoorSample", "NotFound", "Unauthenticated", "PermissionDenied",
    "LockedOut", "Overloaded", "Unavailable", "DeadlineExceeded", "IntegrityFailure", "from_rpc_error",
    "InsecureToken", "WrongGroup",
]


class InsecureToken(ValueError):
    """Settings with an API token but no TLS: the token would cross the wire in the clear, for
    anyone on the path (or a program squatting the port) to read and reuse. Refused before any call."""


class VaultCallError(Exception):
    """A vault call failed. `code` is the grpc.StatusCode, `details` the server's message and
    `reason` the vault-reason trailer ("" when the status has one cause)."""

    retryable = False  # True where the same call may succeed later without changing it

    def __init__(self, code: grpc.StatusCode, details: str, reason: str = ""):
        super().__init__(f"{code.name}: {details}")
        self.code, self.details, self.reason = code, details, reason


class InvalidRequest(VaultCallError):
    """INVALID_ARGUMENT: a missing field, a bad id, an image that does not decode."""


class PoorSample(VaultCallError):
    """FAILED_PRECONDITION: the sample decodes but is unusable (no face, blur, too few minutiae), or
    the template's state forbids the call (revoked). Take another sample or fix the request."""


class NotFound(VaultCallError):
    """NOT_FOUND: unknown subject or template (another tenant's ids look exactly like unknown ones)."""


class Unauthenticated(VaultCallError):
    """UNAUTHENTICATED: missing, revoked or wrong token, or no client certificate."""


class PermissionDenied(VaultCallError):
    """PERMISSION_DENIED: this identity's role may not make this call."""


class LockedOut(VaultCallError):
    """RESOURCE_EXHAUSTED, reason locked-out: too many failed attempts. Never retry automatically."""


class Overloaded(VaultCallError):
    """RESOURCE_EXHAUSTED, reason overloaded: the extraction queue is full; back off and retry."""

    retryable = True


class WrongGroup(VaultCallError):
    """FAILED_PRECONDITION, reason wrong-group: this tenant is served by another replica group (named
    in `group`, the vault-group trailer; "" when the tenant is assigned to none). Nothing was done.
    A client given the groups (`Settings(groups=...)`) resends there by itself."""

    def __init__(self, code: grpc.StatusCode, details: str, reason: str = "", group: str = ""):
        super().__init__(code, details, reason)
        self.group = group


class Unavailable(VaultCallError):
    """UNAVAILABLE: server or its store unreachable, after the channel's own retries. Fail closed."""

    retryable = True


class DeadlineExceeded(VaultCallError):
    """DEADLINE_EXCEEDED: no answer within the call's deadline. Fail closed."""

    retryable = True


class IntegrityFailure(VaultCallError):
    """DATA_LOSS: stored data failed authentication (tampering). Alert an operator."""


_BY_CODE = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidRequest,
    grpc.StatusCode.FAILED_PRECONDITION: PoorSample,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.DATA_LOSS: IntegrityFailure,
}
_BY_REASON = {"locked-out": LockedOut, "overloaded": Overloaded, "wrong-group": WrongGroup}


def from_rpc_error(error: grpc.RpcError) -> VaultCallError:
    """The VaultCallError for a failed call's grpc.RpcError."""
    trailers = dict(error.trailing_metadata() or ())
    reason = trailers.get("vault-reason", "")
    kind = _BY_REASON.get(reason) or _BY_CODE.get(error.code(), VaultCallError)
    if kind is WrongGroup:
        return WrongGroup(error.code(), error.details() or "", reason, trailers.get("vault-group", ""))
    return kind(error.code(), error.details() or "", reason)
