"""Shared fixtures: storage folders per test, the people of the permission tests, an API client.

Personas (as in healthchecks' tests):
- alice: owner of the Acme organization
- carol: admin of Acme
- bob: plain member of Acme
- dave: member of Acme and of Globex
- mallory: an outsider, owner of her own Evil Corp, who should reach nothing of Acme's
- sam: member of the staff organization, who may act on any account
"""

import json
from dataclasses import dataclass
from urllib.parse import urlencode

import pytest
from django.db import connection
from rest_framework.test import APIClient

from accounts.audit import Actor
from accounts.models import Account, ApiKey
from accounts.scopes import ALL_SCOPES
from accounts.services import account_create, api_key_create
from orgs.models import Membership, Organization
from orgs.services import membership_set, organization_create
from sandboxes.models import SetupRun
from sandboxes.tasks import SetupRunFailed, run_setup

TESTS = Actor.command("tests")

requires_postgres = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="needs PostgreSQL: set DATABASE_URL=postgres://…"
)


@pytest.fixture(autouse=True)
def storage(settings, tmp_path):
    """Every test gets its own sandbox root and git root."""
    settings.SANDBOX_ROOT = tmp_path / "sandbox-root"
    settings.GIT_ROOT = tmp_path / "git-root"
    return settings


@dataclass
class Person:
    account: Account
    key: str
    api_key: ApiKey


def make_person(name: str, *, organization: Organization | None = None, role: str | None = None) -> Person:
    account = account_create(name=name.title(), email=f"{name}@example.com")
    if organization is not None:
        membership_set(organization=organization, account=account, role=role or Membership.Role.MEMBER, actor=TESTS)
    # Every scope: the personas' keys are as keys made before scopes existed; tests of scopes make narrower ones.
    api_key, raw = api_key_create(actor=Actor.command("tests"), account=account, name=f"{name}'s key",
                                  scopes=ALL_SCOPES)
    return Person(account=account, key=raw, api_key=api_key)


@dataclass
class People:
    acme: Organization
    globex: Organization
    evil: Organization
    staff_org: Organization
    alice: Person
    carol: Person
    bob: Person
    dave: Person
    mallory: Person
    sam: Person

    def organization_key(self, person: Person, organization: Organization) -> str:
        return api_key_create(actor=Actor.command("tests"), account=person.account, organization=organization,
                              name="org key", scopes=ALL_SCOPES)[1]


@pytest.fixture
def people(db) -> People:
    acme = organization_create(name="Acme", actor=TESTS)
    globex = organization_create(name="Globex", actor=TESTS)
    evil = organization_create(name="Evil Corp", actor=TESTS)
    staff_org = organization_create(name="Staff", is_staff=True, actor=TESTS)
    dave = make_person("dave", organization=acme)
    membership_set(organization=globex, account=dave.account, role=Membership.Role.MEMBER, actor=TESTS)
    return People(
        acme=acme,
        globex=globex,
        evil=evil,
        staff_org=staff_org,
        alice=make_person("alice", organization=acme, role=Membership.Role.OWNER),
        carol=make_person("carol", organization=acme, role=Membership.Role.ADMIN),
        bob=make_person("bob", organization=acme),
        dave=dave,
        mallory=make_person("mallory", organization=evil, role=Membership.Role.OWNER),
        sam=make_person("sam", organization=staff_org),
    )


class Api:
    """Calls the API the way a client does: JSON bodies, the key in a header."""

    def __init__(self):
        self.client = APIClient()

    def call(self, method: str, path: str, *, key: str | None = None, body=None, headers=None, **extra):
        headers = dict(headers or {})
        if key is not None:
            headers.setdefault("x-api-key", key)
        data = json.dumps(body) if body is not None else None
        kwargs = {"content_type": "application/json"} if data is not None else {}
        return getattr(self.client, method.lower())(path, data=data, headers=headers, **kwargs, **extra)

    def setup(self, key, body=None, **kw):
        return self.call("post", "/api/sandboxes/setup", key=key, body=body, **kw)

    def delete(self, key, body=None, **kw):
        return self.call("delete", "/api/sandboxes", key=key, body=body, **kw)

    def runs(self, key, **params):
        query = "&".join(f"{name}={value}" for name, value in params.items())
        return self.call("get", f"/api/tasks/runs?{query}", key=key)

    def sandbox(self, key, **params):
        return self.call("get", "/api/sandboxes", key=key, QUERY_STRING=urlencode(params))

    def read_file(self, key, **params):
        return self.call("get", "/api/sandboxes/file", key=key, QUERY_STRING=urlencode(params))

    def renew(self, key, body=None, **kw):
        return self.call("patch", "/api/sandboxes", key=key, body=body, **kw)


