"""The service as the benchmarks run it: a throw-away PostgreSQL database, gunicorn, qcluster, Redis.

`BenchService` creates the database afresh (DROP ... WITH (FORCE), CREATE),
migrates it, opens Django in the benchmark's own process on the same
database (to seed accounts and keys in bulk and to read the results), and
starts gunicorn and qcluster as separate processes on 127.0.0.1, with the
production settings (DEBUG off) less HTTPS, Redis as broker and cache, and
a queue name of its own. `close()` stops the processes, removes the queue's
Redis keys and drops the database (unless asked to keep it).

Without a database URL and a Redis URL it runs on the embedded defaults, as
`make run` does: SQLite in the service's temporary VAR_DIR, django-q2's ORM
broker on it, and the database cache. `django()` runs a piece of code with
Django set up on the service's settings in a child process, for a benchmark
that runs several services (Django is set up once per process).
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def one_process_settings(var_dir: str) -> dict[str, str]:
    """The environment of a benchmark run in one process: production settings, a throw-away VAR_DIR, SQLite."""
    return {
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DEBUG": "0",
        "SECRET_KEY": "bench-secret-key",
        "API_KEY_PEPPER": "bench-pepper",
        "ALLOWED_HOSTS": "localhost",
        "LOG_LEVEL": "WARNING",
        "VAR_DIR": var_dir,
    }


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class BenchService:
    def __init__(self, *, database_url: str | None, redis_url: str | None, keep_database: bool = False,
                 **variables: str):
        self.database_url = database_url
        self.redis_url = redis_url
        self.keep_database = keep_database
        self.folder = Path(tempfile.mkdtemp(prefix="bench-"))
        self.queue_name = f"bench-{uuid.uuid4().hex[:10]}"
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.processes: dict[str, subprocess.Popen] = {}
        self.env = {
            **{name: value for name, value in os.environ.items() if name not in ("DATABASE_URL", "REDIS_URL")},
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "DEBUG": "0",
            "SECRET_KEY": "bench-secret-key-" + "x" * 40,
            "API_KEY_PEPPER": "bench-api-key-pepper",
            "ALLOWED_HOSTS": "127.0.0.1 localhost testserver",
            "SECURE_SSL_REDIRECT": "0",
            "SECURE_COOKIES": "0",
            **({"DATABASE_URL": database_url} if database_url else {}),
            **({"REDIS_URL": redis_url} if redis_url else {}),
            "QUEUE_NAME": self.queue_name,
            "VAR_DIR": str(self.folder / "var"),
            "SANDBOX_ROOT": str(self.folder / "sandboxes"),
            "GIT_ROOT": str(self.folder / "git"),
            "LOG_LEVEL": "WARNING",
            "PYTHONWARNINGS": "ignore",
            **variables,
        }

    # --- the database ---------------------------------------------------------
    @property
    def database_name(self) -> str:
        return database_name(self.database_url) if self.database_url else "SQLite in the service's VAR_DIR"

    def create_database(self):
        if self.database_url:
            recreate_database(self.database_url)
        subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=self.env,
                       check=True)

    def open_django(self):
        """Django in this process, on the benchmark's database and settings."""
        os.environ.update(self.env)
        import django

        django.setup()

    def django(self, code: str, *arguments: str):
        """Run `code` with Django set up on the service's settings, in a child process; what it prints last,
        as JSON. The code finds its arguments in sys.argv[1:]."""
        # This checkout's code, not whichever the environment would import first.
        setup = f"import sys\nsys.path.insert(0, {str(ROOT)!r})\nimport django\ndjango.setup()\n"
        done = subprocess.run([sys.executable, "-c", setup + code, *arguments],
                              cwd=ROOT / "bench", env=self.env, capture_output=True, text=True, check=False)
        if done.returncode:
            raise SystemExit(f"a step in Django's process failed:\n{done.stderr[-2000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])

    # --- processes --------------------------------------------------------------
    def start(self, name: str, command: list[str]):
        log = (self.folder / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=log,
                                                stderr=subprocess.STDOUT, start_new_session=True)

    def start_web(self, workers: int = 2, threads: int = 1):
        import gunicorn

        command = [sys.executable, "-m", "gunicorn", "config.wsgi", "--bind", f"127.0.0.1:{self.port}",
                   "--workers", str(workers), "--threads", str(threads), "--timeout", "60"]
        if gunicorn.version_info >= (27,):
            command.append("--no-control-socket")
        self.start("gunicorn", command)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.base_url + "/healthz", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise SystemExit(f"gunicorn did not answer /healthz; see {self.folder / 'gunicorn.log'}")

    def start_worker(self):
        self.start("qcluster", [sys.executable, "manage.py", "qcluster"])

    def close(self):
        for popen in self.processes.values():
            if popen.poll() is None:
                popen.send_signal(signal.SIGTERM)
        for popen in self.processes.values():
            try:
                popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(popen.pid, signal.SIGKILL)
                popen.wait()
        try:
            if self.redis_url:
                import redis

                client = redis.Redis.from_url(self.redis_url)
                keys = [*client.scan_iter(match=f"django_q:{self.queue_name}:*"),
                        *client.scan_iter(match=f"{self.queue_name}:*")]
                if keys:
                    client.delete(*keys)
                client.close()
        except Exception as problem:  # the figures are printed already; say what is left
            print(f"(could not remove the queue's Redis keys: {problem})", file=sys.stderr)
        try:
            from django.db import connections

            connections.close_all()
        except Exception:
            pass
        if self.database_url and not self.keep_database:
            drop_database(self.database_url)
        shutil.rmtree(self.folder, ignore_errors=True)


# --- throw-away PostgreSQL databases ----------------------------------------------
def database_name(database_url: str) -> str:
    return urlsplit(database_url).path.lstrip("/")


def _maintenance(database_url: str, statement: str):
    import psycopg

    maintenance = urlunsplit(urlsplit(database_url)._replace(path="/postgres"))
    with psycopg.connect(maintenance, autocommit=True) as connection:
        connection.execute(statement)


def recreate_database(database_url: str):
    """Drops and creates the database the URL names, which must be a benchmark's own (its name starts with bench)."""
    name = database_name(database_url)
    if not name.startswith("bench"):
        raise SystemExit(f"refusing to recreate {name!r}: the benchmark's database name must start with 'bench'")
    _maintenance(database_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    _maintenance(database_url, f'CREATE DATABASE "{name}"')


def drop_database(database_url: str):
    _maintenance(database_url, f'DROP DATABASE IF EXISTS "{database_name(database_url)}" WITH (FORCE)')


def seed_accounts(count: int, *, prefix: str) -> list[tuple[object, str]]:
    """`count` accounts with one key each, in bulk; returns (account, raw key) pairs."""
    from accounts.keys import generate_key, hash_key, visible_prefix
    from accounts.models import Account, ApiKey

    accounts = Account.objects.bulk_create(
        Account(name=f"{prefix.title()} {number}", email=f"{prefix}{number}@example.com") for number in range(count)
    )
    raw_keys = [generate_key() for _ in accounts]
    ApiKey.objects.bulk_create(
        ApiKey(account=account, name="bench", prefix=visible_prefix(raw), key_hash=hash_key(raw))
        for account, raw in zip(accounts, raw_keys)
    )
    return list(zip(accounts, raw_keys))


def api_call(base_url: str, key: str, method: str, path: str, body: bytes | None = None) -> dict:
    """One API request with the key; its JSON answer (an HTTP error raises urllib's HTTPError)."""
    request = urllib.request.Request(base_url + path, data=body, method=method,
                                     headers={"x-api-key": key, "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as answer:
        return json.loads(answer.read())


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))
    return ordered[index]
