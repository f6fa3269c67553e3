"""A database that does not answer is a quick 503, never a 500 or an HTML page.

The failure is made at the database driver's boundary with Django's own
hook for it (`connection.execute_wrapper`): every query raises what psycopg
raises when the server is down. The API (DRF's views, config/errors.py),
/healthz and the admin (config.middleware.DatabaseUnavailableMiddleware)
each answer 503 with Retry-After; JSON except on the admin's HTML pages.
The real outage, a PostgreSQL server stopped and started again while
requests flow, is tests/reliability/test_database_restart.py.
"""

import pytest
from django.db import InterfaceError, OperationalError, connection
from django.test import Client

from config.errors import DATABASE_UNAVAILABLE_MESSAGE

UNAVAILABLE = {"status": "error", "error": DATABASE_UNAVAILABLE_MESSAGE}


@pytest.fixture(params=[OperationalError, InterfaceError], ids=["connection_refused", "connection_lost"])
def database_down(request):
    error = request.param

    def refuse(execute, sql, params, many, context):
        raise error('connection failed: connection to server at "127.0.0.1", port 5432 failed: Connection refused')

    with connection.execute_wrapper(refuse):
        yield


@pytest.mark.parametrize(
    "method, path",
    [("get", "/api/ping"), ("post", "/api/sandboxes/setup"), ("delete", "/api/sandboxes"), ("get", "/api/tasks/runs")],
)
def test_the_api_answers_json_503_with_retry_after(people, api, database_down, method, path):
    response = api.call(method, path, key=people.bob.key)

    assert response.status_code == 503
    assert response["Content-Type"] == "application/json"
    assert response.json() == UNAVAILABLE
    assert response["Retry-After"] == "5"


def test_healthz_answers_json_503_naming_the_database(db, database_down):
    response = Client().get("/healthz")

    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    # Anybody may ask: the component and its state, never the driver's message (host, port, user).
    assert response.json() == {"status": "error", "error": "Not answering: database, broker",
                               "checks": {"database": "unavailable", "broker": "unavailable"}}


def test_an_admin_page_answers_a_plain_503(db, database_down):
    client = Client(raise_request_exception=False)
    client.cookies["sessionid"] = "a" * 32  # reading the session is the admin's first query

    response = client.get("/admin/")

    assert response.status_code == 503
    assert response["Content-Type"].startswith("text/plain")
    assert response.content.decode() == DATABASE_UNAVAILABLE_MESSAGE
    assert response["Retry-After"] == "5"


def test_once_the_database_answers_again_so_does_the_api(people, api):
    def refuse(execute, sql, params, many, context):
        raise OperationalError("server closed the connection unexpectedly")

    with connection.execute_wrapper(refuse):
        assert api.call("get", "/api/ping", key=people.bob.key).status_code == 503

    assert api.call("get", "/api/ping", key=people.bob.key).status_code == 200


def test_other_errors_stay_500(people, api, caplog):
    def broken(execute, sql, params, many, context):
        raise ZeroDivisionError("a bug, not an outage")

    with connection.execute_wrapper(broken):
        response = api.call("get", "/api/ping", key=people.bob.key)

    assert response.status_code == 500
    assert response.json() == {"status": "error", "error": "Internal server error"}
