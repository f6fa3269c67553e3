"""The task queue's broker, shared by every app that queues a task (django-q2's `async_task`).

The broker itself is configured in settings (`Q_CLUSTER`: Redis when REDIS_URL
is set, else the database); this module holds the one connection a process
keeps to it.
"""

from functools import cache

from django.conf import settings
from django_q.brokers import get_broker


@cache
def redis_broker():
    """One Redis broker per process: django-q2's get_broker() opens a new connection to Redis on every call.

    (The ORM broker is left to django-q2: it holds a database connection, which belongs to one thread.)
    """
    return get_broker()


def broker_options() -> dict:
    """The keyword arguments that send an `async_task` through the process's broker."""
    return {"broker": redis_broker()} if settings.REDIS_URL else {}
