"""`make run` from the checkout, as a user starts it: a real make, shell, runserver and qcluster.

Each test runs `make run PORT=<port>` in a process group of its own, with a
VAR_DIR of its own (a fresh SQLite database and local storage) and none of
the service's variables set, as in a fresh clone:

- it migrates, then serves on the port, and its worker runs setups; the web
  server and the worker warn once each about the development secrets;
  Ctrl-C (SIGINT to the group, as a terminal sends it) stops everything;
- against it, the shell blocks of the README and of docs/ that a reader
  types run as typed (only the port differs), one after another in the order
  the reader meets them, from a folder laid out as the checkout; each is
  checked by what it prints (see `Reader`);
- a port that is taken stops it at once with one line, before anything starts;
- a migration that fails (a database it cannot reach) starts neither the web
  server nor the worker.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.doc_blocks import marked_block
from tests.processes import free_port

REPO = Path(__file__).resolve().parents[1]
STAND_IN_DNS = REPO / "tests" / "stand_in_dns"
STARTUP_TIMEOUT = 120
BLOCK_TIMEOUT = 120
# What a fresh clone's shell does not have: the service's variables, and a
# make that would run as a sub-make of `make test`.
NOT_INHERITED = ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "API_KEY_PEPPER", "DEBUG", "ALLOWED_HOSTS",
                 "DJANGO_SETTINGS_MODULE", "VAR_DIR", "PORT", "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "LOG_FORMAT",
                 "LOG_LEVEL", "TRUSTED_PROXY_COUNT")
NOT_INHERITED_PREFIXES = ("SANDBOX_", "GIT_", "GITHUB_", "QUEUE_", "SETUP_RUN_", "SNAPSHOT_")

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def fresh_clone_environment(var_dir: Path, **variables: str) -> dict:
    env = {name: value for name, value in os.environ.items()
           if name not in NOT_INHERITED and not name.startswith(NOT_INHERITED_PREFIXES)}
    env.update(VAR_DIR=str(var_dir), PYTHONUNBUFFERED="1", **variables)
    return env


def group_is_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def group_members(pgid: int) -> str:
    listing = subprocess.run(["ps", "-o", "pid,pgid,args", "-g", str(pgid)], capture_output=True, text=True)
    return listing.stdout


@dataclass
class MakeRun:
    process: subprocess.Popen
    log: Path
    port: int

    @classmethod
    def start(cls, port: int, env: dict, log: Path) -> "MakeRun":
        with log.open("wb") as sink:
            process = subprocess.Popen(["make", "run", f"PORT={port}"], cwd=REPO, env=env, stdout=sink,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        return cls(process=process, log=log, port=port)

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def report(self, message: str) -> str:
        return f"{message}\n----- make run -----\n{self.output[-8000:]}"

    def wait_for_exit(self, timeout: float = 60) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(self.report(f"make run did not exit within {timeout:g} s"))

    def get(self, path: str, *, key: str = "") -> tuple[int, dict]:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", headers={"x-api-key": key})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")

    def wait_until_healthy(self):
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(self.report(f"make run exited with {self.process.returncode} before it answered"))
            try:
                status, _body = self.get("/healthz")
            except (OSError, ValueError):
                status = None
            if status == 200:
                return
            time.sleep(0.5)
        pytest.fail(self.report(f"/healthz did not answer 200 within {STARTUP_TIMEOUT} s"))

    def interrupt(self):
        """Ctrl-C: SIGINT to the whole foreground group, as the terminal sends it."""
        os.killpg(self.process.pid, signal.SIGINT)

    def kill(self):
        if not group_is_gone(self.process.pid):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)


@pytest.fixture
def checkout(tmp_path) -> Path:
    """Where the reader types: .venv and manage.py of this checkout, and var/, the server's VAR_DIR."""
    folder = tmp_path / "checkout"
    folder.mkdir()
    for name in (".venv", "manage.py"):
        (folder / name).symlink_to(REPO / name)
    return folder


@pytest.fixture
def var_dir(checkout) -> Path:
    return checkout / "var"


