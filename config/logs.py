"""The service's log lines: plain text for development, one JSON object per line in production.

Every line a request causes carries its request id (the X-Request-ID of
config.middleware.RequestIdMiddleware), and every line a setup run causes
carries the run's id (`run_…`, set while sandboxes/pipeline.py runs it).
Both travel in context variables, so they follow the request or the run
in gunicorn's sync and threaded workers and in django-q2's worker
processes alike, whatever code logs the line (ours, Django's, a library's).

`logging_config` builds the one logging configuration of the service:
Django's LOGGING (config/settings.py) and gunicorn's own log lines
(gunicorn.conf.py) both use it. JSON lines are written by python-json-logger.
https://nhairs.github.io/python-json-logger/latest/
"""

import logging
from collections.abc import Mapping
from contextlib import contextmanager
from contextvars import ContextVar

from django.core.signals import request_finished

# The values LOG_LEVEL and LOG_FORMAT take (README.md, configuration).
LEVELS = ("debug", "info", "warning", "error", "critical")
FORMATS = ("plain", "json")

_request_id: ContextVar[str] = ContextVar("request_id", default="")
_run_id: ContextVar[str] = ContextVar("run_id", default="")

# gunicorn's access line names the request by the response's X-Request-ID:
# gunicorn writes it after the request is over (https://docs.gunicorn.org/en/stable/settings.html#access-log-format).
_ACCESS_LOGGER = "gunicorn.access"
_RESPONSE_REQUEST_ID = "{x-request-id}o"


def bind_request(request_id: str) -> None:
    """Mark the lines logged from here on, in this context, with the request's id (until it finishes)."""
    _request_id.set(request_id)


def _unbind_request(**kwargs) -> None:
    _request_id.set("")


# Django sends request_finished when the server closes the response, after
# Django's own "Not Found"/"Internal Server Error" lines are logged.
request_finished.connect(_unbind_request, dispatch_uid="config.logs.unbind_request")


@contextmanager
def run_context(run_id: str):
    """Mark every line logged inside the block with the setup run's id."""
    token = _run_id.set(run_id)
    try:
        yield
    finally:
        _run_id.reset(token)


class ContextFilter(logging.Filter):
    """Adds `request_id` and `run_id` to a record when the line belongs to a request or a run."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = _request_id.get()
        if not request_id and record.name == _ACCESS_LOGGER and isinstance(record.args, Mapping):
            request_id = record.args.get(_RESPONSE_REQUEST_ID, "-")
            request_id = "" if request_id == "-" else request_id
        if request_id and not getattr(record, "request_id", ""):
            record.request_id = request_id
        run_id = _run_id.get()
        if run_id and not getattr(record, "run_id", ""):
            record.run_id = run_id
        return True


class PlainFormatter(logging.Formatter):
    """`time LEVEL logger [request=… run=…]: message`, for a terminal."""

    def __init__(self):
        super().__init__("%(asctime)s %(levelname)s %(name)s%(context)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        context = [f"{name}={getattr(record, attribute)}"
                   for name, attribute in (("request", "request_id"), ("run", "run_id"))
                   if getattr(record, attribute, "")]
        record.context = f" [{' '.join(context)}]" if context else ""
        return super().formatMessage(record)


def json_formatter():
    """One JSON object per line: time, level, logger, message, pid, request_id and run_id where they apply,
    the extra fields of the record (Django's status_code), and a traceback as exc_info."""
    from pythonjsonlogger.core import RESERVED_ATTRS
    from pythonjsonlogger.json import JsonFormatter

    return JsonFormatter(
        "%(levelname)s %(name)s %(message)s %(process)d",
        timestamp="time",  # ISO 8601, in UTC
        rename_fields={"levelname": "level", "name": "logger", "process": "pid"},
        # Django passes the request object along with its lines; the request id identifies it here.
        reserved_attrs=[*RESERVED_ATTRS, "taskName", "request", "server_time", "context"],
        json_ensure_ascii=False,
    )


def logging_config(*, level: str, log_format: str, levels: Mapping[str, str] | None = None) -> dict:
    """A dictConfig: every logger's lines go to stderr through one handler, in the chosen format.

    `levels` names loggers that come with handlers of their own (Django's
    "django" and "django.server" with DEBUG on, django-q2's when it is
    imported first, gunicorn's) and sets their level: their lines go to the
    root's handler instead, so that every line has the same format, once.
    """
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": ContextFilter}},
        "formatters": {"plain": {"()": PlainFormatter}, "json": {"()": json_formatter}},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": log_format,
                                 "filters": ["context"]}},
        "root": {"handlers": ["console"], "level": level},
        "loggers": {name: {"handlers": [], "propagate": True, "level": logger_level}
                    for name, logger_level in (levels or {}).items()},
    }
