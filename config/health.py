"""GET /healthz: does the service reach its database and its queue broker?"""

import logging

from django.db import connection
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django_q.brokers import get_broker
from django_q.conf import Conf
from django_q.models import OrmQ

from config.errors import DATABASE_RETRY_AFTER_SECONDS

logger = logging.getLogger(__name__)


def _database_answers() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _broker_answers() -> None:
    if Conf.ORM:
        # The ORM broker's ping() always says yes; ask its table instead.
        OrmQ.objects.using(Conf.ORM).exists()
    elif not get_broker().ping():
        raise ConnectionError("no answer to PING")


CHECKS = {"database": _database_answers, "broker": _broker_answers}


@csrf_exempt  # no cookies, no state: a POST is answered 405, not with the CSRF check's 403
def healthz(request):
    """200 when every component answers; 503 with Retry-After naming those that do not.

    Anybody may ask, so the answer names components and says `ok` or
    `unavailable`, nothing more: the driver's message (host, port, user) goes
    to the log.
    """
    if request.method not in ("GET", "HEAD"):
        return JsonResponse({"status": "error", "error": f"Method {request.method} not allowed"}, status=405)
    checks, failing = {}, []
    for name, check in CHECKS.items():
        try:
            check()
        except Exception as exc:
            logger.warning("Health check %s failed: %s: %s", name, type(exc).__name__, exc)
            checks[name] = "unavailable"
            failing.append(name)
        else:
            checks[name] = "ok"
    if failing:
        body = {"status": "error", "error": f"Not answering: {', '.join(failing)}", "checks": checks}
        response = JsonResponse(body, status=503)
        response["Retry-After"] = str(DATABASE_RETRY_AFTER_SECONDS)
        return response
    return JsonResponse({"status": "ok", "checks": checks})