@pytest.fixture
def started(tmp_path, var_dir):
    runs = []

    def start(port: int, **variables: str) -> MakeRun:
        run = MakeRun.start(port, fresh_clone_environment(var_dir, **variables), tmp_path / f"make-run-{port}.log")
        runs.append(run)
        return run

    yield start
    for run in runs:
        run.kill()


def json_documents(output: str) -> list:
    """The JSON objects printed, in order: curl prints no newline after a body, so several may share a
    line, and a command's report may span several."""
    decoder, documents, position = json.JSONDecoder(), [], 0
    while position < len(output):
        if output.startswith("{", position):
            document, position = decoder.raw_decode(output, position)
            documents.append(document)
        else:
            newline = output.find("\n", position)
            position = len(output) if newline == -1 else newline + 1
    return documents


@dataclass
class Reader:
    """A reader at a terminal in the checkout, typing the docs' blocks one after another against `make run`.

    Each block runs in its own bash (-e: a command that fails stops it) with the
    text of the page, only the port changed. The variables a block sets
    (ACCOUNT, KEY, …) are in the environment of the blocks that follow, as
    they would be in the reader's shell. Python finds tests/stand_in_dns
    first: a test machine may have no DNS, and the webhook URLs the docs show
    name hooks.example.com.
    """

    server: MakeRun
    cwd: Path
    env: dict
    variables: dict = field(default_factory=dict)

    def types(self, name: str) -> str:
        """Runs the block marked `name`; its stdout."""
        block = marked_block(name)
        assigned = dict.fromkeys(re.findall(r"^(?:export )?([A-Za-z_]\w*)=", block.text, re.MULTILINE))
        # After the block, what it assigned goes to the file named by $0, NUL-separated.
        keep = "".join(f'printf "%s\\0" "{variable}=${{{variable}}}" >>"$0"\n' for variable in assigned)
        kept = self.cwd.parent / f"variables-{name}"
        try:
            done = subprocess.run(["bash", "-e", "-c", block.with_port(self.server.port) + keep, str(kept)],
                                  cwd=self.cwd, env={**self.env, **self.variables}, capture_output=True,
                                  text=True, timeout=BLOCK_TIMEOUT)
        except subprocess.TimeoutExpired as expired:
            pytest.fail(self.server.report(f"{block.where} ({name}) did not finish within {BLOCK_TIMEOUT} s:\n"
                                           f"{expired.stdout}\n{expired.stderr}"))
        if done.returncode != 0:
            pytest.fail(self.server.report(f"{block.where} ({name}) exited with {done.returncode}:\n"
                                           f"{done.stdout}\n{done.stderr}"))
        if assigned:
            self.variables.update(entry.split("=", 1) for entry in kept.read_text().split("\0") if entry)
        return done.stdout

    def types_json(self, name: str) -> list:
        """Runs the block marked `name`; the JSON objects it printed."""
        return json_documents(self.types(name))


def walk_through(reader: Reader):
    """README: an account and its key, a setup followed to its end, the repository cloned, the delete."""
    printed = reader.types("walk-through")
    polled, deleted = json_documents(printed)
    account, key, run_id = (reader.variables[name] for name in ("ACCOUNT", "KEY", "RUN"))
    assert key.startswith("sbx_") and run_id.startswith("run_"), reader.variables
    [completed] = polled["runs"]
    assert (completed["id"], completed["account_id"], completed["status"]) == (run_id, account, "COMPLETED"), polled
    assert completed["output"]["github_repo"].endswith(f"/var/git/alice-example-{account}.git"), completed
    assert {".gitignore", "README.md", "workspace"} <= set(printed.splitlines()), printed  # the clone's ls -A
    assert deleted["deleted_snapshot"]["snapshot_id"] == completed["output"]["snapshot_id"], deleted


