"""Live sandboxes through the API: start, commands, uploads, stop, the idle sweep and delete.

Each test runs on the local backend (SANDBOX_LOCAL_EXEC=unsafe) and on the
docker backend with a real engine (skipped without one), with the local git
host for real. Webhook events are read from the outbox, where a change
records them.
"""

import base64
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from sandboxes import live
from sandboxes.models import LiveSandbox, SandboxCommand, Snapshot
from webhooks.models import Event
from webhooks.services import endpoint_create

from .local_git import repository_path

pytestmark = pytest.mark.django_db

START = "/api/sandboxes"
COMMANDS = "/api/sandboxes/commands"
FILES = "/api/sandboxes/files"
STOP = "/api/sandboxes/stop"


@pytest.fixture(params=["local", pytest.param("docker", marks=pytest.mark.docker)])
def backend_name(request, settings):
    settings.SANDBOX_LOCAL_EXEC = "unsafe"
    if request.param == "docker":
        request.getfixturevalue("docker_settings")
        settings.SANDBOX_DEPLOYMENT_ID = "live-tests"
    return request.param


@pytest.fixture
def started(api, people, backend_name):
    """Alice's live sandbox, started through the API; its sandboxId."""
    response = api.call("post", START, key=people.alice.key, body={})
    assert response.status_code == 200, response.json()
    yield response.json()["sandboxes"][0]["sandboxId"]
    for sandbox in LiveSandbox.objects.filter(status__in=LiveSandbox.LIVE_STATUSES):
        live.live_sandbox_stop(sandbox=sandbox, actor=live.Actor.command("tests"), reason="api", take_snapshot=False)


def run(api, person, command: str, *args: str, **fields):
    return api.call("post", COMMANDS, key=person.key, body={"command": command, "args": list(args), **fields})


def shell(api, person, script: str, **fields):
    return run(api, person, "sh", "-c", script, **fields)


def events_of(event_type: str) -> list[dict]:
    import json

    return [json.loads(event.body)["data"] for event in Event.objects.filter(type=event_type).order_by("created_at")]


@pytest.fixture
def webhooks(people, settings):
    """An endpoint of Alice's, so that her events are recorded (nothing is delivered in these tests)."""
    settings.WEBHOOK_ALLOW_HTTP = settings.WEBHOOK_ALLOW_PRIVATE = True
    endpoint_create(url="http://127.0.0.1:9/hooks", account=people.alice.account, actor=live.Actor.command("tests"))


# --- start ----------------------------------------------------------------------------------


def test_live_sandboxes_are_off_on_the_local_backend_unless_allowed(api, people, settings):
    settings.SANDBOX_LOCAL_EXEC = "off"

    response = api.call("post", START, key=people.alice.key, body={})

    assert response.status_code == 501
    assert "SANDBOX_LOCAL_EXEC=unsafe" in response.json()["error"]
    assert run(api, people.alice, "true").status_code == 501
    assert not LiveSandbox.objects.exists()


def test_a_start_answers_the_running_sandbox_and_asking_again_answers_the_same(api, people, started, settings):
    again = api.call("post", START, key=people.alice.key, body={}).json()

    [sandbox] = again["sandboxes"]
    assert sandbox["sandboxId"] == started
    assert sandbox["sandboxStatus"] == "running"
    assert 0 < sandbox["timeout"] <= settings.SANDBOX_IDLE_TIMEOUT.total_seconds() * 1000
    assert LiveSandbox.objects.filter(account=people.alice.account).count() == 1


def test_a_sandbox_without_a_snapshot_starts_from_the_starter_layout(api, people, started, settings):
    starter = (Path(settings.SANDBOX_TEMPLATE_DIR) / "README.md").read_text()

    body = run(api, people.alice, "cat", "README.md").json()

    assert (body["exitCode"], body["stdout"]) == (0, starter)
    assert LiveSandbox.objects.get(pk=started).started_from == ""


def test_a_sandbox_starts_from_the_accounts_snapshot(api, people, backend_name, sandbox_set_up):
    snapshot = sandbox_set_up(people.alice)

    api.call("post", START, key=people.alice.key, body={})

    sandbox = LiveSandbox.objects.get(account=people.alice.account)
    assert sandbox.started_from == snapshot.snapshot_id
    # The setup's repository, history included, is in the workspace.
    assert run(api, people.alice, "ls", "-a").json()["stdout"].split() >= [".", "..", ".git"]
    live.live_sandbox_stop(sandbox=sandbox, actor=live.Actor.command("tests"), reason="api", take_snapshot=False)


