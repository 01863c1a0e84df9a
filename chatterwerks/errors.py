"""The one JSON error shape (docs/api.md), the domain errors the store raises,
and the middleware that turns both, and every other failure on /api, into it."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable

import asyncpg
from aiohttp import web

from chatterwerks.db import CONNECTION_ERRORS

log = logging.getLogger(__name__)
access_log = logging.getLogger("chatterwerks.access")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Codes for the errors aiohttp raises itself (routing, body size).
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    429: "rate_limited",
}


class ApiError(web.HTTPException):
    """An error answer in the shape of docs/api.md; raise it from any handler."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        self.status_code = status
        super().__init__(
            headers=headers,
            text=json.dumps({"error": {"code": code, "message": message}}),
            content_type="application/json",
        )
        self.code = code


class DomainError(Exception):
    """A rule of the chat said no. Raised by the store, which knows nothing of
    HTTP; the error middleware answers it with `status` and the error shape."""

    status = 400

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Invalid(DomainError):
    """The request is well-formed but asks for something that cannot be."""

    status = 400


class Forbidden(DomainError):
    """A member asks for something their role does not allow."""

    status = 403


class NotFound(DomainError):
    """No such thing, or not one the asker may see (the same answer for both)."""

    status = 404


class Conflict(DomainError):
    """It exists already (a name taken)."""

    status = 409


def rate_limited(retry_after: int, message: str = "Too many requests; slow down.") -> ApiError:
    return ApiError(429, "rate_limited", message, headers={"Retry-After": str(retry_after)})


def error_response(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


def _as_json_error(exc: web.HTTPException) -> web.Response:
    code = _HTTP_CODES.get(exc.status, "http_error")
    message = exc.reason
    if exc.status == 404:
        message = "There is nothing at this address."
    elif exc.status == 405:
        message = f"This address does not accept {exc.method}."  # type: ignore[attr-defined]
    elif exc.status == 413:
        message = "The request body is larger than 64 KiB."
    response = error_response(exc.status, code, message)
    for name in ("Allow", "Retry-After"):
        if name in exc.headers:
            response.headers[name] = exc.headers[name]
    return response


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Logs one line per request, and turns every /api failure into JSON.

    Unexpected exceptions are logged with their traceback and answered 500
    without one; a lost database is a 503, quickly.
    """
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except ApiError as exc:
        status = exc.status
        raise
    except DomainError as exc:
        status = exc.status
        return error_response(exc.status, exc.code, exc.message)
    except web.HTTPException as exc:
        status = exc.status
        if not request.path.startswith("/api/") or exc.status < 400:
            raise
        return _as_json_error(exc)
    except CONNECTION_ERRORS as exc:
        status = 503
        log.warning("database unavailable during %s %s: %r", request.method, request.path, exc)
        if isinstance(exc, asyncpg.ReadOnlySQLTransactionError):
            from chatterwerks import keys  # here: keys imports the store, which imports us

            # The host answering is not the primary (any more): every pooled
            # connection is replaced, at its next use, by one to the primary.
            if keys.POOL in request.app:
                await request.app[keys.POOL].expire_connections()
        return error_response(
            503, "database_unavailable", "The database is unavailable; try again soon."
        )
    except asyncio.CancelledError:
        status = 499  # the client went away (nginx's number for it)
        raise
    except Exception:
        log.exception("unexpected error in %s %s", request.method, request.path)
        return error_response(500, "internal_error", "Something went wrong on our side.")
    finally:
        if access_log.isEnabledFor(logging.INFO):
            elapsed_ms = (time.perf_counter() - started) * 1000
            access_log.info("%s %s %d %.1fms", request.method, request.path, status, elapsed_ms)
