"""The service's logs as its processes write them: gunicorn and a django-q2 cluster with LOG_FORMAT=json.

Both run on a SQLite database of their own with django-q2's ORM broker (as
`make run` does), DEBUG on and LOG_LEVEL=DEBUG, so that every SQL statement
is a log line too. What is pinned:

- every line either process writes is one JSON object;
- in gunicorn, every line that is not gunicorn's own start-up or shut-down
  carries the request id of the request that caused it (the client's
  X-Request-ID), Django's "Not Found" and the access line included;
- in the worker, every line from the first to the last of a run carries the
  run's id, and nothing else does;
- a failed setup is logged at ERROR with its run id, its django-q2 task is
  recorded as failed (`success=False`, once), and the broker holds nothing
  more: it is acknowledged and never handed out again; the completed one is
  a success;
- the plain format, the development default, names the request on its lines.
"""

import json
import logging
import os
import sqlite3
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from config.logs import ContextFilter, PlainFormatter, bind_request, run_context
from tests.processes import (
    Service,
    free_port,
    gunicorn_command,
    manage,
    qcluster_command,
    wait_until_healthy,
)

SETUP_REQUEST_ID = "logs-setup-alice"
MISSING_REQUEST_ID = "logs-not-found"


def json_lines(output: str) -> list[dict]:
    lines = []
    for line in output.splitlines():
        if not line.strip():
            continue
        try:
            lines.append(json.loads(line))
        except ValueError:
            pytest.fail(f"a line that is not JSON: {line!r}")
    return lines


def query(database: Path, sql: str, *params) -> list[tuple]:
    with sqlite3.connect(database, timeout=20) as connection:
        return connection.execute(sql, params).fetchall()


@pytest.fixture
def json_service(tmp_path):
    """gunicorn and qcluster, LOG_FORMAT=json, on a SQLite file and the ORM broker; Alice's key and Bob's."""
    var_dir = tmp_path / "var"
    env = {name: value for name, value in os.environ.items()
           if name not in ("DATABASE_URL", "REDIS_URL", "QUEUE_NAME", "SANDBOX_ROOT", "GIT_ROOT", "LOG_LEVEL")}
    env.update(DJANGO_SETTINGS_MODULE="config.settings_test", VAR_DIR=str(var_dir), DEBUG="1",
               LOG_FORMAT="json", LOG_LEVEL="DEBUG", QUEUE_WORKERS="1", PYTHONUNBUFFERED="1")
    quiet = {**env, "LOG_LEVEL": "WARNING"}
    manage(quiet, "migrate", "--noinput")
    alice = manage(quiet, "create_account", "--name", "Alice", "--email", "alice@example.com").stdout.strip()
    bob = manage(quiet, "create_account", "--name", "Bob", "--email", "bob@example.com").stdout.strip()
    keys = {name: manage(quiet, "create_api_key", "--account", account).stdout.splitlines()[-1]
            for name, account in (("alice", alice), ("bob", bob))}
    # Bob's repository cannot be made: a file stands where it would go.
    (var_dir / "git").mkdir(parents=True)
    (var_dir / "git" / f"bob-{bob}.git").write_text("not a repository\n")

    port = free_port()
    service = Service(base_url=f"http://127.0.0.1:{port}", git_root=var_dir / "git",
                      sandbox_root=var_dir / "sandboxes", queue_name="sandboxes", env=env, logs=tmp_path / "logs")
    try:
        web = service.start("gunicorn", gunicorn_command(port))
        service.start("qcluster", qcluster_command())
        wait_until_healthy(service, web)
        yield service, keys, var_dir / "db.sqlite3"
    finally:
        service.stop()