def test_get_sandboxes_shows_the_live_sandbox_beside_the_snapshot(api, people, started):
    body = api.sandbox(people.alice.key).json()

    assert body["sandbox"]["sandboxId"] == started
    assert body["sandbox"]["sandboxStatus"] == "running"


def test_a_start_is_recorded_and_sends_sandbox_started(api, people, backend_name, webhooks):
    sandbox_id = api.call("post", START, key=people.alice.key, body={}).json()["sandboxes"][0]["sandboxId"]

    [event] = events_of("sandbox.started")
    assert event["sandbox"]["sandboxId"] == sandbox_id
    live.live_sandbox_stop(sandbox=LiveSandbox.objects.get(pk=sandbox_id), actor=live.Actor.command("tests"),
                           reason="api", take_snapshot=False)


# --- commands --------------------------------------------------------------------------------


def test_a_command_answers_its_exit_code_and_output(api, people, started):
    response = shell(api, people.alice, "echo out; echo err >&2; exit 3")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "success" and body["commandId"].startswith("cmd_")
    assert (body["exitCode"], body["stdout"], body["stderr"]) == (3, "out\n", "err\n")
    assert (body["stdoutTruncated"], body["stderrTruncated"], body["timedOut"]) == (False, False, False)
    assert body["commandStatus"] == "finished" and body["durationMs"] >= 0


def test_arguments_reach_the_program_as_they_are_with_no_shell(api, people, started):
    body = run(api, people.alice, "echo", "$HOME", "a b", "'quoted'", ";", "rm -rf /").json()

    assert body["stdout"] == "$HOME a b 'quoted' ; rm -rf /\n"


def test_a_command_runs_in_its_cwd_with_its_env(api, people, started):
    shell(api, people.alice, "mkdir -p src/app")

    body = shell(api, people.alice, 'pwd; echo "$GREETING"', cwd="src/app", env={"GREETING": "hello"}).json()

    assert body["stdout"].splitlines() == [body["stdout"].splitlines()[0], "hello"]
    assert body["stdout"].splitlines()[0].endswith("/src/app")


def test_a_cwd_that_is_not_a_folder_of_the_workspace_is_a_400(api, people, started):
    response = run(api, people.alice, "true", cwd="no/such/folder")

    assert response.status_code == 400
    assert "not a folder of the sandbox's workspace" in response.json()["error"]


def test_a_command_past_its_timeout_is_killed_with_the_processes_it_started(api, people, started):
    started_at = time.monotonic()
    # A duration no other process on this host sleeps (the local backend's `ps` sees the host's).
    body = shell(api, people.alice, "sleep 6017 & sleep 6017", timeout_ms=1000).json()

    assert time.monotonic() - started_at < 10
    assert (body["timedOut"], body["exitCode"], body["commandStatus"]) == (True, None, "timed_out")
    # Nothing of it is left: only the sandbox's own processes.
    left = shell(api, people.alice, "ps -o args 2>/dev/null || ps").json()["stdout"]
    assert "sleep 6017" not in left.replace("timeout -s TERM -k 2 1 sh -c sleep 6017 & sleep 6017", "")


def test_output_past_the_cap_is_truncated_and_flagged(api, people, started, settings):
    settings.SANDBOX_OUTPUT_MAX_BYTES = 1000

    body = shell(api, people.alice, "head -c 5000 /dev/zero | tr '\\0' x; echo é >&2").json()

    assert body["stdout"] == "x" * 1000 and body["stdoutTruncated"] is True
    assert body["stderr"] == "é\n" and body["stderrTruncated"] is False


def test_output_that_is_not_utf8_is_decoded_with_replacement(api, people, started):
    body = shell(api, people.alice, "printf 'a\\377b'").json()

    assert body["stdout"] == "a\ufffdb"


def test_a_background_command_answers_202_and_is_read_until_it_ends(api, people, started, webhooks):
    response = shell(api, people.alice, "sleep 1; echo done", background=True)

    assert response.status_code == 202
    command_id = response.json()["commandId"]
    assert response.json()["commandStatus"] == "running"
    deadline = time.monotonic() + 15
    while (body := api.call("get", f"{COMMANDS}?commandId={command_id}", key=people.alice.key).json()
           )["commandStatus"] == "running":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert (body["exitCode"], body["stdout"]) == (0, "done\n")
    [event] = events_of("command.completed")
    assert event["command"]["commandId"] == command_id


