"""Live sandboxes over HTTP: gunicorn and a qcluster with SANDBOX_BACKEND=docker, on the machine's Docker engine.

The service runs as tests/reliability/test_docker_runtime.py runs it (its
`docker_runtime` fixture: the test image, a deployment of the test's own,
PostgreSQL and the local Redis). What a test looks at is what a client gets
over HTTP, what the engine lists under the deployment's label, the
repository on the local git host (GIT_ROOT, the test's own) and, once, the
processes inside a sandbox's container (the SDK's exec_run).

- A sandbox starts (sbx_ id, running, its idle timeout in ms); a command
  answers its exit code and output; a command past its timeout_ms is killed
  with everything it started (no process of it is left in the container);
  output past SANDBOX_OUTPUT_MAX_BYTES (1000 here) is cut and flagged; a
  background command answers 202 and is read to its end; an upload is in the
  repository and in the next snapshot; a sandbox stopped and started again
  has the files; DELETE removes a running sandbox's container.
- The idle sweep (sandboxes.tasks.sweep_live_sandboxes, run by `manage.py
  shell` with SANDBOX_IDLE_TIMEOUT=2) stops an idle sandbox with a snapshot.
- The web server killed (SIGKILL) while a command runs: started again, it
  answers for the same sandbox, which runs commands as before. The worker
  killed while it watches a background command: the command is still read
  to its end, and after a stop nothing of the deployment is on the engine.
"""

import base64
import subprocess
import threading
import time
from pathlib import Path

import pytest

from sandboxes.models import LiveSandbox, SandboxCommand
from sandboxes.providers.docker_sandbox import ACCOUNT_LABEL, DEPLOYMENT_LABEL, HOLDER_LABEL
from tests.conftest import make_person, requires_postgres
from tests.processes import gunicorn_command, manage, qcluster_command, wait_until_healthy
from tests.reliability.test_docker_runtime import docker_runtime  # noqa: F401 (the fixture)
from tests.reliability.test_worker_death import wait_for

pytestmark = [requires_postgres, pytest.mark.postgres, pytest.mark.reliability, pytest.mark.docker]

OUTPUT_MAX_BYTES = 1000
SWEEP = "from sandboxes.tasks import sweep_live_sandboxes; print(sweep_live_sandboxes())"


class Client:
    """One account's calls to the live sandbox endpoints, each asserted to answer what it should."""

    def __init__(self, service, key: str):
        self.service, self.key = service, key

    def call(self, method: str, path: str, body=None, *, expect: int = 200, timeout: float = 60) -> dict:
        status, answer = self.service.call(method, path, key=self.key, body=body, timeout=timeout)
        assert status == expect, self.service.report(f"{method} {path} {body} answered {status} {answer}")
        return answer

    def start(self) -> dict:
        [sandbox] = self.call("POST", "/api/sandboxes", {})["sandboxes"]
        return sandbox

    def run(self, command: str, *args: str, expect: int = 200, **fields) -> dict:
        return self.call("POST", "/api/sandboxes/commands", {"command": command, "args": list(args), **fields},
                         expect=expect)

    def sh(self, script: str, **fields) -> dict:
        return self.run("sh", "-c", script, **fields)

    def command(self, command_id: str) -> dict:
        return self.call("GET", f"/api/sandboxes/commands?commandId={command_id}")

    def ended(self, command_id: str) -> dict | None:
        read = self.command(command_id)
        return read if read["commandStatus"] != "running" else None

    def until_ended(self, command_id: str, timeout: float = 30) -> dict:
        return wait_for(self.service, f"command {command_id} ended", timeout, lambda: self.ended(command_id))

    def state(self) -> dict:
        return self.call("GET", "/api/sandboxes")

    def stop(self) -> dict:
        return self.call("POST", "/api/sandboxes/stop", {})["snapshot"]


def containers_of(runtime, account_id) -> list:
    return runtime.engine.containers.list(all=True, sparse=True, filters={"label": [
        f"{DEPLOYMENT_LABEL}={runtime.deployment}", f"{ACCOUNT_LABEL}={account_id}"]})


def processes_named(container, name: str) -> list[str]:
    """The pids of the container's processes whose /proc/PID/comm is `name` (the SDK's exec_run, as root)."""
    script = f'for f in /proc/[0-9]*/comm; do [ "$(cat "$f" 2>/dev/null)" = "{name}" ] && echo "$f"; done; true'
    exit_code, output = container.exec_run(["sh", "-c", script], user="0:0")
    assert exit_code == 0, output
    return output.decode().split()


def clone(repository_url: str, destination: Path) -> Path:
    subprocess.run(["git", "clone", "--quiet", repository_url, str(destination)], check=True, capture_output=True,
                   timeout=60)
    return destination


