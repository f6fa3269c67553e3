"""Fuzzing the API with schemathesis against its own OpenAPI schema (/api/schema/).

Schemathesis reads the schema the project serves and sends each operation
requests it generates from it, valid and invalid (bodies, query parameters,
headers), through the Django WSGI application in this process, on the test
database. Each operation runs twice, a bounded number of examples each (CI
time): once with a usable API key, once with a key that is not one. Every
answer must be no 5xx, have a documented status code, and match the
documented schema for that code.

The live sandbox endpoints run on the local backend with
SANDBOX_LOCAL_EXEC=unsafe (off, they would all answer 501), their rate limit
off as the others', and the usable key's account has a running live sandbox,
so that commands, uploads and a stop reach the backend and the git host. A
generated command runs for real, as a process of this host in the sandbox's
folder: SANDBOX_COMMAND_MAX_MS is 1000 here, so none runs longer than a
second (a longer timeout_ms is a 400), and the examples are the same on every
run (derandomize).
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
from accounts.scopes import ALL_SCOPES
from accounts.services import account_create, api_key_create
from sandboxes import live
from sandboxes.models import LiveSandbox, Snapshot
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
    the sandbox, its files and renewing it answer with data, not only 404s,
    every scope, and a running live sandbox started from it (see the module docstring).
    """
    settings.API_THROTTLE_RATES = {"setup": None, "delete": None, "renew": None, "exec": None}
    settings.SANDBOX_LOCAL_EXEC = "unsafe"
    settings.SANDBOX_COMMAND_MAX_MS = 1000
    account = account_create(name="Fuzz", email="fuzz@example.com")
    backend = get_sandbox_backend()
    sandbox_id = backend.create()
    backend.write_files(sandbox_id, {"README.md": b"fuzz\n", "a/b.bin": b"\xff"})
    info = backend.snapshot(sandbox_id)
    backend.stop(sandbox_id)
    Snapshot.objects.create(account=account, snapshot_id=info.snapshot_id, expires_at=timezone.now() + timedelta(days=1),
                            filetree=[entry.as_json() for entry in info.files])
    live.live_sandbox_start(account=account, actor=Actor.command("tests"))
    yield api_key_create(actor=Actor.command("tests"), account=account, name="fuzz", scopes=ALL_SCOPES)[1]
    for sandbox in LiveSandbox.objects.filter(status=LiveSandbox.Status.RUNNING):
        live.live_sandbox_stop(sandbox=sandbox, actor=Actor.command("tests"), reason="api", take_snapshot=False)


@schema.parametrize()
@FUZZ
def test_every_answer_to_a_usable_key_is_documented_and_no_server_error(case, usable_key):
    case.call_and_validate(headers={"x-api-key": usable_key}, checks=CHECKS)


@schema.parametrize()
@FUZZ
def test_every_answer_to_a_bad_key_is_documented_and_no_server_error(case, db, settings):
    response = case.call_and_validate(headers={"x-api-key": "sbx_" + "A" * 43}, checks=CHECKS)
    if response.status_code == 413:
        # A body over the path's limit is refused before anything else, the key included.
        limit = settings.API_BODY_LIMITS.get(case.path, settings.API_MAX_BODY_BYTES)
        assert len(response.request.body or b"") > limit, response.content
        return
    assert response.status_code == 401, "a key that is not one never gets further than authentication"
