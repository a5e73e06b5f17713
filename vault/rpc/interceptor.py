"""The rules every vault RPC shares, in one place, for unary and streaming calls alike:

    parse the request -> who is calling (token or client certificate) -> may their role call this
    method (denials are audited) -> run under the server's deadline -> map errors to gRPC statuses
    -> count the call in the metrics

Servicers read the caller with `caller()`. Health and reflection pass through untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
import uuid

import grpc

from vault.access.audit import AuditEntry
from vault.access.auth import AccessPolicy, Authenticator, Identity, bearer_token
from vault.exceptions import InvalidArgument, PermissionDenied, Unauthenticated, VaultError
from vault.replication import ReplicaGroup
from vault.store.base import AuditTrail

__all__ = ["Gatekeeper", "caller"]

log = logging.getLogger("vault.rpc")

_CALLER: contextvars.ContextVar[Identity] = contextvars.ContextVar("vault_caller")
_MALFORMED = object()  # a request whose bytes do not parse as the method's message


def caller() -> Identity:
    """The authenticated, authorised caller of the RPC being served."""
    return _CALLER.get()


class Gatekeeper(grpc.aio.ServerInterceptor):
    def __init__(self, services: set[str], authenticator: Authenticator, policy: AccessPolicy, audit_store: AuditTrail,
                 metrics=None, call_timeout_s: float | None = None, group: ReplicaGroup | None = None):
        """`services`: full names of the services this guards (e.g. vault.v1.Vault); `audit_store`
        records denials (its audit role: vault.store.base.AuditTrail); `group`: this replica's
        replica group, whose tenants alone it answers (None: every tenant)."""
        self.services = services
        self.authenticator = authenticator
        self.policy = policy
        self.audit_store = audit_store
        self.metrics = metrics
        self.call_timeout_s = call_timeout_s
        self.group = group

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        service, _, method = details.method.lstrip("/").rpartition("/")
        if handler is None or service not in self.services:
            return handler
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(method, handler.unary_unary), _tolerant(handler.request_deserializer),
                handler.response_serializer)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(method, handler.unary_stream), _tolerant(handler.request_deserializer),
                handler.response_serializer)
        return handler  # the vault has no client-streaming methods

    def _unary(self, method: str, behaviour):
        async def handle(request, context):
            async with self._guarded(method, context) as outcome:
                await self._admit(method, request, context)
                response = await asyncio.wait_for(behaviour(request, context), self.call_timeout_s)
                outcome.decision_id = getattr(response, "decision_id", "")
                return response

        return handle

    def _stream(self, method: str, behaviour):
        async def handle(request, context):
            async with self._guarded(method, context):
                await self._admit(method, request, context)
                async with asyncio.timeout(self.call_timeout_s):
                    async for message in behaviour(request, context):
                        yield message

        return handle

    @contextlib.asynccontextmanager
    async def _guarded(self, method: str, context):
        """Around one call: count it in the metrics however it ends, and turn an error the caller
        should see into its status (cancellations and aborts pass through)."""
        started, outcome, status = time.perf_counter(), _Outcome(method), None
        try:
            yield outcome
        except BaseException as error:  # noqa: BLE001 - every outcome is classified, then re-raised or sent
            status = outcome.classify(error, self.call_timeout_s)
            if status is None:
                raise
        finally:
            self._observe(outcome, started)
        if status is not None:
            await _refuse(context, status)

    async def _admit(self, method: str, request, context) -> None:
        """Set the caller for this call, or raise: malformed request, unknown caller, wrong role."""
        if request is _MALFORMED:
            raise InvalidArgument(f"the request is not a valid {method} message")
        token = bearer_token(context.invocation_metadata())
        certificate = (context.auth_context().get("x509_pem_cert") or [None])[0]
        identity = None
        try:
            # A token check is an HMAC and two lookups (the store's token row, the ledger's
            # revocations): off the event loop, so that a slow store delays only this call.
            identity = (await asyncio.to_thread(self.authenticator.identify, token, certificate) if token is not None
                        else self.authenticator.identify(None, certificate))
            self.policy.authorize(identity, method)
        except (Unauthenticated, PermissionDenied) as denial:
            await self._audit_denial(method, identity, denial)
            denial.identity = identity
            raise
        _CALLER.set(identity)
        # A tenant of another replica group is refused here, before the core counts an attempt or
        # searches an index that does not hold its templates (vault.replication.ReplicaGroup).
        if self.group is not None and not self.group.serves(identity.tenant):
            await asyncio.to_thread(self.group.admit, identity.tenant)

    async def _audit_denial(self, method: str, identity: Identity | None, denial: VaultError) -> None:
        entry = AuditEntry(method, identity.tenant if identity else "", identity.name if identity else "unknown",
                           decision="DENIED", detail=denial.status)
        try:
            await asyncio.to_thread(self.audit_store.record, entry)
        except Exception:  # the denial stands even if the store is down
            log.exception("could not audit a denied %s", method)

    def _observe(self, outcome: "_Outcome", started: float) -> None:
        """The call's access log line and metrics."""
        elapsed = time.perf_counter() - started
        caller = _CALLER.get(None) or outcome.denied
        access = {"rpc": outcome.method, "status": outcome.code, "latency_ms": round(1000 * elapsed, 1),
                  "tenant": caller.tenant if caller else "", "caller": caller.name if caller else "",
                  "role": caller.role if caller else "", "decision_id": outcome.decision_id}
        log.info("%s %s %.1f ms", outcome.method, outcome.code, 1000 * elapsed, extra=access)
        if self.metrics is not None:
            self.metrics.observe(outcome.method, outcome.code, elapsed)


