"""Starting the service as it runs in production, for the tests that talk to it over real HTTP.

A gunicorn web server and django-q2 clusters (`manage.py qcluster`) run as
separate processes, each in its own process group (so stopping one takes its
children with it, and nothing else), on the test's database, with the local
Redis as broker and a queue name of their own. What each process writes goes
to a log file that `Service.report` adds to a failing assertion.

Used by tests/test_worker_integration.py and tests/reliability/.
"""

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pytest
from django.db import connection

from sandboxes.models import SetupRun

REPO = Path(__file__).resolve().parents[1]
REDIS_URL = "redis://127.0.0.1:6379/0"
STARTUP_TIMEOUT = 30
# Variables of the environment that each test sets for its processes itself.
SERVICE_VARIABLES = ("DATABASE_URL", "REDIS_URL", "DEBUG", "QUEUE_NAME", "SANDBOX_ROOT", "GIT_ROOT")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def database_url(db: dict) -> str:
    """A postgres:// DATABASE_URL from Django's settings of a database (USER, PASSWORD, HOST, PORT, NAME)."""
    credentials = quote(db["USER"] or "", safe="")
    if db.get("PASSWORD"):
        credentials += ":" + quote(db["PASSWORD"], safe="")
    return f"postgres://{credentials}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def database_url_of_the_test_database() -> str:
    """DATABASE_URL of the database this test runs on (the test database, not the configured one)."""
    return database_url(connection.settings_dict)


@dataclass
class Process:
    name: str
    popen: subprocess.Popen
    log: Path
    stopped_on_purpose: bool = False

    @property
    def running(self) -> bool:
        return self.popen.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self):
        self.stopped_on_purpose = True
        if self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self):
        """SIGKILL to the whole process group (start_new_session): the process and its children, nothing else."""
        self.stopped_on_purpose = True
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.popen.wait(timeout=10)


@dataclass
class Service:
    base_url: str
    git_root: Path
    sandbox_root: Path
    queue_name: str
    processes: list[Process] = field(default_factory=list)
    env: dict = field(default_factory=dict)  # the environment its processes run in
    logs: Path | None = None

    def start(self, name: str, command: list[str]) -> Process:
        """Start one more process of the service (a web server, a qcluster) in its environment."""
        process = start(name, command, env=self.env, logs=self.logs)
        self.processes.append(process)
        return process

    def check_running(self):
        for process in self.processes:
            if process.popen.poll() is not None and not process.stopped_on_purpose:
                pytest.fail(self.report(f"{process.name} exited with {process.popen.returncode}"))

    def report(self, message: str) -> str:
        """The message, then what each process wrote: for the assertion that failed."""
        parts = [message]
        for process in self.processes:
            state = "running" if process.popen.poll() is None else f"exited with {process.popen.returncode}"
            parts.append(f"\n----- {process.name} ({state}) -----\n{process.output()[-8000:]}")
        return "\n".join(parts)

    def wait_for_run(self, key: str, run_id: str, *, timeout: float = 60) -> dict:
        """Poll GET /api/tasks/runs until the run has finished; fail with the processes' output if it does not."""
        deadline = time.monotonic() + timeout
        run = None
        while time.monotonic() < deadline:
            self.check_running()
            status, body = self.call("GET", f"/api/tasks/runs?runId={run_id}", key=key)
            assert status == 200, self.report(f"polling the run answered {status} {body}")
            [run] = body["runs"]
            if run["status"] not in SetupRun.ACTIVE_STATUSES:
                return run
            time.sleep(0.3)
        pytest.fail(self.report(f"run {run_id} did not finish within {timeout:g} s; last seen: {run}"))

    def call(self, method: str, path: str, *, key: str | None = None, body=None,
             timeout: float = 30) -> tuple[int, dict]:
        status, _headers, payload = self.request(method, path, key=key, body=body, timeout=timeout)
        return status, json.loads(payload or b"null")

    def request(self, method: str, path: str, *, key: str | None = None, body=None,
                timeout: float = 30, headers: dict | None = None) -> tuple[int, dict, bytes]:
        """(status, headers, raw body): for answers that may not be JSON."""
        headers = {"Accept": "application/json", **(headers or {})}
        if key is not None:
            headers["x-api-key"] = key
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.base_url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read()

    def stop(self):
        for process in reversed(self.processes):
            process.stop()


def service_environment(*, database_url: str, queue_name: str, sandbox_root: Path, git_root: Path, var_dir: Path,
                        **variables: str) -> dict:
    """os.environ for the service's processes: the test settings on the given database and Redis."""
    env = {name: value for name, value in os.environ.items() if name not in SERVICE_VARIABLES}
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings_test",
        DATABASE_URL=database_url,
        REDIS_URL=REDIS_URL,
        QUEUE_NAME=queue_name,
        QUEUE_WORKERS="1",
        SANDBOX_ROOT=str(sandbox_root),
        GIT_ROOT=str(git_root),
        VAR_DIR=str(var_dir),
        PYTHONUNBUFFERED="1",
    )
    env.update(variables)
    return env