def test_a_sandbox_runs_commands_takes_files_stops_with_a_snapshot_and_starts_again_with_them(
    docker_runtime, tmp_path  # noqa: F811
):
    service = docker_runtime.start(SANDBOX_OUTPUT_MAX_BYTES=str(OUTPUT_MAX_BYTES))
    person = make_person("live")
    client = Client(service, person.key)

    # Start: running, an sbx_ id, its idle timeout (30 min) in milliseconds; asking again answers the same one.
    sandbox = client.start()
    assert sandbox["sandboxId"].startswith("sbx_") and sandbox["sandboxStatus"] == "running", sandbox
    assert 29 * 60_000 < sandbox["timeout"] <= 30 * 60_000, sandbox
    assert client.start()["sandboxId"] == sandbox["sandboxId"]
    [container] = containers_of(docker_runtime, person.account.pk)
    assert container.attrs["Labels"][HOLDER_LABEL] == sandbox["sandboxId"], container.attrs["Labels"]

    # A command's exit status and output.
    ran = client.sh("echo hi; echo oops >&2; exit 3")
    assert ran["commandId"].startswith("cmd_") and ran["commandStatus"] == "finished", ran
    assert (ran["exitCode"], ran["stdout"], ran["stderr"], ran["timedOut"]) == (3, "hi\n", "oops\n", False), ran
    assert (ran["stdoutTruncated"], ran["stderrTruncated"]) == (False, False), ran

    # Past its timeout: killed with what it started. busybox runs as the applet its name
    # starts with "busybox": the copy is busybox, whose processes are all named busybox-spinner.
    client.run("cp", "/bin/busybox", "busybox-spinner")
    started = time.monotonic()
    timed_out = client.run("./busybox-spinner", "sh", "-c",
                           "./busybox-spinner sleep 100 & ./busybox-spinner sleep 100", timeout_ms=1000)
    took = time.monotonic() - started
    assert (timed_out["timedOut"], timed_out["exitCode"], timed_out["commandStatus"]) == (
        True, None, "timed_out"), timed_out
    assert took < 15, f"a command with a 1 s limit answered after {took:.1f} s"
    assert processes_named(docker_runtime.engine.containers.get(container.id), "busybox-spinner") == [], \
        "a process of the timed-out command outlived it"

    # Output past SANDBOX_OUTPUT_MAX_BYTES: cut at the cap and flagged, each stream on its own.
    capped = client.sh("yes | head -c 5000; yes e | head -c 10 >&2")
    assert capped["exitCode"] == 0 and capped["stdout"] == "y\n" * (OUTPUT_MAX_BYTES // 2), capped["stdout"][-20:]
    assert (capped["stdoutTruncated"], capped["stderr"], capped["stderrTruncated"]) == (True, "e\n" * 5, False)

    # A background command: 202 at once, then read until it has ended.
    started = time.monotonic()
    background = client.sh("sleep 2; echo done", background=True, expect=202)
    assert time.monotonic() - started < 2, "the background command was waited for"
    assert (background["commandStatus"], background["exitCode"]) == ("running", None), background
    assert client.command(background["commandId"])["commandStatus"] == "running"
    ended = client.until_ended(background["commandId"])
    assert (ended["commandStatus"], ended["exitCode"], ended["stdout"], ended["timedOut"]) == (
        "finished", 0, "done\n", False), ended
    assert ended["durationMs"] >= 1900, ended

    # An upload: in the sandbox, and committed to the account's repository.
    text, binary = "uploaded through the API\n", bytes(range(256))
    uploaded = client.call("POST", "/api/sandboxes/files", {"files": [
        {"path": "notes/hello.txt", "content": text},
        {"path": "data.bin", "content": base64.b64encode(binary).decode(), "encoding": "base64"},
    ]})["uploaded"]
    assert [file["path"] for file in uploaded] == ["notes/hello.txt", "data.bin"], uploaded
    assert client.run("cat", "notes/hello.txt")["stdout"] == text
    assert client.sh("wc -c < data.bin")["stdout"].strip() == "256"

    snapshot = client.stop()
    assert client.state()["sandbox"] is None and containers_of(docker_runtime, person.account.pk) == [], \
        service.report("the stopped sandbox's container is still there")
    assert snapshot["github_repo"].startswith("file://"), snapshot
    checkout = clone(snapshot["github_repo"], tmp_path / "checkout")
    assert (checkout / "notes" / "hello.txt").read_text() == text
    assert (checkout / "data.bin").read_bytes() == binary
    blobs = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD:notes/hello.txt", "HEAD:data.bin"],
                           check=True, capture_output=True, text=True).stdout.split()
    assert blobs == [file["sha"] for file in uploaded], (blobs, uploaded)
    log = subprocess.run(["git", "-C", str(checkout), "log", "--format=%s"], check=True, capture_output=True,
                         text=True).stdout.splitlines()
    assert log[0] == f"Snapshot {snapshot['snapshot_id']} of sandbox {sandbox['sandboxId']}", log
    assert "Upload files via API" in log, log

    # The next snapshot holds the files (and no command's leftovers of /tmp).
    read = client.call("GET", "/api/sandboxes/file?path=notes/hello.txt")
    assert (read["content"], read["encoding"]) == (text, "utf-8"), read
    read = client.call("GET", "/api/sandboxes/file?path=data.bin")
    assert (base64.b64decode(read["content"]), read["encoding"]) == (binary, "base64"), read
    state = client.state()
    assert state["snapshot_id"] == snapshot["snapshot_id"] and state["state"] == "ready", state

    # Started again, from that snapshot: the files are there.
    again = client.start()
    assert again["sandboxId"] != sandbox["sandboxId"] and again["sandboxStatus"] == "running", again
    assert client.run("cat", "notes/hello.txt")["stdout"] == text
    assert client.sh("wc -c < data.bin")["stdout"].strip() == "256"

    # DELETE removes the running sandbox: no container, no volume.
    deleted = client.call("DELETE", "/api/sandboxes", {})
    assert deleted["deleted_snapshot"]["snapshot_id"] == snapshot["snapshot_id"], deleted
    assert client.state()["sandbox"] is None
    assert docker_runtime.left() == [], service.report("DELETE left the running sandbox's container or volume")
    assert LiveSandbox.objects.get(pk=again["sandboxId"]).stop_reason == LiveSandbox.StopReason.DELETED
    client.call("POST", "/api/sandboxes/commands", {"command": "true"}, expect=409)


