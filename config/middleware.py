"""Middleware of the API: request ids, guards that run before any view reads the body,
and a quick 503 when the database does not answer."""

import re
import uuid

from django.conf import settings
from django.http import JsonResponse

from config import logs
from config.errors import (
    JSON_PATH_PREFIXES,
    database_unavailable,
    error_body,
    is_database_unavailable,
)

_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


class ApiBodySizeLimitMiddleware:
    """Refuse an API request whose body is larger than API_MAX_BODY_BYTES.

    The API takes at most a small JSON object; a large body is refused from
    its Content-Length before anything reads it into memory.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.path.startswith(JSON_PATH_PREFIXES):
            limit = settings.API_MAX_BODY_BYTES
            try:
                length = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                return JsonResponse(error_body("Content-Length is not a number"), status=400)
            if length > limit:
                return JsonResponse(error_body(f"Request body is too large (at most {limit} bytes)"), status=413)
        return self.get_response(request)


class RequestIdMiddleware:
    """Give every request an id, echoed in the X-Request-ID response header.

    A client's own X-Request-ID is kept when it is sane (letters, digits and
    `._-`, at most 128 characters), so its logs and our audit trail line up;
    otherwise a new id is made. Every log line the request causes carries it
    (config/logs.py).
    """

    HEADER = "X-Request-ID"

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        offered = request.META.get("HTTP_X_REQUEST_ID", "")
        request.request_id = offered if _SANE_REQUEST_ID.match(offered) else uuid.uuid4().hex
        logs.bind_request(request.request_id)
        response = self.get_response(request)
        response[self.HEADER] = request.request_id
        return response


class DatabaseUnavailableMiddleware:
    """Answer 503 (JSON on the API, with Retry-After) to a view that the database failed.

    DRF's views turn a database failure into the same 503 themselves
    (config/errors.py); this covers the views that are not DRF's, and
    config.errors.server_error covers a failure in a middleware.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if is_database_unavailable(exception):
            return database_unavailable(request, exception)
        return None
