"""The one error hierarchy of hal0 and the one renderer of its envelope.

Every error hal0 raises on ``/v1`` or ``/api`` is a ``Hal0Error`` subclass with a
class-level HTTP ``status``, a stable dotted ``code`` and an OpenAI error ``type``.
``envelope()`` turns one into the JSON body that SPEC section 5 describes.
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any, ClassVar

__all__ = [
    "AudioUnsupportedFormat",
    "AuthForbidden",
    "AuthInvalid",
    "AuthMissing",
    "CapabilityDisabled",
    "CapabilityIllegalPair",
    "CapabilityNotFound",
    "ConfigInvalid",
    "Hal0Error",
    "InternalError",
    "MethodNotAllowed",
    "ModelChecksumMismatch",
    "ModelFilesMissing",
    "ModelInUse",
    "ModelInvalid",
    "ModelNoSpace",
    "ModelNotFound",
    "ModelNotLoaded",
    "ModelPullFailed",
    "ModelTooLarge",
    "ModelWrongModality",
    "ProviderUnavailable",
    "PullCancelled",
    "PullNotFound",
    "RequestHeaderTooLarge",
    "RequestInvalid",
    "RequestInvalidSize",
    "RequestMalformed",
    "RequestMalformedHttp",
    "RequestTimeout",
    "RequestTooLarge",
    "ResponseNotFound",
    "RouteNotFound",
    "RunnerNotReady",
    "SlotBackendError",
    "SlotBuiltin",
    "SlotBusy",
    "SlotCancelled",
    "SlotDisabled",
    "SlotExists",
    "SlotIllegalTransition",
    "SlotInterrupted",
    "SlotInvalidName",
    "SlotLoading",
    "SlotNoMemory",
    "SlotNoModel",
    "SlotNotFound",
    "SlotNpuExclusive",
    "SlotPortInUse",
    "SlotPulling",
    "SlotReservedArg",
    "SlotStartFailed",
    "SlotStateError",
    "SlotSwapFailed",
    "SlotTimeout",
    "SlotUnreachable",
    "SystemBusy",
    "SystemNoSpace",
    "UpstreamDown",
    "UpstreamUnavailable",
    "WorkerUnreachable",
    "WorkerUnsafe",
    "anthropic_envelope",
    "anthropic_error_type",
    "envelope",
    "no_space",
]


class Hal0Error(Exception):
    """Base of every error hal0 reports to a client or operator."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "system.internal"
    type: ClassVar[str] = "server_error"
    # False: asking again cannot help until an operator acts (the SDKs' ``x-should-retry``).
    retryable: ClassVar[bool] = True

    def __init__(self, message: str, *, param: str | None = None,
                 retry_after: float | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.retry_after = retry_after
        self.details = details

    def headers(self) -> dict[str, str]:
        """Extra response headers: ``Retry-After``, and ``x-should-retry: false`` where retrying
        cannot help (the OpenAI and Anthropic SDKs otherwise retry every 5xx with backoff)."""
        out = {} if self.retry_after is None else {"Retry-After": str(max(1, round(self.retry_after)))}
        if not self.retryable:
            out["x-should-retry"] = "false"
        return out


def envelope(err: Hal0Error) -> dict[str, Any]:
    """The OpenAI-shaped error body for ``err``."""
    return {"error": {"message": err.message, "type": err.type, "code": err.code,
                      "param": err.param, "details": err.details}}


_ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                    404: "not_found_error", 409: "invalid_request_error", 413: "request_too_large",
                    415: "invalid_request_error", 429: "rate_limit_error", 503: "overloaded_error",
                    529: "overloaded_error"}


def anthropic_error_type(status: int) -> str:
    """Anthropic's error ``type`` for an HTTP status (what its SDK's exception classes follow)."""
    return _ANTHROPIC_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")


def anthropic_envelope(err: Hal0Error) -> dict[str, Any]:
    """``err`` in Anthropic's error shape; hal0's dotted ``code`` and ``details`` ride along."""
    return {"type": "error", "error": {"type": anthropic_error_type(err.status), "message": err.message,
                                       "code": err.code, "details": err.details}}


class InternalError(Hal0Error):
    pass


class ConfigInvalid(Hal0Error):
    status = 500
    code = "config.invalid"

    def __init__(self, file: str, key: str, problem: str) -> None:
        where = f"{file}: {key}" if key else file
        super().__init__(f"{where}: {problem}", file=file, key=key)


class RequestInvalid(Hal0Error):
    status = 400
    code = "request.invalid"
    type = "invalid_request_error"