@pytest.fixture
def api() -> Api:
    return Api()


@pytest.fixture
def run_queued_setups():
    """Run every queued setup run the way a django-q2 worker would (the task function itself).

    As django-q2 does, a run whose task raises (a failed run, SetupRunFailed) does not stop the others.
    """

    def run_all() -> list[SetupRun]:
        ids = list(SetupRun.objects.filter(status=SetupRun.Status.QUEUED).values_list("pk", flat=True))
        for run_id in ids:
            try:
                run_setup(run_id)
            except SetupRunFailed:
                pass
        return list(SetupRun.objects.filter(pk__in=ids))

    return run_all


@pytest.fixture
def sandbox_set_up(api, run_queued_setups):
    """Set up a person's sandbox through the API and run the pipeline; returns the Snapshot row."""
    from sandboxes.models import Snapshot

    def set_up(person: Person) -> Snapshot:
        assert api.setup(person.key).status_code == 200
        run_queued_setups()
        return Snapshot.objects.get(account=person.account)

    return set_up


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """moto's S3 server on a free port of 127.0.0.1, for the whole session (tests/s3_server.py)."""
    from tests.s3_server import start_s3_server

    server = start_s3_server(tmp_path_factory.mktemp("s3") / "moto.log")
    yield server
    server.stop()


@pytest.fixture
def s3_store(settings, s3_server, monkeypatch):
    """SNAPSHOT_STORE=s3 on a new bucket of the S3 server; boto3 finds it through AWS_ENDPOINT_URL."""
    for name, value in s3_server.environment.items():
        monkeypatch.setenv(name, value)
    settings.SNAPSHOT_STORE = "s3"
    settings.SNAPSHOT_S3 = {"bucket": s3_server.new_bucket(), "prefix": "sandboxes/"}
    settings.SANDBOX_DEPLOYMENT_ID = "test-deployment"
    return settings


def docker_test_image() -> str:
    """The docker backend's test image: SANDBOX_TEST_IMAGE, default sandbox-test:busybox."""
    import os

    return os.environ.get("SANDBOX_TEST_IMAGE", "sandbox-test:busybox")


@pytest.fixture(scope="session")
def docker_engine():
    """A Docker SDK client of the engine at DOCKER_HOST or the local socket, for the docker backend's tests.

    Skips the test when no engine answers or the test image is missing;
    `bash docker/test-image.sh` builds it.
    """
    import docker

    image = docker_test_image()
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as error:
        pytest.skip(
            f"no Docker engine answers at DOCKER_HOST or the local socket ({error}); "
            "`bash docker/test-image.sh` builds the test image once one does"
        )
    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        client.close()
        pytest.skip(
            f"the test image {image} is missing: `bash docker/test-image.sh {image}` builds it"
        )
    yield client
    client.close()


@pytest.fixture
def docker_settings(settings, docker_engine):
    """SANDBOX_BACKEND=docker with the docker backend's default settings, on the test image.

    The SANDBOX_* variables of the environment the tests run in are left out, so
    every test sees the defaults of config.environment.docker_sandbox_settings().
    """
    import os
    from unittest import mock

    from config.environment import docker_sandbox_settings

    with mock.patch.dict(os.environ):
        for name in [name for name in os.environ if name.startswith("SANDBOX_")]:
            del os.environ[name]
        os.environ["SANDBOX_IMAGE"] = docker_test_image()
        settings.SANDBOX_DOCKER = docker_sandbox_settings()
    settings.SANDBOX_BACKEND = "docker"
    return settings
