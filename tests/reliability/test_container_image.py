"""The service's image (Dockerfile) run as web and as worker, looked at from outside.

The image (SANDBOX_SERVICE_IMAGE, default sandbox-service:ci; .ci/run builds
it on the Debian-made base) runs with `--network host` against the
machine's PostgreSQL (a fresh database of the test's own) and Redis (a queue
name of its own), with snapshots in moto's S3 server (tests/s3_server.py)
and the local git host's repositories in a volume web and worker share. The
settings are production's (DEBUG off) less HTTPS.

- `manage.py migrate`, `create_account` and `create_api_key` run as one-off
  containers of the image;
- the web container answers GET /healthz 200 on its port, and the image's
  own HEALTHCHECK command passes in it;
- a setup completes: its repository is in the volume, its snapshot in the
  bucket and on a row;
- a delete leaves nothing: no repository, no object, no row.

Skipped when no Docker engine answers, the image is missing or PostgreSQL
does not answer on 127.0.0.1:5432.
"""

import contextlib
import json
import os
import time
import uuid
from dataclasses import dataclass, field

import pytest

from tests.processes import REDIS_URL, Service, forget_queue, free_port, new_queue_name

pytestmark = [pytest.mark.reliability, pytest.mark.docker]

IMAGE = os.environ.get("SANDBOX_SERVICE_IMAGE", "sandbox-service:ci")
POSTGRES_SERVER = "postgres://postgres@127.0.0.1:5432"
GIT_ROOT = "/var/lib/sandbox-service/git"  # in the image
STARTUP_TIMEOUT = 60


@pytest.fixture(scope="module")
def engine():
    """The Docker SDK's client, once the engine answers and holds the image."""
    import docker

    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as error:
        pytest.skip(f"no Docker engine answers at DOCKER_HOST or the local socket ({error})")
    try:
        client.images.get(IMAGE)
    except docker.errors.ImageNotFound:
        client.close()
        pytest.skip(f"the service's image {IMAGE} is missing: build it with "
                    f"`docker build --network host --build-arg BASE=debian-base:bookworm -t {IMAGE} .` "
                    "(docs/container-image.md), or name another with SANDBOX_SERVICE_IMAGE")
    yield client
    client.close()