def test_the_idle_sweep_stops_an_idle_sandbox_with_a_snapshot(docker_runtime):  # noqa: F811
    service = docker_runtime.start()
    person = make_person("idle")
    client = Client(service, person.key)
    sandbox = client.start()
    client.sh("echo kept > kept.txt")

    # The service's idle timeout is 30 minutes (its scheduled sweep leaves the sandbox alone);
    # the sweep run here is told 2 s.
    time.sleep(2.5)
    swept = manage({**service.env, "SANDBOX_IDLE_TIMEOUT": "2"}, "shell", "-c", SWEEP).stdout
    assert "Stopped 1 idle sandbox(es) (0 could not be stopped)" in swept, swept

    state = client.state()
    assert state["sandbox"] is None and state["state"] == "ready" and state["snapshot_id"], state
    assert client.call("GET", "/api/sandboxes/file?path=kept.txt")["content"] == "kept\n"
    stopped = LiveSandbox.objects.get(pk=sandbox["sandboxId"])
    assert (stopped.status, stopped.stop_reason, stopped.snapshot_id) == (
        LiveSandbox.Status.STOPPED, LiveSandbox.StopReason.IDLE, state["snapshot_id"])
    assert docker_runtime.left() == [], service.report("the swept sandbox's container or volume is still there")


def test_a_killed_web_server_or_worker_loses_no_sandbox_and_leaks_nothing(docker_runtime):  # noqa: F811
    service = docker_runtime.start()
    port = int(service.base_url.rsplit(":", 1)[1])
    person = make_person("crash")
    client = Client(service, person.key)
    sandbox = client.start()

    # The web server killed (its master and workers, SIGKILL) while it waits for a command.
    cut_off = []

    def long_command():
        try:
            cut_off.append(service.call("POST", "/api/sandboxes/commands", key=person.key,
                                        body={"command": "sleep", "args": ["5"], "timeout_ms": 10_000}))
        except OSError as problem:  # the connection dies with the server
            cut_off.append(problem)

    caller = threading.Thread(target=long_command)
    caller.start()
    wait_for(service, "the command running", 10,
             lambda: SandboxCommand.objects.filter(sandbox_id=sandbox["sandboxId"], command="sleep").exists())
    [web] = [process for process in service.processes if process.name == "gunicorn"]
    web.kill()
    caller.join(timeout=30)
    assert cut_off and not isinstance(cut_off[0], tuple), f"the command answered although its server died: {cut_off}"

    web = service.start("gunicorn-again", gunicorn_command(port, workers=2))
    wait_until_healthy(service, web)
    state = client.state()
    assert state["sandbox"]["sandboxId"] == sandbox["sandboxId"], state
    assert state["sandbox"]["sandboxStatus"] == "running", state
    assert client.start()["sandboxId"] == sandbox["sandboxId"]
    ran = client.sh("echo still here")
    assert (ran["exitCode"], ran["stdout"]) == (0, "still here\n"), ran

    # The worker killed while it watches a background command: the command is read to its end
    # all the same, and a new worker takes over.
    background = client.sh("sleep 3; echo done", background=True, expect=202)
    time.sleep(0.5)  # the worker has taken the watch
    [worker] = [process for process in service.processes if process.name == "qcluster"]
    worker.kill()
    service.start("qcluster-again", qcluster_command())
    ended = client.until_ended(background["commandId"])
    assert (ended["commandStatus"], ended["exitCode"], ended["stdout"]) == ("finished", 0, "done\n"), ended

    # Killed again, with a background command still running: a stop ends it and leaves nothing.
    still_running = client.sh("sleep 30", background=True, expect=202)
    time.sleep(0.5)
    [worker] = [process for process in service.processes if process.name == "qcluster-again"]
    worker.kill()
    snapshot = client.stop()
    assert snapshot["snapshot_id"], snapshot
    assert client.command(still_running["commandId"])["commandStatus"] == "killed"
    assert docker_runtime.left() == [], service.report("a container or volume outlived the stop")
    left_running = SandboxCommand.objects.filter(sandbox_id=sandbox["sandboxId"],
                                                 status=SandboxCommand.Status.RUNNING)
    assert not left_running.exists(), list(left_running.values("pk", "command", "status"))