def live_sandbox(reader: Reader):
    """README: start, a command, an upload, stop."""
    started_sandbox, command, upload, stopped = reader.types_json("live-sandbox-example")
    assert started_sandbox["sandboxes"][0]["sandboxStatus"] == "running", started_sandbox
    assert command["exitCode"] == 0 and "README.md" in command["stdout"].split(), command
    assert [entry["path"] for entry in upload["uploaded"]] == ["hello.py"], upload
    assert stopped["snapshot"]["snapshot_id"].startswith("snap_"), stopped


def organization(reader: Reader):
    """README: Alice, an owner of Acme, sets up its member Bob's sandbox and follows the run to its end."""
    polled, recent = reader.types_json("organization-example")
    bob, bob_run = reader.variables["BOB"], reader.variables["BOB_RUN"]
    assert bob != reader.variables["ACCOUNT"]
    [completed] = polled["runs"]
    assert (completed["id"], completed["account_id"], completed["status"]) == (bob_run, bob, "COMPLETED"), polled
    assert completed["output"]["snapshot_id"].startswith("snap_"), completed
    assert [(listed["id"], listed["account_id"]) for listed in recent["runs"]] == [(bob_run, bob)], recent


def api_page(reader: Reader):
    """docs/api.md: the sandbox's state, a file, a renewal; a retried setup; key scopes; the audit trail."""
    account, key = reader.variables["ACCOUNT"], reader.variables["KEY"]
    set_up, state, read, renewed = reader.types_json("sandbox-state")
    assert set_up["runId"].startswith("run_"), set_up
    assert (state["state"], state["last_run"]["id"], state["last_run"]["status"]) == (
        "ready", set_up["runId"], "COMPLETED"), state
    assert state["sandbox"] is None, state  # the README's live sandbox was stopped
    # The README's live example uploaded hello.py; this setup starts from the repository it was committed to.
    assert {"hello.py", "workspace", "workspace/README.md"} <= {entry["path"] for entry in state["filetree"]}, state
    assert (read["path"], read["encoding"]) == ("workspace/README.md", "utf-8") and read["content"], read
    assert renewed["snapshot"]["snapshot_id"] == state["snapshot_id"], renewed
    assert renewed["snapshot"]["expires_at"] > state["expires_at"], (renewed, state)

    printed = reader.types("idempotency-key")
    first, replayed = json_documents(printed)
    assert first == replayed and first["runId"].startswith("run_"), printed
    assert "\nIdempotent-Replayed: true" in printed.replace("\r\n", "\n"), printed

    printed = reader.types("key-scopes")
    laptop, ci = key[:12], reader.variables["CI_KEY"][:12]
    assert printed.splitlines() == [
        f"{laptop}… (laptop): sandboxes:read sandboxes:setup sandboxes:exec sandboxes:delete → "
        "sandboxes:read sandboxes:setup sandboxes:exec sandboxes:delete audit:read",
        "1 of 1 key(s) changed.",
        f"{ci}… (ci): sandboxes:read sandboxes:setup → sandboxes:read",
        "1 of 1 key(s) changed.",
    ], printed

    [trail] = reader.types_json("audit-trail")
    [deleted] = trail["events"]  # the walk-through's delete
    assert (deleted["action"], deleted["account_id"], trail["next"]) == ("sandbox.deleted", account, None), trail
    assert deleted["actor"] == {"kind": "key", "name": f"{key[:12]}…"}, trail


def operations_page(reader: Reader):
    """docs/operations.md: cleanup_sandboxes, a dry run, a run that would ask, and acme's members in JSON."""
    printed = reader.types("bulk-cleanup")
    [report] = json_documents(printed)
    assert printed.splitlines()[:3] == [
        "0 sandbox(es) selected: sandboxes expired",
        "Dry run: 0 sandbox(es) would be deleted (sandboxes expired); nothing was deleted",
        "0 sandbox(es) selected: sandboxes expired",
    ], printed
    assert printed.splitlines()[3].startswith("Cleanup of sandboxes expired: selected 0, deleted 0, failed 0,"), printed
    assert report["rule"]["organization_ids"] == [reader.variables["ORG"]], report
    assert (report["ok"], report["selected"], report["failed"], report["failures"]) == (True, 0, 0, []), report