def test_json_logs_carry_the_request_id_and_the_run_id(json_service):
    service, keys, database = json_service

    run_ids = {}
    for name, request_id in (("alice", SETUP_REQUEST_ID), ("bob", "logs-setup-bob")):
        status, headers, body = request_with_id(service, "POST", "/api/sandboxes/setup", keys[name], request_id)
        assert status == 200, service.report(f"setup answered {status} {body}")
        run_ids[name] = json.loads(body)["runId"]
    status, _headers, _body = request_with_id(service, "GET", "/api/nothing-here", keys["alice"], MISSING_REQUEST_ID)
    assert status == 404
    assert service.wait_for_run(keys["alice"], run_ids["alice"])["status"] == "COMPLETED"
    assert service.wait_for_run(keys["bob"], run_ids["bob"])["status"] == "FAILED"
    tasks = wait_for_task_results(database, run_ids, service)
    service.stop()
    web, worker = (json_lines(process.output()) for process in service.processes)

    # gunicorn: every line a request caused names it.
    for line in web:
        if line["logger"] != "gunicorn.error":
            assert line.get("request_id"), line
    setup_lines = [line for line in web if line.get("request_id") == SETUP_REQUEST_ID]
    assert {"django.db.backends", "gunicorn.access"} <= {line["logger"] for line in setup_lines}, setup_lines
    [not_found] = [line for line in web if line["logger"] == "django.request"
                   and line["message"] == "Not Found: /api/nothing-here"]
    assert (not_found["request_id"], not_found["level"], not_found["status_code"]) == (MISSING_REQUEST_ID,
                                                                                       "WARNING", 404)

    # The worker: every line from a run's first to its last carries its id.
    for name, run_id in run_ids.items():
        of_run = [index for index, line in enumerate(worker) if line.get("run_id") == run_id]
        assert of_run, f"no line of run {run_id}"
        pid = worker[of_run[0]]["pid"]
        span = [line for line in worker[of_run[0]:of_run[-1] + 1] if line["pid"] == pid]
        assert all(line.get("run_id") == run_id for line in span), [line for line in span if "run_id" not in line]
        assert any(line["logger"] == "django.db.backends" and run_id in line["message"] for line in span)
        assert any(line["logger"] == "sandboxes.pipeline" for line in span)

    [failed] = [line for line in worker if line["level"] == "ERROR" and line["logger"] == "sandboxes.pipeline"]
    assert failed["run_id"] == run_ids["bob"]
    assert f"Setup run {run_ids['bob']} for account" in failed["message"]
    assert "Creating the repository failed" in failed["message"]

    # django-q2: the failed run's task failed, once; the broker keeps nothing to hand out again.
    assert tasks == {run_ids["alice"]: (1, 1), run_ids["bob"]: (0, 1)}
    assert query(database, "SELECT COUNT(*) FROM django_q_ormq") == [(0,)]


def request_with_id(service: Service, method: str, path: str, key: str, request_id: str):
    data = b"{}" if method == "POST" else None
    request = urllib.request.Request(service.base_url + path, data=data, method=method, headers={
        "x-api-key": key, "X-Request-ID": request_id, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def wait_for_task_results(database: Path, run_ids: dict, service: Service, timeout: float = 30) -> dict:
    """{run id: (success, attempt_count)} of the django-q2 tasks of the runs, once both are recorded."""
    deadline = time.monotonic() + timeout
    names = {f"setup-sandbox {run_id}": run_id for run_id in run_ids.values()}
    while True:
        rows = query(database, "SELECT name, success, attempt_count FROM django_q_task WHERE name IN (?, ?)",
                     *names)
        if len(rows) == len(names):
            return {names[name]: (success, attempts) for name, success, attempts in rows}
        assert time.monotonic() < deadline, service.report(f"task results not recorded: {rows}")
        time.sleep(0.3)


# --- the plain format -----------------------------------------------------------------------------


def test_plain_lines_name_the_request_and_the_run():
    formatter, context = PlainFormatter(), ContextFilter()

    def line(message: str) -> str:
        record = logging.LogRecord("sandboxes.pipeline", logging.INFO, __file__, 1, message, None, None)
        context.filter(record)
        return formatter.format(record)

    assert line("alone").endswith(" INFO sandboxes.pipeline: alone")
    bind_request("req-1")
    try:
        with run_context("run_1"):
            assert line("both").endswith(" INFO sandboxes.pipeline [request=req-1 run=run_1]: both")
        assert line("request").endswith(" INFO sandboxes.pipeline [request=req-1]: request")
    finally:
        bind_request("")
