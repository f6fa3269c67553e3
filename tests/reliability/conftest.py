"""Fixtures of the reliability tests: the service started for real (tests/processes.py).

Each test starts what it needs (gunicorn with some workers and threads, one
or more qcluster) on its database with settings of its own, and everything
it started is stopped afterwards, even when it failed.
"""

from pathlib import Path

import pytest

from tests.github_emulator import GitHubEmulator
from tests.processes import (
    Service,
    database_url_of_the_test_database,
    forget_queue,
    free_port,
    gunicorn_command,
    new_queue_name,
    qcluster_command,
    service_environment,
    wait_until_healthy,
)
from tests.webhooks.receiver import local_webhooks, make_endpoint, receiver  # noqa: F401 (webhook fixtures)


@pytest.fixture
def github(tmp_path):
    """The GitHub REST emulator (tests/github_emulator.py) with an organization, for GIT_HOST=github."""
    emulator = GitHubEmulator(tmp_path / "github", organization="sandbox-org").start()
    yield emulator
    emulator.stop()


@pytest.fixture
def start_service(transactional_db, settings, tmp_path):
    """start_service(workers=1, threads=1, qcluster=True, database_url=None, **environment) -> Service.

    Rows are committed (transactional_db) so the service's processes see them.
    """
    started: list[Service] = []

    def start_service(*, workers: int = 1, threads: int = 1, qcluster: bool = True, database_url: str | None = None,
                      **variables: str) -> Service:
        queue_name = new_queue_name()
        port = free_port()
        service = Service(
            base_url=f"http://127.0.0.1:{port}", git_root=Path(settings.GIT_ROOT),
            sandbox_root=Path(settings.SANDBOX_ROOT), queue_name=queue_name, logs=tmp_path / f"logs-{len(started)}",
            env=service_environment(database_url=database_url or database_url_of_the_test_database(),
                                    queue_name=queue_name, sandbox_root=settings.SANDBOX_ROOT,
                                    git_root=settings.GIT_ROOT, var_dir=tmp_path / "var", **variables),
        )
        started.append(service)
        web = service.start("gunicorn", gunicorn_command(port, workers=workers, threads=threads))
        if qcluster:
            service.start("qcluster", qcluster_command())
        wait_until_healthy(service, web)
        return service

    yield start_service
    for service in started:
        service.stop()
        forget_queue(service.queue_name)