class _Outcome:
    """How a call ended: the status code name for metrics and, for errors the caller should see,
    the (status, message) to abort with. Nothing here logs request content."""

    def __init__(self, method: str):
        self.method = method
        self.code = "OK"
        self.decision_id = ""
        self.denied: Identity | None = None  # a caller refused for their role

    def classify(self, error: BaseException, timeout_s: float | None):
        if isinstance(error, TimeoutError):
            self.code = "DEADLINE_EXCEEDED"
            log.info("%s took longer than %s s", self.method, timeout_s)
            return grpc.StatusCode.DEADLINE_EXCEEDED, f"the request took longer than {timeout_s:g} s"
        if isinstance(error, VaultError):
            self.code = error.status
            self.denied = getattr(error, "identity", None)
            log.info("%s %s: %s", self.method, self.code, error.message)
            return grpc.StatusCode[error.status], error.message, error.reason, error.trailers
        if isinstance(error, asyncio.CancelledError):
            self.code = "CANCELLED"
            return None
        if isinstance(error, (grpc.aio.AbortError, GeneratorExit)):
            return None
        if not isinstance(error, Exception):
            return None
        self.code = "INTERNAL"
        reference = uuid.uuid4().hex[:12]
        log.exception("%s failed, reference %s", self.method, reference)
        return grpc.StatusCode.INTERNAL, f"internal error, reference {reference}"


async def _refuse(context, status) -> None:
    """Abort the call with (code, details[, reason]); a reason (e.g. `locked-out` or `overloaded`,
    which share RESOURCE_EXHAUSTED) travels as the `vault-reason` trailer so clients can tell them
    apart without parsing messages."""
    code, details, *more = status
    reason, trailers = (more + ["", ()])[:2]
    if reason or trailers:
        context.set_trailing_metadata(((("vault-reason", reason),) if reason else ()) + tuple(trailers))
    await context.abort(code, details)


def _tolerant(deserialize):
    """The method's request parser, answering a sentinel instead of raising on bytes that do not
    parse, so a malformed message gets INVALID_ARGUMENT rather than UNKNOWN and a traceback."""
    if deserialize is None:
        return None

    def parse(data: bytes):
        try:
            return deserialize(data)
        except Exception:
            return _MALFORMED

    return parse