@pytest.fixture
def database():
    """A fresh PostgreSQL database on the machine's server; dropped afterwards."""
    import psycopg

    name = f"image_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(f"{POSTGRES_SERVER}/postgres", autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as error:
        pytest.skip(f"needs PostgreSQL on 127.0.0.1:5432 (user postgres): {error}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"{POSTGRES_SERVER}/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class ContainerService(Service):
    """tests/processes.py's Service, its processes being the image's containers."""

    engine: object = None
    image_env: dict = field(default_factory=dict)
    containers: list = field(default_factory=list)
    volumes: dict = field(default_factory=dict)

    def run(self, *command: str) -> str:
        """A one-off container of the image (`docker run --rm`); its stdout, or the test fails with its output."""
        import docker

        try:
            output = self.engine.containers.run(IMAGE, list(command), environment=self.image_env,
                                                network_mode="host", volumes=self.volumes, remove=True,
                                                stdout=True, stderr=False)
        except docker.errors.ContainerError as error:
            pytest.fail(self.report(f"`{' '.join(command)}` exited with {error.exit_status}: "
                                    f"{(error.stderr or b'').decode(errors='replace')[-3000:]}"))
        return output.decode()

    def start_container(self, name: str, command: list[str] | None = None, **options):
        container = self.engine.containers.run(
            IMAGE, command, name=f"{self.queue_name}-{name}", environment=self.image_env, network_mode="host",
            volumes=self.volumes, detach=True, **options,
        )
        self.containers.append(container)
        return container

    def check_running(self):
        for container in self.containers:
            container.reload()
            if container.status != "running":
                pytest.fail(self.report(f"{container.name} is {container.status}"))

    def report(self, message: str) -> str:
        import docker

        parts = [message]
        for container in self.containers:
            try:
                container.reload()
                logs = container.logs().decode(errors="replace")[-8000:]
            except docker.errors.DockerException as error:  # the container is gone: say so instead
                logs = f"(no logs: {error})"
            parts.append(f"\n----- {container.name} ({container.status}) -----\n{logs}")
        return "\n".join(parts)

    def wait_until_healthy(self, timeout: float = STARTUP_TIMEOUT):
        deadline = time.monotonic() + timeout
        problem = "no answer yet"
        while time.monotonic() < deadline:
            self.check_running()
            try:
                status, body = self.call("GET", "/healthz", timeout=5)
            except (OSError, ValueError) as error:
                problem = repr(error)
            else:
                if status == 200:
                    return body
                problem = f"{status} {body}"
            time.sleep(0.3)
        pytest.fail(self.report(f"/healthz did not answer 200 within {timeout} s: {problem}"))

    def remove(self):
        import docker

        for container in reversed(self.containers):
            with contextlib.suppress(docker.errors.NotFound):  # already gone
                container.remove(force=True)


@pytest.fixture
def service(engine, database, s3_server, tmp_path):
    """The image as web and worker, migrated, on the fresh database; removed afterwards with its volume."""
    queue_name = new_queue_name()
    port = free_port()
    bucket = s3_server.new_bucket()
    volume = engine.volumes.create(f"{queue_name}-git")
    service = ContainerService(
        base_url=f"http://127.0.0.1:{port}", git_root=tmp_path, sandbox_root=tmp_path, queue_name=queue_name,
        engine=engine, volumes={volume.name: {"bind": GIT_ROOT, "mode": "rw"}},
        image_env={
            "DEBUG": "0", "SECRET_KEY": uuid.uuid4().hex, "API_KEY_PEPPER": uuid.uuid4().hex,
            "ALLOWED_HOSTS": "127.0.0.1", "SECURE_SSL_REDIRECT": "0",
            "DATABASE_URL": database, "REDIS_URL": REDIS_URL, "QUEUE_NAME": queue_name, "QUEUE_WORKERS": "1",
            "SANDBOX_DEPLOYMENT_ID": f"image-{uuid.uuid4().hex[:8]}",
            "SNAPSHOT_STORE": "s3", "SNAPSHOT_S3_BUCKET": bucket, "SNAPSHOT_S3_PREFIX": "sandboxes",
            **s3_server.environment,
            # The key create_api_key makes may set up, read and delete.
            "API_KEY_DEFAULT_SCOPES": "sandboxes:read sandboxes:setup sandboxes:delete",
            "PORT": str(port), "WEB_CONCURRENCY": "1",
        },
    )
    try:
        service.run("python", "manage.py", "migrate", "--noinput")
        service.start_container("web")
        service.start_container("worker", ["python", "manage.py", "qcluster"], healthcheck={"test": ["NONE"]})
        yield service
    finally:
        service.remove()
        volume.remove(force=True)
        forget_queue(queue_name)


def rows(database: str, sql: str, *params) -> list[tuple]:
    import psycopg

    with psycopg.connect(database) as connection:
        return connection.execute(sql, params).fetchall()


def test_the_image_serves_a_setup_and_a_delete_that_leaves_nothing(engine, service, database, s3_server):
    bucket = service.image_env["SNAPSHOT_S3_BUCKET"]
    deployment = service.image_env["SANDBOX_DEPLOYMENT_ID"]
    [web, _worker] = service.containers

    assert service.wait_until_healthy() == {"status": "ok", "checks": {"database": "ok", "broker": "ok"}}
    # The image's own HEALTHCHECK command, run where Docker runs it.
    healthcheck = engine.images.get(IMAGE).attrs["Config"]["Healthcheck"]["Test"]
    assert healthcheck[0] == "CMD", healthcheck
    exit_code, output = web.exec_run(healthcheck[1:])
    assert exit_code == 0, service.report(f"the HEALTHCHECK command failed: {output.decode(errors='replace')}")
    # Not root.
    exit_code, output = web.exec_run(["id", "-u"])
    assert exit_code == 0 and output.decode().strip() != "0", output

    account = service.run("python", "manage.py", "create_account", "--name", "Image Test",
                          "--email", "image@example.com").strip()
    key = service.run("python", "manage.py", "create_api_key", "--account", account).strip().splitlines()[-1]

    status, body = service.call("POST", "/api/sandboxes/setup", key=key, body={})
    assert status in (200, 202), service.report(f"setup answered {status} {body}")
    run = service.wait_for_run(key, body["runId"])
    assert run["status"] == "COMPLETED", service.report(f"the run ended {run['status']}: {json.dumps(run)}")
    snapshot_id = run["output"]["snapshot_id"]
    repository = run["output"]["github_repo"]
    assert repository.startswith(f"file://{GIT_ROOT}/"), repository
    repository_folder = repository.removeprefix("file://")

    assert web.exec_run(["test", "-d", repository_folder]).exit_code == 0, \
        service.report(f"{repository_folder} is not in the web container's volume")
    objects = s3_server.client().list_objects_v2(Bucket=bucket).get("Contents", [])
    assert [item["Key"] for item in objects] == [f"sandboxes/{deployment}/{snapshot_id}.tar.gz"]
    assert rows(database, "SELECT snapshot_id FROM sandboxes_snapshot") == [(snapshot_id,)]

    status, body = service.call("DELETE", "/api/sandboxes", key=key, body={})
    assert status == 200, service.report(f"delete answered {status} {body}")
    assert body["deleted_snapshot"]["snapshot_id"] == snapshot_id, body

    assert web.exec_run(["ls", "-A", GIT_ROOT]).output.decode().split() == [], "a repository is left"
    assert s3_server.client().list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0, "an object is left"
    assert rows(database, "SELECT snapshot_id FROM sandboxes_snapshot") == []
    status, body = service.call("GET", "/api/sandboxes", key=key)
    assert status == 200 and body.get("snapshot_id") is None, body
    service.check_running()
