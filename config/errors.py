"""Every error of the API as JSON: `{"status": "error", "error": "..."}`.

DRF's exceptions go through `api_exception_handler`; what Django answers
itself (an unknown path, an unhandled error) goes through the `handler404` and
`handler500` views below, which answer JSON for the API and leave the admin's
HTML pages as they are.

A database that does not answer (connection refused, lost, timed out) is not
a bug of ours: wherever it surfaces in a request, the answer is a quick 503
with Retry-After (`DATABASE_UNAVAILABLE_MESSAGE`), and the next request
connects again by itself (CONN_HEALTH_CHECKS).
"""

import logging
import sys

from django.db import InterfaceError, OperationalError
from django.http import HttpResponse, JsonResponse
from django.views import defaults
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

logger = logging.getLogger(__name__)

JSON_PATH_PREFIXES = ("/api/", "/healthz")
MISSING_KEY_MESSAGE = "Missing API key: send it in the x-api-key header or as 'Authorization: Bearer <key>'"
DATABASE_UNAVAILABLE_MESSAGE = "The database is not answering; try again shortly"
DATABASE_ERRORS = (OperationalError, InterfaceError)
DATABASE_RETRY_AFTER_SECONDS = 5


def error_body(message: str, **extra) -> dict:
    return {"status": "error", "error": message, **extra}


def _validation_body(detail) -> dict:
    """`missing_fields` names each field at fault, as the reference API does."""
    if isinstance(detail, dict):
        fields = [name for name in detail if name != "non_field_errors"]
        messages = [f"{name}: {_first_message(value)}" if name != "non_field_errors" else _first_message(value)
                    for name, value in detail.items()]
        return error_body("; ".join(messages), missing_fields=fields or ["body"])
    return error_body(_first_message(detail), missing_fields=["body"])


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


def _wants_json(request) -> bool:
    return request.path.startswith(JSON_PATH_PREFIXES)


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


def bad_request(request, exception=None):
    if _wants_json(request):
        return JsonResponse(error_body("Bad request"), status=400)
    return defaults.bad_request(request, exception)
