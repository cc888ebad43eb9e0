"""The one error hierarchy of hal0 and the one renderer of its envelope.

Every error hal0 raises on ``/v1`` or ``/api`` is a ``Hal0Error`` subclass with a
class-level HTTP ``status``, a stable dotted ``code`` and an OpenAI error ``type``.
``envelope()`` turns one into the JSON body that SPEC section 5 describes.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "AuthForbidden",
    "AuthInvalid",
    "AuthMissing",
    "ConfigInvalid",
    "Hal0Error",
    "InternalError",
    "MethodNotAllowed",
    "RequestInvalid",
    "RequestMalformed",
    "RequestTooLarge",
    "RouteNotFound",
    "envelope",
]


class Hal0Error(Exception):
    """Base of every error hal0 reports to a client or operator."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "system.internal"
    type: ClassVar[str] = "server_error"

    def __init__(self, message: str, *, param: str | None = None,
                 retry_after: float | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.retry_after = retry_after
        self.details = details

    def headers(self) -> dict[str, str]:
        """Extra response headers, such as ``Retry-After``."""
        if self.retry_after is None:
            return {}
        return {"Retry-After": str(max(1, round(self.retry_after)))}


def envelope(err: Hal0Error) -> dict[str, Any]:
    """The OpenAI-shaped error body for ``err``."""
    return {"error": {"message": err.message, "type": err.type, "code": err.code,
                      "param": err.param, "details": err.details}}


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


class RequestMalformed(Hal0Error):
    status = 400
    code = "request.malformed_json"
    type = "invalid_request_error"


class RequestTooLarge(Hal0Error):
    status = 413
    code = "request.too_large"
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
