"""Fuzzing the API with schemathesis against its own OpenAPI schema (/api/schema/).

Schemathesis reads the schema the project serves and sends each operation
requests it generates from it, valid and invalid (bodies, query parameters,
headers), through the Django WSGI application in this process, on the test
database. Each operation runs twice, a bounded number of examples each (CI
time): once with a usable API key, once with a key that is not one. Every
answer must be no 5xx, have a documented status code, and match the
documented schema for that code.
"""

from datetime import timedelta

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.utils import timezone
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from accounts.audit import Actor
from accounts.services import account_create, api_key_create
from sandboxes.models import Snapshot
from sandboxes.providers import get_sandbox_backend

pytestmark = pytest.mark.django_db

MAX_EXAMPLES = 25
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
FUZZ = hypothesis_settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,  # the same examples on every run: CI is repeatable
    database=None,
    suppress_health_check=list(HealthCheck),
)


def load_schema():
    """The schema as the service serves it, read once at collection (serving it touches no database)."""
    from config.wsgi import application

    config = schemathesis.Config.from_dict({
        "generation": {
            "max-examples": MAX_EXAMPLES,
            # The key is the test's own header; a generated Authorization next to it would be "both headers".
            "with-security-parameters": False,
        },
    })
    return schemathesis.openapi.from_wsgi("/api/schema/?format=json", application, config=config)


# Loaded at import, not from a fixture: schemathesis' fixture loader
# (schemathesis.pytest.from_fixture) does not run on pytest 9.
schema = load_schema()


@pytest.fixture(autouse=True)
def one_database_connection_for_the_test():
    """Keep the test's connection (and its transaction) across the requests, as Django's test client does.

    Schemathesis calls the WSGI application itself, whose request_finished
    signal would otherwise close the connection after every request.
    """
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def usable_key(db, settings) -> str:
    """A usable key, with no rate limit, so every example is served.

    Its account has a real snapshot (archive and listing), so that reading
    the sandbox, its files and renewing it answer with data, not only 404s.
    """
    settings.API_THROTTLE_RATES = {"setup": None, "delete": None, "renew": None}
    account = account_create(name="Fuzz", email="fuzz@example.com")
    backend = get_sandbox_backend()
    sandbox_id = backend.create()
    backend.write_files(sandbox_id, {"README.md": b"fuzz\n", "a/b.bin": b"\xff"})
    info = backend.snapshot(sandbox_id)
    backend.stop(sandbox_id)
    Snapshot.objects.create(account=account, snapshot_id=info.snapshot_id, expires_at=timezone.now() + timedelta(days=1),
                            filetree=[entry.as_json() for entry in info.files])
    return api_key_create(actor=Actor.command("tests"), account=account, name="fuzz")[1]


@schema.parametrize()
@FUZZ
def test_every_answer_to_a_usable_key_is_documented_and_no_server_error(case, usable_key):
    case.call_and_validate(headers={"x-api-key": usable_key}, checks=CHECKS)


@schema.parametrize()
@FUZZ
def test_every_answer_to_a_bad_key_is_documented_and_no_server_error(case, db):
    response = case.call_and_validate(headers={"x-api-key": "sbx_" + "A" * 43}, checks=CHECKS)
    assert response.status_code == 401, "a key that is not one never gets further than authentication"
