"""Middleware of the API: request ids, guards that run before any view reads the body,
and a quick 503 when the database does not answer."""

import io
import logging
import re
import uuid

from django.conf import settings
from django.core.exceptions import BadRequest
from django.http import JsonResponse

from config import logs
from config.errors import (
    database_unavailable,
    error_body,
    is_api_path,
    is_database_unavailable,
)

logger = logging.getLogger(__name__)

_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


class ApiBodySizeLimitMiddleware:
    """Read an API request's whole body, at most API_MAX_BODY_BYTES of it (API_BODY_LIMITS for the paths it
    names), before any view does.

    - A Content-Length over the limit is refused (413) before anything is read;
      one that is not a number is a 400.
    - A chunked body (`Transfer-Encoding: chunked`, no Content-Length) is read
      when the server hands it over de-chunked (`wsgi.input_terminated`, as
      gunicorn does), at most one byte past the limit (413 beyond it); a
      server that cannot hand it over is answered 411. Django itself reads
      nothing of a body without Content-Length, so without this a chunked
      `{"account_id": …}` would reach the view as an empty body and the
      request would act on the key's own account.
    - A body that cannot be read (a broken chunk, a connection closed before
      the Content-Length was reached) is a 400.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if is_api_path(request.path):
            refusal = self._read_body(request, settings.API_BODY_LIMITS.get(request.path, settings.API_MAX_BODY_BYTES))
            if refusal is not None:
                return refusal
        return self.get_response(request)

    @staticmethod
    def _read_body(request, limit: int) -> JsonResponse | None:
        chunked = "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower()
        if chunked:
            if not request.META.get("wsgi.input_terminated"):
                return JsonResponse(error_body("Send the request body with a Content-Length"), status=411)
            try:
                data = request.META["wsgi.input"].read(limit + 1)
            except Exception as exc:  # the server's own errors of a malformed chunk, a closed connection
                return _unreadable(request, exc)
            if len(data) > limit:
                return _too_large(limit)
            # What Django would have read, had the client sent a Content-Length.
            request._stream = io.BytesIO(data)
            request.META["CONTENT_LENGTH"] = str(len(data))
            declared = len(data)
        else:
            try:
                declared = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                return JsonResponse(error_body("Content-Length is not a number"), status=400)
            if declared > limit:
                return _too_large(limit)
            if declared <= 0:
                return None
        try:
            body = request.body
        except Exception as exc:  # UnreadablePostError, and what the server raises itself
            return _unreadable(request, exc)
        if len(body) < declared:
            return _unreadable(request, f"{len(body)} of {declared} bytes arrived")
        return None


def _too_large(limit: int) -> JsonResponse:
    return JsonResponse(error_body(f"Request body is too large (at most {limit} bytes)"), status=413)


def _unreadable(request, problem) -> JsonResponse:
    logger.info("Request body of %s %s could not be read: %s", request.method, request.path, problem)
    return JsonResponse(error_body("The request body could not be read"), status=400)


class NulCharacterGuardMiddleware:
    """Refuse (400) a request whose path, query string or form fields hold a NUL character.

    PostgreSQL cannot store or compare a text holding NUL, and psycopg raises
    as soon as such a value reaches a query: an admin page asked for
    `/admin/sandboxes/setuprun/%00/change/` or `?q=%00` would answer 500.
    No valid input holds one, so it is refused before any view sees it, with
    Django's 400 page. The API is left to itself: it authenticates first, its
    serializers refuse a NUL in any text (DRF's CharField), and query
    parameters it does not take are refused whatever they hold.
    """

    FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if is_api_path(request.path):
            return self.get_response(request)
        if "\x00" in request.path or _holds_nul(request.GET):
            raise BadRequest("NUL character in the request's path or query string")
        if request.method == "POST" and request.content_type in self.FORM_TYPES and _holds_nul(request.POST):
            raise BadRequest("NUL character in a form field")
        return self.get_response(request)


def _holds_nul(query) -> bool:
    return any("\x00" in name or any("\x00" in value for value in values) for name, values in query.lists())


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