def new_queue_name() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


def start(name: str, command: list[str], *, env: dict, logs: Path) -> Process:
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{name}.log"
    with log.open("ab") as sink:
        popen = subprocess.Popen(command, cwd=REPO, env=env, stdout=sink, stderr=subprocess.STDOUT,
                                 start_new_session=True)
    return Process(name=name, popen=popen, log=log)


def gunicorn_command(port: int, *, workers: int = 1, threads: int = 1, timeout: int = 60) -> list[str]:
    import gunicorn

    command = [sys.executable, "-m", "gunicorn", "config.wsgi", "--bind", f"127.0.0.1:{port}",
               "--workers", str(workers), "--timeout", str(timeout), "--access-logfile", "-"]
    if threads > 1:
        command += ["--threads", str(threads)]
    if gunicorn.version_info >= (27,):
        # Since gunicorn 27 every server opens ~/.gunicorn/gunicorn.ctl; a test's must not take another's.
        command.append("--no-control-socket")
    return command


def qcluster_command() -> list[str]:
    return [sys.executable, "manage.py", "qcluster"]


def wait_until_healthy(service: Service, web: Process, *, timeout: float = STARTUP_TIMEOUT):
    deadline = time.monotonic() + timeout
    last_problem = "no answer yet"
    while time.monotonic() < deadline:
        if web.popen.poll() is not None:
            pytest.fail(service.report(f"the web server exited with {web.popen.returncode} before it answered"))
        try:
            status, body = service.call("GET", "/healthz", timeout=5)
        except (OSError, ValueError) as problem:
            last_problem = repr(problem)
        else:
            if status == 200:
                return
            last_problem = f"{status} {body}"
        time.sleep(0.3)
    pytest.fail(service.report(f"/healthz did not answer 200 within {timeout} s: {last_problem}"))


def forget_queue(queue_name: str):
    """Remove the Redis keys of the queue (and of the cache, prefixed with the queue name)."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = [*client.scan_iter(match=f"django_q:{queue_name}:*"), *client.scan_iter(match=f"{queue_name}:*")]
        if keys:
            client.delete(*keys)
    finally:
        client.close()


class PrivatePostgres:
    """A PostgreSQL server of one test's own, in a temporary folder, on a free port of 127.0.0.1.

    For tests that stop and start the database server: the machine's shared
    server is never touched. Made with the installed server's initdb and
    pg_ctl (as the postgres user when running as root, as PostgreSQL refuses
    to run as root); fsync is off, nothing here needs to survive a crash.
    """

    def __init__(self):
        candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=_version_key)
        if not candidates:
            pytest.skip("needs the PostgreSQL server binaries (/usr/lib/postgresql/*/bin)")
        self.bin = Path(candidates[-1]).parent
        self.folder = Path(tempfile.mkdtemp(prefix="private-postgres-"))
        self.data = self.folder / "data"
        self.log = self.folder / "server.log"
        self.port = free_port()
        self.as_postgres = []
        if os.geteuid() == 0:
            self.as_postgres = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.folder, "postgres", "postgres")
        self.folder.chmod(0o700)

    def _run(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess:
        completed = subprocess.run([*self.as_postgres, *argv], check=False, capture_output=True, text=True,
                                   timeout=timeout)
        if completed.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[:2])} failed: {completed.stdout}{completed.stderr}\n"
                               f"{self.server_log()}")
        return completed

    def server_log(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def init(self) -> "PrivatePostgres":
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
                  "-E", "UTF8", "--no-sync")
        return self

    def start(self):
        options = (f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off")
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options,
                  "-w", "-t", "30", "start")

    def stop(self, mode: str = "fast"):
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop")

    def create_database(self, name: str):
        self._run(str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)

    def url(self, name: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{name}"

    def destroy(self):
        if (self.data / "postmaster.pid").exists():
            try:
                self.stop(mode="immediate")
            except (RuntimeError, subprocess.TimeoutExpired):
                pass
        shutil.rmtree(self.folder, ignore_errors=True)


def _version_key(path: str):
    version = Path(path).parents[1].name
    return tuple(int(part) for part in version.split(".") if part.isdigit())


def manage(env: dict, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """`manage.py ARGS` in the given environment; fails the test with its output if it fails."""
    completed = subprocess.run([sys.executable, "manage.py", *args], cwd=REPO, env=env, check=False,
                               capture_output=True, text=True, timeout=timeout)
    if completed.returncode != 0:
        pytest.fail(f"manage.py {' '.join(args)} exited with {completed.returncode}:\n"
                    f"{completed.stdout[-3000:]}\n{completed.stderr[-3000:]}")
    return completed