def test_the_worker_watch_records_a_background_command_past_its_deadline_as_timed_out(api, people, started):
    command_id = shell(api, people.alice, "sleep 30", background=True, timeout_ms=1000).json()["commandId"]

    live.background_command_watch(command_id=command_id)

    record = SandboxCommand.objects.get(pk=command_id)
    assert record.status == SandboxCommand.Status.TIMED_OUT and record.exit_code is None


def test_a_command_is_recorded_without_its_environments_values(api, people, started):
    command_id = run(api, people.alice, "true", env={"TOKEN": "s3cret-value"}).json()["commandId"]

    record = SandboxCommand.objects.get(pk=command_id)
    assert (record.command, record.env_names, record.api_key_id) == ("true", ["TOKEN"], people.alice.api_key.pk)
    assert "s3cret-value" not in str(SandboxCommand.objects.filter(pk=command_id).values().first())


def test_a_command_without_a_running_sandbox_is_a_409_saying_to_start_one(api, people, backend_name):
    response = run(api, people.alice, "true")

    assert response.status_code == 409
    assert "start one with POST /api/sandboxes" in response.json()["error"]


def test_another_callers_command_is_a_404(api, people, started):
    command_id = run(api, people.alice, "true").json()["commandId"]

    response = api.call("get", f"{COMMANDS}?commandId={command_id}", key=people.mallory.key)

    assert response.status_code == 404


def test_a_command_resets_the_idle_clock(api, people, started):
    LiveSandbox.objects.filter(pk=started).update(last_activity_at=timezone.now() - timedelta(minutes=20))

    run(api, people.alice, "true")

    assert LiveSandbox.objects.get(pk=started).last_activity_at > timezone.now() - timedelta(seconds=30)


# --- files, stop ----------------------------------------------------------------------------


def test_uploaded_files_are_in_the_sandbox_and_committed_to_the_repository(api, people, started):
    response = api.call("post", FILES, key=people.alice.key, body={"files": [
        {"path": "notes/todo.txt", "content": "ship it\n"},
        {"path": "data.bin", "content": base64.b64encode(b"\x00\x01\xff").decode(), "encoding": "base64"},
    ]})

    assert response.status_code == 200, response.json()
    uploaded = {entry["path"]: entry["sha"] for entry in response.json()["uploaded"]}
    assert run(api, people.alice, "cat", "notes/todo.txt").json()["stdout"] == "ship it\n"
    repository = repository_path(people.alice.account)
    log = subprocess.run(["git", "--git-dir", str(repository), "log", "-1", "--format=%s"], capture_output=True,
                         text=True, check=True).stdout
    assert log.strip() == "Upload files via API"
    blob = subprocess.run(["git", "--git-dir", str(repository), "rev-parse", "HEAD:notes/todo.txt"],
                          capture_output=True, text=True, check=True).stdout.strip()
    assert uploaded["notes/todo.txt"] == blob


def test_stop_takes_a_new_snapshot_pushes_it_and_a_new_start_sees_the_files(api, people, started, webhooks):
    shell(api, people.alice, "echo kept > made-in-the-sandbox.txt")

    response = api.call("post", STOP, key=people.alice.key, body={})

    assert response.status_code == 200, response.json()
    snapshot = Snapshot.objects.get(account=people.alice.account)
    assert response.json()["snapshot"]["snapshot_id"] == snapshot.snapshot_id
    assert any(entry["path"] == "made-in-the-sandbox.txt" for entry in snapshot.filetree)
    assert LiveSandbox.objects.get(pk=started).status == LiveSandbox.Status.STOPPED
    [event] = events_of("sandbox.stopped")
    assert (event["reason"], event["snapshot_id"]) == ("api", snapshot.snapshot_id)
    repository = repository_path(people.alice.account)
    shown = subprocess.run(["git", "--git-dir", str(repository), "show", "HEAD:made-in-the-sandbox.txt"],
                           capture_output=True, text=True, check=True).stdout
    assert shown == "kept\n"
    # Stopped: a command is a 409; started again, the file is there.
    assert run(api, people.alice, "true").status_code == 409
    api.call("post", START, key=people.alice.key, body={})
    assert run(api, people.alice, "cat", "made-in-the-sandbox.txt").json()["stdout"] == "kept\n"


