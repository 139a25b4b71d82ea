"""The error envelope, and the middleware that makes every failure use it.

Every error answer is ``{"error": <reason phrase>, "message": <text>, "code": <status>}``
as in the reference documents; ``message`` starts with the offending field
(``"url: must be an absolute http:// or https:// URL"``) whenever one is to blame.
Nothing a client sends may end as a 500: handlers raise :class:`ApiError`
(or ``ValidationError``), aiohttp's own HTTP exceptions (unknown route, wrong
method, body too large) are re-rendered here, and anything unexpected is
logged and answered in the same envelope.
"""

from __future__ import annotations

from http import HTTPStatus

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from hookd.api.serialize import Error, json_response
from hookd.storage import QuotaExceeded, StoreError
from hookd.validation import ValidationError

log = structlog.get_logger("hookd.api")

NOT_FOUND_MESSAGE = "The requested resource was not found"
# What a client that went away mid-request is answered (it never reads it).
CLIENT_GONE_MESSAGE = "body: the connection closed before all of it arrived"


class ApiError(Exception):
    """An answer other than success, with the status and the message to show."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def bad_request(field: str, problem: str) -> ApiError:
    return ApiError(400, f"{field}: {problem}")


def not_found() -> ApiError:
    return ApiError(404, NOT_FOUND_MESSAGE)


def too_large(limit: int) -> ApiError:
    return ApiError(413, f"body: larger than the {limit} bytes allowed")


def reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return json_response(Error(reason(status), message, status), status=status, headers=headers)


def _from_http_exception(request: web.Request, exc: web.HTTPException) -> web.Response:
    status = exc.status
    headers: dict[str, str] = {}
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = sorted(exc.allowed_methods)
        headers["Allow"] = ", ".join(allowed)
        message = (
            f"method: {request.method} is not allowed on this resource;"
            f" allowed: {', '.join(allowed)}"
        )
    elif status == 404:
        message = NOT_FOUND_MESSAGE
    elif status == 413:
        return error_response(413, too_large(request.client_max_size).message)
    else:
        message = exc.text or reason(status)
        # aiohttp's texts look like "400: Bad Request"; keep only the part after it.
        message = message.partition(": ")[2] or message
    return error_response(status, message, headers)


def failure_answer(request: web.Request, exc: Exception) -> web.Response:
    """The envelope answer for ``exc``, raised while handling ``request``."""
    if isinstance(exc, ApiError):
        return error_response(exc.status, exc.message, exc.headers)
    if isinstance(exc, ValidationError):
        return error_response(400, f"{exc.field}: {exc.message}")
    if isinstance(exc, QuotaExceeded):
        # Refused whole: the message starts with the [quotas] key to blame.
        return error_response(exc.status, str(exc))
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            raise exc
        return _from_http_exception(request, exc)
    if isinstance(exc, ConnectionError):
        # The client went away, mid-body mostly: an ordinary event.  The answer
        # reaches no one; aiohttp drops it and closes the connection quietly.
        log.debug("api.client_disconnected", path=request.path, method=request.method)
        return error_response(400, CLIENT_GONE_MESSAGE)
    if isinstance(exc, StoreError):
        log.error("api.store_error", path=request.path, method=request.method, error=str(exc))
        return error_response(503, "database unavailable; try again shortly")
    log.error("api.unhandled_error", path=request.path, method=request.method, exc_info=exc)
    return error_response(500, "internal error; see the server log")


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except Exception as exc:
        return failure_answer(request, exc)
