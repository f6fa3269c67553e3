"""Start-up configuration: config/settings.py as it reads the environment.

Each case starts `manage.py` in a fresh process with a controlled
environment (config.settings, not the test settings): a value production
must set, or one that cannot be used, stops start-up with exit status 1 and
one line "Configuration error: NAME ..." (no traceback); with DEBUG on the
missing secrets get development values and a WARNING line. Then the values
the settings derive: the SQLite file under VAR_DIR or PostgreSQL from
DATABASE_URL, the Redis or ORM broker of django-q2, SNAPSHOT_TTL. Then a
unit test of config.environment.parse_duration, and last SNAPSHOT_STORE with
its S3 settings.
"""

import json
import os
import re
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from config.environment import parse_duration
from tests.processes import free_port

REPO = Path(__file__).resolve().parents[1]
CONTROLLED = ("DATABASE_URL", "DATABASE_PREPARED_STATEMENTS", "REDIS_URL", "SECRET_KEY", "API_KEY_PEPPER", "DEBUG",
              "ALLOWED_HOSTS")
PRODUCTION = {"SECRET_KEY": "s3cret-for-the-test", "API_KEY_PEPPER": "pepper-for-the-test",
              "ALLOWED_HOSTS": "sandboxes.example.com"}


@pytest.fixture
def base_env(tmp_path) -> dict:
    """os.environ without the variables under test, with DEBUG off and a VAR_DIR of its own."""
    env = {name: value for name, value in os.environ.items()
           if name not in CONTROLLED and not name.startswith(("SANDBOX_", "GIT_HOST", "GIT_ROOT", "SNAPSHOT_",
                                                                 "QUEUE_", "GITHUB_", "CORS_"))}
    env.update(DJANGO_SETTINGS_MODULE="config.settings", VAR_DIR=str(tmp_path / "var"), PYTHONWARNINGS="ignore")
    return env