class RequestInvalidSize(RequestInvalid):
    code = "request.invalid_size"


class RequestMalformed(Hal0Error):
    status = 400
    code = "request.malformed_json"
    type = "invalid_request_error"


class RequestTooLarge(Hal0Error):
    status = 413
    code = "request.too_large"
    type = "invalid_request_error"


class RequestTimeout(Hal0Error):
    """The request's body did not arrive within ``[api].body_timeout_s``; the connection is closed."""

    status = 408
    code = "request.timeout"
    type = "invalid_request_error"


class RequestHeaderTooLarge(Hal0Error):
    """A request line or header field over ``[api].max_header_bytes``, or more than ``[api].max_headers``."""

    status = 431
    code = "request.header_too_large"
    type = "invalid_request_error"


class RequestMalformedHttp(Hal0Error):
    """Bytes that are not an HTTP/1.1 request; the connection is closed."""

    status = 400
    code = "request.malformed_http"
    type = "invalid_request_error"


class RouteNotFound(Hal0Error):
    status = 404
    code = "request.not_found"
    type = "invalid_request_error"


class MethodNotAllowed(Hal0Error):
    status = 405
    code = "request.method_not_allowed"
    type = "invalid_request_error"


class AuthMissing(Hal0Error):
    status = 401
    code = "auth.missing"
    type = "authentication_error"


class AuthInvalid(Hal0Error):
    status = 401
    code = "auth.invalid"
    type = "authentication_error"


class AuthForbidden(Hal0Error):
    status = 403
    code = "auth.forbidden"
    type = "permission_error"


class SlotNotFound(Hal0Error):
    status = 404
    code = "slot.not_found"
    type = "invalid_request_error"


class SlotInvalidName(Hal0Error):
    status = 400
    code = "slot.invalid_name"
    type = "invalid_request_error"


class SlotExists(Hal0Error):
    status = 409
    code = "slot.exists"
    type = "invalid_request_error"


class SlotBuiltin(Hal0Error):
    status = 409
    code = "slot.builtin"
    type = "invalid_request_error"


class SlotPortInUse(Hal0Error):
    status = 409
    code = "slot.port_in_use"
    type = "invalid_request_error"


class SlotIllegalTransition(Hal0Error):
    status = 409
    code = "slot.illegal_transition"


class SlotNoModel(Hal0Error):
    status = 409
    code = "slot.no_model"
    type = "invalid_request_error"
    retryable = False


class SlotNoMemory(Hal0Error):
    """The slot cannot load within the memory budget even with every idle, unpinned slot unloaded
    (``details``: what it needs, the budget, and what is held by whom)."""

    status = 503
    code = "slot.no_memory"


class SlotDisabled(Hal0Error):
    status = 503
    code = "slot.disabled"
    retryable = False


class SlotStateError(Hal0Error):
    """The slot is in ``error``; the message carries the stored reason."""

    status = 503
    code = "slot.error"
    retryable = False


class SlotLoading(Hal0Error):
    status = 503
    code = "slot.loading"


class SlotStartFailed(Hal0Error):
    status = 503
    code = "slot.start_failed"


class SlotSwapFailed(Hal0Error):
    status = 502
    code = "slot.swap_failed"


class SlotCancelled(Hal0Error):
    status = 409
    code = "slot.cancelled"


class ProviderUnavailable(Hal0Error):
    status = 501
    code = "slot.provider_unavailable"
    retryable = False


class ModelNotFound(Hal0Error):
    status = 404
    code = "model.not_found"
    type = "invalid_request_error"


class ModelFilesMissing(Hal0Error):
    status = 409
    code = "model.files_missing"
    type = "invalid_request_error"


class ModelInvalid(Hal0Error):
    status = 400
    code = "model.invalid"
    type = "invalid_request_error"


class SlotBusy(Hal0Error):
    status = 429
    code = "slot.busy"
    type = "rate_limit_error"


class ModelNotLoaded(Hal0Error):
    status = 409
    code = "model.not_loaded"
    type = "invalid_request_error"
    retryable = False


class CapabilityDisabled(Hal0Error):
    status = 409
    code = "capability.disabled"
    type = "invalid_request_error"
    retryable = False


class UpstreamUnavailable(Hal0Error):
    status = 502
    code = "upstream.unavailable"


class UpstreamDown(UpstreamUnavailable):
    """The upstream or peer failed its latest health check: answered at once, not after a timeout."""

    status = 503