def webhooks_page(reader: Reader):
    """docs/webhooks.md: an endpoint of Alice's account and one of acme, listed; acme's rotated and disabled."""
    printed = reader.types("webhook-commands")
    acme_secret, alices, acmes, rotated, disabled = printed.splitlines()
    hook = reader.variables["HOOK"]
    assert reader.variables["SECRET"].startswith("whsec_") and acme_secret.startswith("whsec_"), printed
    assert alices.split("\t")[1:] == ["active", f"account {reader.variables['ACCOUNT']}", "all",
                                      "https://hooks.example.com/sandboxes"], printed
    assert acmes.split("\t") == [hook, "active", "organization acme", "run.completed,run.failed",
                                 "https://hooks.example.com/acme"], printed
    assert rotated.startswith("whsec_") and rotated != acme_secret, printed
    assert disabled == f"Disabled webhook endpoint {hook} (https://hooks.example.com/acme)", printed


@pytest.mark.skipif(shutil.which("curl") is None, reason="the docs' blocks use curl")
def test_make_run_migrates_serves_the_docs_blocks_and_stops_on_ctrl_c(started, checkout, var_dir):
    port = free_port()
    run = started(port)
    run.wait_until_healthy()
    assert (var_dir / "db.sqlite3").is_file()

    reader = Reader(server=run, cwd=checkout, env=fresh_clone_environment(var_dir, PYTHONPATH=str(STAND_IN_DNS)))
    walk_through(reader)
    live_sandbox(reader)
    organization(reader)
    api_page(reader)
    operations_page(reader)
    webhooks_page(reader)

    run.interrupt()
    run.wait_for_exit(timeout=60)
    deadline = time.monotonic() + 10
    while not group_is_gone(run.process.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert group_is_gone(run.process.pid), run.report(f"left running after Ctrl-C:\n{group_members(run.process.pid)}")

    # One warning from the worker and one from the web server (none from migrate, none per secret).
    warnings = [line for line in run.output.splitlines() if "not set" in line]
    assert len(warnings) == 2, run.report("expected one development warning from each server")
    assert all(line.startswith("WARNING: DEBUG is on and SECRET_KEY and API_KEY_PEPPER") for line in warnings)


def test_a_taken_port_stops_make_run_with_one_line_before_anything_starts(started, var_dir):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        run = started(port)
        returncode = run.wait_for_exit()

    assert returncode != 0
    # make adds its own "make: *** [Makefile:…: run] Error 1" to any failing target.
    lines = [line for line in run.output.splitlines() if line.strip() and not line.startswith("make: ***")]
    assert lines == [f"make run: port {port} on 127.0.0.1 is in use by another program; choose another, "
                     f"e.g. make run PORT={port + 10}"], run.output
    assert not (var_dir / "db.sqlite3").exists(), "migrations ran although the port was taken"
    assert group_is_gone(run.process.pid), group_members(run.process.pid)


def test_a_port_that_is_not_a_number_is_refused_in_one_line(started):
    run = started("web")
    assert run.wait_for_exit() != 0
    lines = [line for line in run.output.splitlines() if line.strip() and not line.startswith("make: ***")]
    assert lines == ["make run: PORT must be a number from 1 to 65535, not 'web'"], run.output


def test_a_failed_migration_starts_neither_the_web_server_nor_the_worker(started):
    port = free_port()
    # Nothing listens on port 9 of 127.0.0.1: the connection is refused at once.
    run = started(port, DATABASE_URL="postgres://postgres@127.0.0.1:9/unreachable")
    returncode = run.wait_for_exit(timeout=120)

    assert returncode != 0
    output = run.output
    # Each server says it uses development secrets as it starts; migrate does not.
    assert "WARNING: DEBUG is on" not in output, output
    assert "Starting development server" not in output, output
    assert output.splitlines()[-2] == ("make run: the migrations failed (see above); neither the web server nor "
                                       "the worker was started"), output
    assert group_is_gone(run.process.pid), group_members(run.process.pid)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
