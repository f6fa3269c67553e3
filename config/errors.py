"""Every error of the API as JSON: `{"status": "error", "error": "..."}`.

DRF's exceptions go through `api_exception_handler`; what Django answers
itself (an unknown path, an unhandled error, a failed CSRF check) goes through
the `handler400/403/404/500` views and `csrf_failure` below, which answer JSON
for the API and /healthz (`is_api_path`: also with a doubled slash, `//api/…`)
and leave the admin's HTML pages as they are.

A database that does not answer (connection refused, lost, timed out) is not
a bug of ours: wherever it surfaces in a request, the answer is a quick 503
with Retry-After (`DATABASE_UNAVAILABLE_MESSAGE`), and the next request
connects again by itself (CONN_HEALTH_CHECKS).
"""

import logging
import re
import sys

from django.db import InterfaceError, OperationalError
from django.http import HttpResponse, JsonResponse
from django.views import csrf, defaults
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import exception_handler

logger = logging.getLogger(__name__)

# /api, /api/…, /healthz…, however many slashes a client puts first.
_JSON_PATH = re.compile(r"^/*(api(/|$)|healthz)")
MISSING_KEY_MESSAGE = "Missing API key: send it in the x-api-key header or as 'Authorization: Bearer <key>'"
DATABASE_UNAVAILABLE_MESSAGE = "The database is not answering; try again shortly"
DATABASE_ERRORS = (OperationalError, InterfaceError)
DATABASE_RETRY_AFTER_SECONDS = 5


def error_body(message: str, **extra) -> dict:
    return {"status": "error", "error": message, **extra}


def _validation_body(detail) -> dict:
    """Name the fields at fault: `missing_fields` (required, not sent) and `invalid_fields` (sent, but wrong).

    `invalid_fields` holds the body fields and query parameters that are not
    valid or not taken at all, and `body` for a body that is not a JSON object.
    """
    if not isinstance(detail, dict):
        return error_body(_first_message(detail), invalid_fields=["body"])
    fields = [name for name in detail if name != api_settings.NON_FIELD_ERRORS_KEY]
    missing = [name for name in fields if _first_code(detail[name]) == "required"]
    invalid = [name for name in fields if name not in missing]
    if len(fields) < len(detail):
        invalid.append("body")
    messages = [_first_message(value) if name == api_settings.NON_FIELD_ERRORS_KEY
                else f"{name}: {_first_message(value)}" for name, value in detail.items()]
    body = error_body("; ".join(messages))
    if missing:
        body["missing_fields"] = missing
    if invalid:
        body["invalid_fields"] = invalid
    return body


def _first_code(value) -> str | None:
    while isinstance(value, (list, tuple)) and value:
        value = value[0]
    return getattr(value, "code", None)


def _first_message(value) -> str:
    while isinstance(value, (list, tuple)) and value:
        value = value[0]
    if isinstance(value, dict):
        name, inner = next(iter(value.items()))
        return f"{name}: {_first_message(inner)}"
    return str(value)


def is_database_unavailable(exc) -> bool:
    return isinstance(exc, DATABASE_ERRORS)


def database_unavailable(request, exc):
    """The 503 of a request the database failed: JSON for the API and /healthz, plain text elsewhere."""
    logger.warning("Database unavailable during %s %s: %s", request.method, request.path, exc)
    if _wants_json(request):
        response = JsonResponse(error_body(DATABASE_UNAVAILABLE_MESSAGE), status=503)
    else:
        response = HttpResponse(DATABASE_UNAVAILABLE_MESSAGE, status=503, content_type="text/plain; charset=utf-8")
    response["Retry-After"] = str(DATABASE_RETRY_AFTER_SECONDS)
    return response


def api_exception_handler(exc, context):
    if is_database_unavailable(exc):
        logger.warning("Database unavailable in %s: %s", context["view"].__class__.__name__, exc)
        return Response(
            error_body(DATABASE_UNAVAILABLE_MESSAGE),
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)},
        )
    response = exception_handler(exc, context)
    if response is None:
        # An error nobody expected: log it with its traceback and answer a
        # JSON 500 (even with DEBUG on, the API never answers an HTML page).
        logger.exception("Unhandled error in %s", context["view"].__class__.__name__, exc_info=exc)
        return Response(error_body("Internal server error"), status=status.HTTP_500_INTERNAL_SERVER_ERROR)
    if isinstance(exc, exceptions.ValidationError):
        response.data = _validation_body(exc.detail)
    elif isinstance(exc, exceptions.NotAuthenticated):
        response.data = error_body(MISSING_KEY_MESSAGE)
    else:
        response.data = error_body(_first_message(response.data.get("detail", response.data)))
    return response


def is_api_path(path: str) -> bool:
    """Whether Django's own answers to the path must be JSON: the API's and /healthz's."""
    return bool(_JSON_PATH.match(path))


def _wants_json(request) -> bool:
    return is_api_path(request.path)


def not_found(request, exception=None):
    if _wants_json(request):
        return JsonResponse(error_body(f"Not found: {request.path}"), status=404)
    return defaults.page_not_found(request, exception)


def server_error(request):
    # Django calls this while it handles the exception, so it is still at hand:
    # a database failure in a middleware is a 503 too, not a 500.
    exc = sys.exc_info()[1]
    if is_database_unavailable(exc):
        return database_unavailable(request, exc)
    if _wants_json(request):
        return JsonResponse(error_body("Internal server error"), status=500)
    return defaults.server_error(request)


def permission_denied(request, exception=None):
    if _wants_json(request):
        return JsonResponse(error_body("Forbidden"), status=403)
    return defaults.permission_denied(request, exception)


def csrf_failure(request, reason=""):
    """CSRF_FAILURE_VIEW. The API takes no cookies (keys travel in headers), and its views are exempt;
    should a request under /api/ meet the check anyway, its answer is JSON, not Django's HTML page."""
    if _wants_json(request):
        return JsonResponse(error_body(f"CSRF check failed: {reason}"), status=403)
    return csrf.csrf_failure(request, reason)


def bad_request(request, exception=None):
    if _wants_json(request):
        return JsonResponse(error_body("Bad request"), status=400)
    return defaults.bad_request(request, exception)
