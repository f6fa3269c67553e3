"""The database restarts while requests flow: clean errors during the outage, recovery without a restart.

The service runs on a PostgreSQL server of the test's own (PrivatePostgres in
tests/processes.py: initdb in a temporary folder, another port), so stopping
it touches nobody else's database. gunicorn (two workers) serves a steady
stream of authenticated API calls and health checks. The server is stopped
for a few seconds and started again. Throughout:

- every answer is 200 or a JSON 503, never a 500, an HTML page or a hang;
- while the server is down, every answer is 503 with Retry-After, the API's
  saying `The database is not answering; try again shortly`, and each comes
  back in well under a second or two;
- once the server is up again, the same gunicorn workers (none restarted)
  answer 200 within seconds.
"""

import threading
import time
from dataclasses import dataclass

import pytest

from config.errors import DATABASE_UNAVAILABLE_MESSAGE
from tests.conftest import requires_postgres
from tests.processes import REDIS_URL, PrivatePostgres, manage

pytestmark = [requires_postgres, pytest.mark.postgres, pytest.mark.reliability]

OUTAGE_SECONDS = 4
QUICK = 2.0  # seconds: an answer during the outage must come at least this fast
RECOVERY_TIMEOUT = 15
SEED = """
from accounts.audit import Actor
from accounts.services import account_create, api_key_create
account = account_create(name="Olive", email="olive@example.com")
print("KEY=" + api_key_create(actor=Actor.command("tests"), account=account, name="restart")[1])
"""


@dataclass
class Answer:
    started: float
    finished: float
    path: str
    status: int
    headers: dict
    body: bytes

    @property
    def seconds(self) -> float:
        return self.finished - self.started


@pytest.fixture
def private_postgres():
    server = PrivatePostgres().init()
    try:
        server.start()
        server.create_database("sandboxes")
        yield server
    finally:
        server.destroy()


@pytest.fixture
def service_on_private_postgres(start_service, private_postgres, tmp_path):
    database_url = private_postgres.url("sandboxes")
    env = {"DJANGO_SETTINGS_MODULE": "config.settings_test", "DATABASE_URL": database_url, "REDIS_URL": REDIS_URL,
           "VAR_DIR": str(tmp_path / "var"), "PATH": "/usr/local/bin:/usr/bin:/bin", "PYTHONWARNINGS": "ignore"}
    manage(env, "migrate", "--noinput")
    [key] = [line[4:] for line in manage(env, "shell", "-c", SEED).stdout.splitlines() if line.startswith("KEY=")]
    service = start_service(workers=2, qcluster=False, database_url=database_url)
    return service, key


class Traffic:
    """Calls the service in a loop from a thread of its own until stopped (bounded: at most 5 minutes)."""

    PATHS = ("/api/ping", "/api/tasks/runs", "/healthz")

    def __init__(self, service, key: str):
        self.service, self.key = service, key
        self.answers: list[Answer] = []
        self.problems: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=30)

    def _loop(self):
        deadline = time.monotonic() + 300
        number = 0
        while not self._stop.is_set() and time.monotonic() < deadline:
            path = self.PATHS[number % len(self.PATHS)]
            number += 1
            started = time.monotonic()
            try:
                status, headers, body = self.service.request("GET", path, key=self.key, timeout=10)
            except OSError as problem:  # a hang (timeout) or a dropped connection
                self.problems.append(f"{path}: {problem!r} after {time.monotonic() - started:.1f} s")
            else:
                self.answers.append(Answer(started, time.monotonic(), path, status, headers, body))
            time.sleep(0.05)

    def between(self, start: float, end: float) -> list[Answer]:
        return [answer for answer in self.answers if answer.started >= start and answer.finished <= end]


def booted_workers(service) -> int:
    [web] = [process for process in service.processes if process.name == "gunicorn"]
    return web.output().count("Booting worker with pid")


def test_a_database_restart_is_answered_with_json_503_and_the_service_recovers_by_itself(
    service_on_private_postgres, private_postgres
):
    import json

    service, key = service_on_private_postgres
    workers_before = booted_workers(service)

    with Traffic(service, key) as traffic:
        time.sleep(1.5)
        private_postgres.stop(mode="fast")
        outage_start = time.monotonic()
        time.sleep(OUTAGE_SECONDS)
        outage_end = time.monotonic()
        private_postgres.start()
        restarted = time.monotonic()

        deadline = restarted + RECOVERY_TIMEOUT
        recovered_at = None
        while time.monotonic() < deadline and recovered_at is None:
            recent = [answer for answer in traffic.answers if answer.started > restarted]
            if len(recent) >= 6 and all(answer.status == 200 for answer in recent[-6:]):
                recovered_at = recent[-6].started
            time.sleep(0.2)
        time.sleep(0.5)

    report = service.report
    assert not traffic.problems, report(f"requests that hung or were dropped: {traffic.problems}")
    assert recovered_at is not None, report(f"no recovery within {RECOVERY_TIMEOUT} s of the restart: "
                                            f"{[(a.path, a.status) for a in traffic.answers[-10:]]}")

    before = traffic.between(0, outage_start - 0.5)
    assert before and all(answer.status == 200 for answer in before), [(a.path, a.status) for a in before]

    for answer in traffic.answers:
        assert answer.status in (200, 503), report(f"{answer.path} answered {answer.status}: {answer.body[:300]}")
        assert answer.headers.get("Content-Type") == "application/json", report(f"not JSON: {answer}")
        json.loads(answer.body)

    during = traffic.between(outage_start, outage_end)
    assert len(during) >= 10, f"only {len(during)} requests during the outage"
    for answer in during:
        assert answer.status == 503, report(f"{answer.path} answered {answer.status} while the database was down")
        assert answer.seconds < QUICK, f"{answer.path} took {answer.seconds:.1f} s during the outage"
        body = json.loads(answer.body)
        assert body["status"] == "error"
        assert answer.headers.get("Retry-After") == "5"
        if answer.path == "/healthz":
            assert body["checks"]["database"] == "unavailable"
        else:
            assert body == {"status": "error", "error": DATABASE_UNAVAILABLE_MESSAGE}

    assert recovered_at - restarted < RECOVERY_TIMEOUT
    assert all(process.running for process in service.processes), report("a process of the service exited")
    assert booted_workers(service) == workers_before == 2, report("gunicorn restarted a worker")