class WorkerUnreachable(Hal0Error):
    """A slot's llama.cpp RPC worker (``rpc = [...]``) does not accept connections."""

    status = 503
    code = "slot.worker_unreachable"


class WorkerUnsafe(Hal0Error):
    """``hal0 worker`` asked to listen beyond loopback without an allow-list."""

    status = 400
    code = "worker.unsafe"


class SlotUnreachable(Hal0Error):
    status = 502
    code = "slot.unreachable"


class AudioUnsupportedFormat(Hal0Error):
    status = 415
    code = "audio.unsupported_format"
    type = "invalid_request_error"


class RunnerNotReady(Hal0Error):
    status = 503
    code = "runner.loading"


class CapabilityNotFound(Hal0Error):
    status = 404
    code = "capability.not_found"
    type = "invalid_request_error"


class CapabilityIllegalPair(Hal0Error):
    status = 400
    code = "capability.illegal_backend_model_pair"
    type = "invalid_request_error"


class SlotNpuExclusive(Hal0Error):
    status = 409
    code = "slot.npu_exclusive"
    type = "invalid_request_error"


class SlotBackendError(Hal0Error):
    """The backend refused or failed a job hal0 translated for it (ComfyUI's node and message in details)."""

    status = 502
    code = "slot.backend_error"


class SlotInterrupted(Hal0Error):
    """The backend stopped the job before it finished (interrupted, or restarted under it)."""

    status = 503
    code = "slot.interrupted"


class ModelWrongModality(Hal0Error):
    """The request names a slot of another kind (embeddings sent to a chat slot): refused before
    the slot is woken; ``details`` name the slots that can serve the route."""

    status = 400
    code = "model.wrong_modality"
    type = "invalid_request_error"


class SlotTimeout(Hal0Error):
    """The backend took the request but did not start its answer within
    ``[slots].response_head_timeout_s``."""

    status = 504
    code = "slot.timeout"


class ModelChecksumMismatch(Hal0Error):
    """A downloaded file is not what its source promised; it was deleted, nothing was registered."""

    status = 502
    code = "model.checksum_mismatch"


class ModelNoSpace(Hal0Error):
    """Not enough free disk for a pull (``details``: needed and free bytes); a partial file is kept."""

    status = 507
    code = "model.no_space"


class ModelPullFailed(Hal0Error):
    """A pull could not fetch its files (the source refused, or the network kept failing)."""

    status = 502
    code = "model.pull_failed"


class PullNotFound(Hal0Error):
    status = 404
    code = "model.pull_not_found"


class PullCancelled(Hal0Error):
    status = 409
    code = "model.pull_cancelled"


class SlotPulling(Hal0Error):
    """The slot is downloading its model; ``details.pull`` has the progress."""

    status = 503
    code = "slot.pulling"


class ModelTooLarge(Hal0Error):
    """The model will not fit the slot's memory at its context size (``details``: the estimate and
    what is available); ``force`` loads it anyway."""

    status = 409
    code = "model.too_large"
    type = "invalid_request_error"


class ModelInUse(Hal0Error):
    """A slot runs the model (``details.slots``); unload or swap it first."""

    status = 409
    code = "model.in_use"
    type = "invalid_request_error"


class ResponseNotFound(Hal0Error):
    """No stored response of that id for this token (expired, deleted, or another token's)."""

    status = 404
    code = "response.not_found"
    type = "invalid_request_error"


class SlotReservedArg(Hal0Error):
    """``[server].extra_args`` set an option hal0 sets itself (address, port, model), or name a
    file outside hal0's folders (``details``: the slot and the refused arguments)."""

    status = 400
    code = "slot.reserved_arg"
    type = "invalid_request_error"


class SystemBusy(Hal0Error):
    """hal0 holds ``[api].max_connections`` connections, every one of them busy with a request."""

    status = 503
    code = "system.busy"


class SystemNoSpace(Hal0Error):
    """A write failed because the disk (or a quota) is full; ``details.folder`` names where.
    The file that was being replaced is intact."""

    status = 507
    code = "system.no_space"


_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


def no_space(err: OSError) -> SystemNoSpace | None:
    """``err`` as ``system.no_space`` when it says the disk is full, else None."""
    if err.errno not in _NO_SPACE:
        return None
    where = Path(err.filename) if isinstance(err.filename, str) and err.filename else None
    folder = where if where is None or where.is_dir() else where.parent
    place = f"the disk of {folder}" if folder else "the disk"
    return SystemNoSpace(f"no space left on {place}: free some space (or raise the quota) and try again; "
                         "nothing was changed", folder=str(folder) if folder else None)