def test_a_stop_without_a_snapshot_keeps_none(api, people, started):
    response = api.call("post", STOP, key=people.alice.key, body={"snapshot": False})

    assert response.json() == {"status": "success", "snapshot": None}
    assert not Snapshot.objects.filter(account=people.alice.account).exists()


def test_the_sweep_stops_an_idle_sandbox_with_a_snapshot(api, people, started, webhooks):
    LiveSandbox.objects.filter(pk=started).update(last_activity_at=timezone.now() - timedelta(hours=1))

    summary = live.live_sandboxes_sweep(actor=live.Actor.command("tests"))

    assert summary.startswith("Stopped 1 idle sandbox(es)")
    assert LiveSandbox.objects.get(pk=started).stop_reason == "idle"
    assert Snapshot.objects.filter(account=people.alice.account).exists()
    [event] = events_of("sandbox.stopped")
    assert event["reason"] == "idle"


def test_a_delete_removes_a_running_sandbox_without_a_snapshot(api, people, started, webhooks):
    response = api.delete(people.alice.key)

    assert response.status_code == 200, response.json()
    sandbox = LiveSandbox.objects.get(pk=started)
    assert (sandbox.status, sandbox.stop_reason) == (LiveSandbox.Status.STOPPED, "deleted")
    assert not Snapshot.objects.filter(account=people.alice.account).exists()
    [event] = events_of("sandbox.stopped")
    assert event["reason"] == "deleted"


@pytest.mark.docker
def test_reconcile_keeps_a_live_sandboxs_container_and_removes_it_once_its_row_is_not_live(
        api, people, docker_settings, docker_engine, settings):
    from accounts.audit import Actor
    from sandboxes.reconcile import FindingKind, sandboxes_reconcile

    settings.SANDBOX_LOCAL_EXEC = "unsafe"
    settings.SANDBOX_DEPLOYMENT_ID = "live-reconcile"
    sandbox_id = api.call("post", START, key=people.alice.key, body={}).json()["sandboxes"][0]["sandboxId"]
    marked = {"label": f"sandbox-service.holder={sandbox_id}"}

    kept = sandboxes_reconcile(fix=True, actor=Actor.command("tests"))
    assert not [f for f in kept.findings if f.kind == FindingKind.LEFTOVER_SANDBOX], kept.summary
    assert len(docker_engine.containers.list(filters=marked)) == 1

    LiveSandbox.objects.filter(pk=sandbox_id).update(status=LiveSandbox.Status.FAILED)  # as a lost one is
    removed = sandboxes_reconcile(fix=True, actor=Actor.command("tests"))

    leftovers = [f for f in removed.findings if f.kind == FindingKind.LEFTOVER_SANDBOX]
    assert sorted(f.subject.split()[0] for f in leftovers) == ["container", "volume"]
    assert all(f.fixed and f"live sandbox {sandbox_id}, which held it, is over" in f.reason for f in leftovers)
    assert docker_engine.containers.list(all=True, filters=marked) == []


def test_a_stop_ends_the_background_commands_still_running(api, people, started):
    command_id = shell(api, people.alice, "echo $$ > pid; exec sleep 6029", background=True).json()["commandId"]
    deadline = time.monotonic() + 10
    while run(api, people.alice, "cat", "pid").json()["exitCode"] != 0:
        assert time.monotonic() < deadline
        time.sleep(0.1)

    api.call("post", STOP, key=people.alice.key, body={"snapshot": False})

    assert SandboxCommand.objects.get(pk=command_id).status == SandboxCommand.Status.KILLED
    leftover = subprocess.run(["pgrep", "-f", "^sleep 6029$"], capture_output=True, text=True).stdout.split()
    assert leftover == [], leftover


def test_the_sweep_ends_a_foreground_command_whose_server_stopped_before_it_answered(api, people, started):
    record = SandboxCommand.objects.create(
        sandbox_id=started, account=people.alice.account, command="sleep", args=["600"], timeout_ms=1000,
        created_at=timezone.now() - timedelta(minutes=5))

    live.live_sandboxes_sweep(actor=live.Actor.command("tests"))

    record.refresh_from_db()
    assert (record.status, record.error) == (SandboxCommand.Status.FAILED,
                                             "The server running it stopped before it ended")
