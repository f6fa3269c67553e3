"""GET /healthz: does the service reach its database and its queue broker?"""

import logging

from django.db import connection
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django_q.brokers import get_broker
from django_q.conf import Conf
from django_q.models import OrmQ

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
    if request.method not in ("GET", "HEAD"):
        return JsonResponse({"status": "error", "error": f"Method {request.method} not allowed"}, status=405)
    checks, failing = {}, []
    for name, check in CHECKS.items():
        try:
            check()
        except Exception as exc:
            logger.warning("Health check %s failed: %s", name, exc)
            checks[name] = f"error: {type(exc).__name__}: {exc}"
            failing.append(name)
        else:
            checks[name] = "ok"
    if failing:
        body = {"status": "error", "error": f"Not answering: {', '.join(failing)}", "checks": checks}
        return JsonResponse(body, status=503)
    return JsonResponse({"status": "ok", "checks": checks})