def manage(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def check(env: dict, **variables: str) -> subprocess.CompletedProcess:
    return manage({**env, **variables}, "check")


def read_settings(env: dict, *names: str, **variables: str) -> dict:
    """The named settings as a started process sees them (JSON, other types as str)."""
    code = ("import json; from django.conf import settings; "
            f"print('SETTINGS=' + json.dumps({{n: getattr(settings, n) for n in {list(names)!r}}}, default=str))")
    completed = manage({**env, **variables}, "shell", "-c", code)
    assert completed.returncode == 0, completed.stderr
    [line] = [line for line in completed.stdout.splitlines() if line.startswith("SETTINGS=")]
    return json.loads(line.removeprefix("SETTINGS="))


def assert_stops_with_one_line(completed: subprocess.CompletedProcess, name: str) -> str:
    assert completed.returncode == 1, (completed.returncode, completed.stdout, completed.stderr)
    assert "Traceback" not in completed.stderr, completed.stderr
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1, completed.stderr
    [line] = lines
    assert re.match(rf"Configuration error: {name}\b", line), line
    return line


# --- secrets and hosts ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["SECRET_KEY", "API_KEY_PEPPER", "ALLOWED_HOSTS"])
def test_production_does_not_start_without_a_required_setting(base_env, name):
    env = {**base_env, **{key: value for key, value in PRODUCTION.items() if key != name}}
    line = assert_stops_with_one_line(check(env), name)
    assert "DEBUG is off" in line
    assert "or DEBUG=1 for development" in line, "the line names the development switch"


@pytest.mark.parametrize("name", ["SECRET_KEY", "API_KEY_PEPPER", "ALLOWED_HOSTS"])
def test_production_does_not_start_with_a_blank_required_setting(base_env, name):
    assert_stops_with_one_line(check({**base_env, **PRODUCTION, name: "   "}), name)


def test_production_starts_with_every_required_setting(base_env):
    completed = check({**base_env, **PRODUCTION})
    assert completed.returncode == 0, completed.stderr
    assert "WARNING" not in completed.stderr
    assert "Configuration error" not in completed.stderr


@pytest.mark.parametrize("debug", ["1", "True", "on"])
def test_debug_starts_without_secrets_and_a_one_off_command_does_not_warn(base_env, debug):
    completed = check(base_env, DEBUG=debug)
    assert completed.returncode == 0, completed.stderr
    assert "WARNING" not in completed.stderr, completed.stderr
    assert "Traceback" not in completed.stderr


def development_warnings(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("WARNING: DEBUG is on")]


def test_the_development_server_warns_once_about_development_secrets(base_env):
    """runserver's reloader is two processes (a watcher and the server it restarts); one line between them."""
    process = subprocess.Popen([sys.executable, "manage.py", "runserver", f"127.0.0.1:{free_port()}"], cwd=REPO,
                               env={**base_env, "DEBUG": "1", "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    output = []
    try:
        for line in process.stdout:
            output.append(line)
            if "Quit the server" in line:
                break
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
        output.append(process.stdout.read())
    text = "".join(output)
    assert "Quit the server" in text, text
    [warning] = development_warnings(text)
    assert "SECRET_KEY and API_KEY_PEPPER are not set" in warning


def test_debug_uses_development_values_and_local_hosts(base_env):
    values = read_settings(base_env, "DEBUG", "SECRET_KEY", "API_KEY_PEPPER", "ALLOWED_HOSTS", DEBUG="1")
    assert values["DEBUG"] is True
    assert values["SECRET_KEY"] and values["API_KEY_PEPPER"]
    assert {"localhost", "127.0.0.1"} <= set(values["ALLOWED_HOSTS"])


def test_production_reads_the_secrets_and_hosts_it_is_given(base_env):
    values = read_settings({**base_env, **PRODUCTION}, "DEBUG", "SECRET_KEY", "API_KEY_PEPPER", "ALLOWED_HOSTS",
                           ALLOWED_HOSTS="a.example.com, b.example.com")
    assert values == {"DEBUG": False, "SECRET_KEY": PRODUCTION["SECRET_KEY"],
                      "API_KEY_PEPPER": PRODUCTION["API_KEY_PEPPER"],
                      "ALLOWED_HOSTS": ["a.example.com", "b.example.com"]}


# --- values that cannot be used ------------------------------------------------------------


@pytest.mark.parametrize(
    "name, value",
    [
        ("SANDBOX_BACKEND", "nope"),
        ("GIT_HOST", "nope"),
        ("SNAPSHOT_TTL", "abc"),
        ("SNAPSHOT_TTL", "0"),
        ("SNAPSHOT_TTL", "-1d"),
        ("DEBUG", "maybe"),
        ("DATABASE_URL", "nope://somewhere/db"),
        ("SANDBOX_COMMAND_TIMEOUT", "soon"),
        ("SANDBOX_COMMAND_TIMEOUT", "0"),
        ("SETUP_RUN_TIMEOUT", "5"),
        ("API_MAX_BODY_BYTES", "10"),
        ("QUEUE_WORKERS", "0"),
        ("LOG_FORMAT", "xml"),
        ("LOG_LEVEL", "loud"),
        ("SANDBOX_TEMPLATE_DIR", "/nonexistent/starter"),
        ("SANDBOX_FILE_MAX_BYTES", "1MB"),
        ("SANDBOX_FILE_MAX_BYTES", "0"),
        ("THROTTLE_RENEW_RATE", "often"),
        ("API_KEY_DEFAULT_SCOPES", "sandboxes:read sandboxes:everything"),
    ],
)
def test_a_value_that_cannot_be_used_stops_start_up_with_one_line_naming_it(base_env, name, value):
    line = assert_stops_with_one_line(check({**base_env, **PRODUCTION}, **{name: value}), name)
    assert value.strip() in line or name == "DATABASE_URL" and "nope" in line


def test_an_unknown_backend_is_refused_with_the_choices(base_env):
    line = assert_stops_with_one_line(check({**base_env, **PRODUCTION}, SANDBOX_BACKEND="nope"), "SANDBOX_BACKEND")
    assert "local" in line and "'nope'" in line


def test_an_unknown_git_host_is_refused_with_the_choices(base_env):
    line = assert_stops_with_one_line(check({**base_env, **PRODUCTION}, GIT_HOST="nope"), "GIT_HOST")
    assert "local" in line and "'nope'" in line


def test_backend_names_are_read_case_insensitively(base_env):
    values = read_settings({**base_env, **PRODUCTION}, "SANDBOX_BACKEND", "GIT_HOST",
                           SANDBOX_BACKEND=" Local ", GIT_HOST="LOCAL")
    assert values == {"SANDBOX_BACKEND": "local", "GIT_HOST": "local"}


# --- derived values -----------------------------------------------------------------------


def test_new_keys_read_and_set_up_by_default_and_api_key_default_scopes_says_otherwise(base_env):
    assert read_settings({**base_env, **PRODUCTION}, "API_KEY_DEFAULT_SCOPES") == {
        "API_KEY_DEFAULT_SCOPES": ["sandboxes:read", "sandboxes:setup"]}
    values = read_settings({**base_env, **PRODUCTION}, "API_KEY_DEFAULT_SCOPES",
                           API_KEY_DEFAULT_SCOPES="audit:read, sandboxes:read audit:read")
    assert values == {"API_KEY_DEFAULT_SCOPES": ["sandboxes:read", "audit:read"]}



def test_snapshot_ttl_is_seven_days_by_default(base_env):
    values = read_settings({**base_env, **PRODUCTION}, "SNAPSHOT_TTL")
    assert values["SNAPSHOT_TTL"] == str(timedelta(days=7))


def test_file_reads_are_limited_to_one_mebibyte_unless_told_otherwise(base_env):
    default = read_settings({**base_env, **PRODUCTION}, "SANDBOX_FILE_MAX_BYTES")
    given = read_settings({**base_env, **PRODUCTION}, "SANDBOX_FILE_MAX_BYTES", SANDBOX_FILE_MAX_BYTES="4096")
    assert (default["SANDBOX_FILE_MAX_BYTES"], given["SANDBOX_FILE_MAX_BYTES"]) == (1024 * 1024, 4096)


def test_snapshot_ttl_reads_a_duration_with_a_unit(base_env):
    values = read_settings({**base_env, **PRODUCTION}, "SNAPSHOT_TTL", SNAPSHOT_TTL="12h")
    assert values["SNAPSHOT_TTL"] == str(timedelta(hours=12))


def test_without_database_url_the_database_is_an_sqlite_file_under_var_dir(base_env, tmp_path):
    values = read_settings({**base_env, **PRODUCTION}, "DATABASES")
    database = values["DATABASES"]["default"]
    assert database["ENGINE"] == "config.sqlite"  # Django's SQLite backend, see config/sqlite/base.py
    assert Path(database["NAME"]) == tmp_path / "var" / "db.sqlite3"
    assert (tmp_path / "var").is_dir(), "the folder of the SQLite file is made at start-up"


def test_database_url_of_postgres_selects_postgresql(base_env):
    values = read_settings({**base_env, **PRODUCTION}, "DATABASES",
                           DATABASE_URL="postgres://sandboxes:pw@db.internal:5433/sandboxes")
    database = values["DATABASES"]["default"]
    assert database["ENGINE"] == "django.db.backends.postgresql"
    assert (database["HOST"], database["PORT"], database["NAME"], database["USER"]) == (
        "db.internal", 5433, "sandboxes", "sandboxes")
    assert database["CONN_HEALTH_CHECKS"] is True


def test_postgresql_prepares_repeated_statements_unless_told_not_to(base_env):
    postgres = {**base_env, **PRODUCTION, "DATABASE_URL": "postgres://sandboxes@db.internal/sandboxes"}

    options = read_settings(postgres, "DATABASES")["DATABASES"]["default"]["OPTIONS"]
    assert (options["server_side_binding"], options["prepare_threshold"]) == (True, 5)

    settings = read_settings(postgres, "DATABASES", DATABASE_PREPARED_STATEMENTS="0")
    options = settings["DATABASES"]["default"]["OPTIONS"]
    assert "server_side_binding" not in options and "prepare_threshold" not in options


def test_with_redis_url_the_queue_uses_the_redis_broker(base_env):
    values = read_settings({**base_env, **PRODUCTION}, "Q_CLUSTER", REDIS_URL="redis://127.0.0.1:6379/3")
    cluster = values["Q_CLUSTER"]
    assert cluster["redis"] == "redis://127.0.0.1:6379/3"
    assert "orm" not in cluster


def test_without_redis_url_the_queue_uses_the_orm_broker_on_the_default_database(base_env):
    cluster = read_settings({**base_env, **PRODUCTION}, "Q_CLUSTER")["Q_CLUSTER"]
    assert cluster["orm"] == "default"
    assert "redis" not in cluster


def test_the_queue_retries_a_task_only_after_its_timeout(base_env):
    cluster = read_settings({**base_env, **PRODUCTION}, "Q_CLUSTER", SETUP_RUN_TIMEOUT="120")["Q_CLUSTER"]
    assert cluster["timeout"] == 120
    assert cluster["retry"] > cluster["timeout"]


def test_queue_name_names_the_cluster(base_env):
    cluster = read_settings({**base_env, **PRODUCTION}, "Q_CLUSTER", QUEUE_NAME="sandboxes-eu")["Q_CLUSTER"]
    assert cluster["name"] == "sandboxes-eu"


def test_the_scheduled_reconcile_fixes_only_when_reconcile_autofix_is_set(base_env):
    env = {name: value for name, value in {**base_env, **PRODUCTION}.items() if name != "RECONCILE_AUTOFIX"}
    assert read_settings(env, "RECONCILE_AUTOFIX") == {"RECONCILE_AUTOFIX": False}
    assert read_settings(env, "RECONCILE_AUTOFIX", RECONCILE_AUTOFIX="1") == {"RECONCILE_AUTOFIX": True}
    assert_stops_with_one_line(check(env, RECONCILE_AUTOFIX="sometimes"), "RECONCILE_AUTOFIX")


def test_storage_folders_default_to_var_dir(base_env, tmp_path):
    values = read_settings({**base_env, **PRODUCTION}, "SANDBOX_ROOT", "GIT_ROOT", "STATIC_ROOT")
    var = tmp_path / "var"
    assert values == {"SANDBOX_ROOT": str(var / "sandboxes"), "GIT_ROOT": str(var / "git"),
                      "STATIC_ROOT": str(var / "static")}


# --- parse_duration -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("90", timedelta(seconds=90)),
        ("45s", timedelta(seconds=45)),
        ("15m", timedelta(minutes=15)),
        ("12h", timedelta(hours=12)),
        ("7d", timedelta(days=7)),
        ("2w", timedelta(weeks=2)),
        (" 12 h ", timedelta(hours=12)),
        ("007d", timedelta(days=7)),
    ],
)
def test_parse_duration_reads_seconds_or_a_number_with_a_unit(raw, expected):
    assert parse_duration(raw) == expected


@pytest.mark.parametrize("raw", ["", "   ", "abc", "0", "0d", "-5m", "1.5h", "12x", "12 hours", "h", "7D", None])
def test_parse_duration_refuses_anything_else_with_an_example(raw):
    with pytest.raises(ValueError, match="such as"):
        parse_duration(raw)


# --- the snapshot store -------------------------------------------------------------------

S3_STORE = {"SNAPSHOT_STORE": "s3", "SNAPSHOT_S3_BUCKET": "sandbox-snapshots", "SANDBOX_DEPLOYMENT_ID": "prod-eu"}


def test_the_store_is_local_by_default(base_env):
    values = read_settings({**base_env, **PRODUCTION}, "SNAPSHOT_STORE", "SNAPSHOT_S3")
    assert values == {"SNAPSHOT_STORE": "local", "SNAPSHOT_S3": None}


def test_an_unknown_store_is_refused_with_the_choices(base_env):
    line = assert_stops_with_one_line(check({**base_env, **PRODUCTION}, SNAPSHOT_STORE="disk"), "SNAPSHOT_STORE")
    assert "local, s3" in line and "'disk'" in line


def test_s3_needs_a_bucket(base_env):
    variables = {**S3_STORE, "SNAPSHOT_S3_BUCKET": ""}
    line = assert_stops_with_one_line(check({**base_env, **PRODUCTION}, **variables), "SNAPSHOT_STORE")
    assert line == "Configuration error: SNAPSHOT_STORE=s3 needs SNAPSHOT_S3_BUCKET, the bucket that holds the snapshots"


def test_s3_needs_a_deployment_id_to_mark_its_objects(base_env):
    variables = {**S3_STORE, "SANDBOX_DEPLOYMENT_ID": ""}
    line = assert_stops_with_one_line(check({**base_env, **PRODUCTION}, **variables), "SNAPSHOT_STORE")
    assert line.startswith("Configuration error: SNAPSHOT_STORE=s3 needs SANDBOX_DEPLOYMENT_ID, a name for this "
                           "deployment that no other deployment using the organization or bucket has")


def test_s3_reads_the_bucket_a_prefix_as_a_folder_retries_and_timeouts(base_env):
    values = read_settings({**base_env, **PRODUCTION}, "SNAPSHOT_STORE", "SNAPSHOT_S3", **S3_STORE,
                           SNAPSHOT_S3_PREFIX="/staging/sandboxes/", SNAPSHOT_S3_MAX_ATTEMPTS="3",
                           SNAPSHOT_S3_READ_TIMEOUT="30")
    assert values == {"SNAPSHOT_STORE": "s3", "SNAPSHOT_S3": {
        "bucket": "sandbox-snapshots", "prefix": "staging/sandboxes/", "max_attempts": 3,
        "connect_timeout": 5, "read_timeout": 30,
    }}


def test_retries_below_one_attempt_are_refused(base_env):
    assert_stops_with_one_line(check({**base_env, **PRODUCTION}, **S3_STORE, SNAPSHOT_S3_MAX_ATTEMPTS="0"),
                               "SNAPSHOT_S3_MAX_ATTEMPTS")
