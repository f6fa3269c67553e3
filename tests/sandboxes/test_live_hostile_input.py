"""A hostile client against the live sandbox endpoints: a 400 or a 413, never a 500, and nothing happens.

Alice's live sandbox runs on the local backend (SANDBOX_LOCAL_EXEC=unsafe),
where a command that got through would run on this host. Each request below
is refused, with a JSON error that names what is wrong, and leaves
everything as it was: every file under the test's folders (the sandbox's
workspace and commands folder, the snapshots, the git host's repositories),
the commands recorded, the audit trail and the sandbox, still running.

- Commands: an environment over the body limit (413) or of 101 variables,
  a variable name that is not one, a NUL anywhere (the command, an
  argument, cwd, a variable), a cwd outside the workspace or in .git,
  timeout_ms above SANDBOX_COMMAND_MAX_MS (or not a number a limit can be),
  fields the endpoint does not take, bodies that are not an object.
- Uploads: 10,000 files (413, within the path's larger body limit), more
  bytes than SANDBOX_UPLOAD_MAX_BYTES (413), a path into .git, absolute or
  climbing out, not normalized, with a NUL; content that is not base64; the
  same path twice; fields the endpoint does not take.
- Stop, start and reading a command: fields and query parameters they do not
  take, values of the wrong type.
"""

import hashlib
import json
from pathlib import Path

import pytest
from django.conf import settings as django_settings

from accounts.audit import Actor
from accounts.models import AuditEvent
from sandboxes import live
from sandboxes.models import LiveSandbox, SandboxCommand
from sandboxes.serializers import COMMAND_MAX_ARGS, COMMAND_MAX_ENV

pytestmark = pytest.mark.django_db

START = "/api/sandboxes"
COMMANDS = "/api/sandboxes/commands"
FILES = "/api/sandboxes/files"
STOP = "/api/sandboxes/stop"


@pytest.fixture
def sandbox(api, people, settings):
    """Alice's running live sandbox on the local backend; stopped (no snapshot) afterwards."""
    settings.SANDBOX_LOCAL_EXEC = "unsafe"
    response = api.call("post", START, key=people.alice.key, body={})
    assert response.status_code == 200, response.content
    [started] = response.json()["sandboxes"]
    yield LiveSandbox.objects.get(pk=started["sandboxId"])
    for running in LiveSandbox.objects.filter(status=LiveSandbox.Status.RUNNING):
        live.live_sandbox_stop(sandbox=running, actor=Actor.command("tests"), reason="api", take_snapshot=False)


def files_under(folder: Path) -> dict[str, str]:
    """Every file and folder under `folder`: its path, and a file's checksum (a link's target)."""
    found = {}
    for path in sorted(folder.rglob("*")):
        relative = str(path.relative_to(folder))
        if path.is_symlink():
            found[relative] = f"-> {path.readlink()}"
        elif path.is_file():
            found[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            found[relative] = "folder"
    return found


def everything(tmp_path: Path) -> dict:
    return {
        "files": files_under(tmp_path),
        "commands": list(SandboxCommand.objects.values_list("pk", "status")),
        "audit": AuditEvent.objects.count(),
        "sandboxes": list(LiveSandbox.objects.values_list("pk", "status")),
    }


def send(api, key: str, method: str, path: str, body) -> "object":
    """The request with `body` as JSON, or as it is when it is bytes (JSON that json.dumps cannot write)."""
    if isinstance(body, bytes):
        return getattr(api.client, method)(path, data=body, content_type="application/json",
                                          headers={"x-api-key": key})
    return api.call(method, path, key=key, body=body)


def command(**fields) -> dict:
    return {"command": "touch", "args": ["ran"], **fields}


def upload(*files: dict, **fields) -> dict:
    return {"files": list(files), **fields}


def file(path: str = "new.txt", content: str = "hello\n", **fields) -> dict:
    return {"path": path, "content": content, **fields}


# API_MAX_BODY_BYTES is 64 KiB: 80 variables of 1000 bytes are well over it.
HUGE_ENV = {f"VARIABLE_{number}": "x" * 1000 for number in range(80)}
TOO_MANY_VARIABLES = {f"V{number}": "" for number in range(COMMAND_MAX_ENV + 1)}
TEN_THOUSAND_FILES = [file(f"many/{number:05d}.txt", "x") for number in range(10_000)]

HOSTILE = [
    # --- commands ---
    pytest.param("post", COMMANDS, command(env=HUGE_ENV), 413, "Request body is too large", id="env-over-body-limit"),
    pytest.param("post", COMMANDS, command(env=TOO_MANY_VARIABLES), 400, f"at most {COMMAND_MAX_ENV} variables",
                 id="env-101-variables"),
    pytest.param("post", COMMANDS, command(env={"A=B": "x"}), 400, "is not a variable name", id="env-name-with-="),
    pytest.param("post", COMMANDS, command(env={"": "x"}), 400, "is not a variable name", id="env-name-empty"),
    pytest.param("post", COMMANDS, command(env={"PATH\n": "/tmp"}), 400, "is not a variable name",
                 id="env-name-newline"),
    pytest.param("post", COMMANDS, command(env={"LD_PRELOAD\u0000": "x"}), 400, "is not a variable name",
                 id="env-name-nul"),
    pytest.param("post", COMMANDS, command(env={"A": "x\u0000y"}), 400, "env", id="env-value-nul"),
    pytest.param("post", COMMANDS, command(env=["A=B"]), 400, "env", id="env-not-an-object"),
    pytest.param("post", COMMANDS, command(args=["ran\u0000../../escape"]), 400, "args", id="nul-in-args"),
    pytest.param("post", COMMANDS, command(command="touch\u0000x"), 400, "command", id="nul-in-command"),
    pytest.param("post", COMMANDS, command(cwd="sub\u0000"), 400, "cwd", id="nul-in-cwd"),
    pytest.param("post", COMMANDS, command(cwd="../.."), 400, "must not contain '..'", id="cwd-climbing-out"),
    pytest.param("post", COMMANDS, command(cwd="workspace/../.."), 400, "must not contain '..'",
                 id="cwd-climbing-out-of-a-folder"),
    pytest.param("post", COMMANDS, command(cwd="/etc"), 400, "not an absolute path", id="cwd-absolute"),
    pytest.param("post", COMMANDS, command(cwd=".git"), 400, "must not be inside .git", id="cwd-git"),
    pytest.param("post", COMMANDS, command(cwd=".git/hooks"), 400, "must not be inside .git", id="cwd-git-hooks"),
    pytest.param("post", COMMANDS, command(cwd="./workspace"), 400, "must be normalized", id="cwd-not-normalized"),
    pytest.param("post", COMMANDS, command(cwd="no-such-folder"), 400, "is not a folder", id="cwd-not-a-folder"),
    pytest.param("post", COMMANDS, command(timeout_ms=django_settings.SANDBOX_COMMAND_MAX_MS + 1), 400,
                 "SANDBOX_COMMAND_MAX_MS", id="timeout-above-the-maximum"),
    pytest.param("post", COMMANDS, command(timeout_ms=0), 400, "timeout_ms", id="timeout-zero"),
    pytest.param("post", COMMANDS, command(timeout_ms=-1), 400, "timeout_ms", id="timeout-negative"),
    pytest.param("post", COMMANDS, command(timeout_ms=10**30), 400, "timeout_ms", id="timeout-huge"),
    pytest.param("post", COMMANDS, b'{"command": "touch", "args": ["ran"], "timeout_ms": 1e999}', 400, "timeout_ms",
                 id="timeout-infinite"),
    pytest.param("post", COMMANDS, command(timeout_ms="soon"), 400, "timeout_ms", id="timeout-not-a-number"),
    pytest.param("post", COMMANDS, command(background="maybe"), 400, "background", id="background-not-a-boolean"),
    pytest.param("post", COMMANDS, command(shell=True), 400, "not a field of this request", id="commands-unknown-field"),
    pytest.param("post", COMMANDS, command(args="ran"), 400, "args", id="args-not-a-list"),
    pytest.param("post", COMMANDS, command(args=["x"] * (COMMAND_MAX_ARGS + 1)), 400, "args", id="args-too-many"),
    pytest.param("post", COMMANDS, command(command=""), 400, "command", id="command-empty"),
    pytest.param("post", COMMANDS, command(command="x" * 4097), 400, "command", id="command-too-long"),
    pytest.param("post", COMMANDS, command(command=["touch", "ran"]), 400, "command", id="command-a-list"),
    pytest.param("post", COMMANDS, ["touch", "ran"], 400, "must be a JSON object", id="commands-body-a-list"),
    pytest.param("post", COMMANDS, b"null", 400, "", id="commands-body-null"),
    # --- uploads ---
    pytest.param("post", FILES, upload(*TEN_THOUSAND_FILES), 413, "At most", id="ten-thousand-files"),
    pytest.param("post", FILES, upload(file(".git/config", "[core]\n")), 400, "must not be inside .git",
                 id="path-git-config"),
    pytest.param("post", FILES, upload(file(".git/hooks/post-commit", "#!/bin/sh\ntouch /tmp/pwned\n")), 400,
                 "must not be inside .git", id="path-git-hook"),
    pytest.param("post", FILES, upload(file("sub/.git/HEAD")), 400, "must not be inside .git", id="path-nested-git"),
    pytest.param("post", FILES, upload(file(".git")), 400, "must not be inside .git", id="path-git-itself"),
    pytest.param("post", FILES, upload(file("/etc/passwd")), 400, "not an absolute path", id="path-absolute"),
    pytest.param("post", FILES, upload(file("../escape.txt")), 400, "must not contain '..'", id="path-climbing-out"),
    pytest.param("post", FILES, upload(file("a/../../escape.txt")), 400, "must not contain '..'",
                 id="path-climbing-out-of-a-folder"),
    pytest.param("post", FILES, upload(file("a//b.txt")), 400, "must be normalized", id="path-empty-part"),
    pytest.param("post", FILES, upload(file("a/")), 400, "must be normalized", id="path-trailing-slash"),
    pytest.param("post", FILES, upload(file("")), 400, "path", id="path-empty"),
    pytest.param("post", FILES, upload(file("new\u0000.txt")), 400, "path", id="path-nul"),
    pytest.param("post", FILES, upload(file(content="not base64!", encoding="base64")), 400, "not valid base64",
                 id="content-not-base64"),
    pytest.param("post", FILES, upload(file(content="aGVsbG8", encoding="base64")), 400, "not valid base64",
                 id="content-base64-unpadded"),
    pytest.param("post", FILES, upload(file(encoding="utf-16")), 400, "encoding", id="encoding-unknown"),
    pytest.param("post", FILES, upload(file("twice.txt", "one"), file("twice.txt", "two")), 400,
                 "Each path may be given once", id="same-path-twice"),
    pytest.param("post", FILES, upload(file(mode="0755")), 400, "not a field of this request",
                 id="file-unknown-field"),
    pytest.param("post", FILES, upload(file(), branch="main"), 400, "not a field of this request",
                 id="upload-unknown-field"),
    pytest.param("post", FILES, upload(file(), message="x\u0000"), 400, "message", id="message-nul"),
    pytest.param("post", FILES, upload(), 400, "files", id="no-files"),
    pytest.param("post", FILES, {"files": "new.txt"}, 400, "files", id="files-not-a-list"),
    # --- stop, start, reading a command ---
    pytest.param("post", STOP, {"snapshot": "maybe"}, 400, "snapshot", id="stop-snapshot-not-a-boolean"),
    pytest.param("post", STOP, {"force": True}, 400, "not a field of this request", id="stop-unknown-field"),
    pytest.param("post", START, {"image": "alpine"}, 400, "not a field of this request", id="start-unknown-field"),
    pytest.param("post", START, {"account_id": 12}, 400, "account_id", id="start-account-id-a-number"),
    pytest.param("get", f"{COMMANDS}?commandId=" + "c" * 41, None, 400, "commandId", id="command-id-too-long"),
    pytest.param("get", f"{COMMANDS}?commandId=cmd_%00", None, 400, "commandId", id="command-id-nul"),
    pytest.param("get", COMMANDS, None, 400, "commandId", id="command-id-missing"),
    pytest.param("get", f"{COMMANDS}?commandId=cmd_1&account_id=x", None, 400, "not a query parameter",
                 id="command-unknown-query-parameter"),
]


@pytest.mark.parametrize("method, path, body, status, error", HOSTILE)
def test_a_hostile_request_is_refused_in_words_and_nothing_happens(api, people, sandbox, tmp_path, method, path, body,
                                                                    status, error):
    before = everything(tmp_path)

    response = send(api, people.alice.key, method, path, body)

    assert response.status_code == status, response.content[:2000]
    answer = json.loads(response.content)
    assert answer["status"] == "error" and error in answer["error"], answer
    assert everything(tmp_path) == before, "the refused request changed something"


def test_the_ten_thousand_files_are_within_the_uploads_body_limit_and_refused_by_their_count(settings):
    body = json.dumps(upload(*TEN_THOUSAND_FILES)).encode()
    assert settings.API_MAX_BODY_BYTES < len(body) <= settings.API_BODY_LIMITS[FILES], len(body)
    assert len(TEN_THOUSAND_FILES) > settings.SANDBOX_UPLOAD_MAX_FILES


def test_files_over_the_upload_byte_limit_are_a_413_and_nothing_happens(api, people, sandbox, tmp_path, settings):
    settings.SANDBOX_UPLOAD_MAX_BYTES = 1000
    before = everything(tmp_path)

    response = api.call("post", FILES, key=people.alice.key,
                        body=upload(file("a.txt", "x" * 600), file("b.txt", "y" * 600)))

    assert response.status_code == 413, response.content
    assert "SANDBOX_UPLOAD_MAX_BYTES" in response.json()["error"]
    assert everything(tmp_path) == before


def test_after_every_refusal_the_sandbox_still_runs_commands(api, people, sandbox):
    for _method, path, body, _status, _error in [param.values for param in HOSTILE if param.values[0] == "post"][:10]:
        send(api, people.alice.key, "post", path, body)

    response = api.call("post", COMMANDS, key=people.alice.key, body=command(command="sh", args=["-c", "echo ok"]))

    assert response.status_code == 200 and response.json()["stdout"] == "ok\n", response.content


def test_a_link_out_of_the_workspace_does_not_break_the_stop(api, people, sandbox):
    ran = api.call("post", COMMANDS, key=people.alice.key, body={"command": "ln", "args": ["-s", "/etc", "outside"]})
    assert ran.status_code == 200 and ran.json()["exitCode"] == 0, ran.content

    response = api.call("post", STOP, key=people.alice.key, body={})

    # The link stays in the snapshot; the repository gets what stays inside the workspace.
    assert response.status_code == 200, response.content
    assert LiveSandbox.objects.get(pk=sandbox.pk).status == LiveSandbox.Status.STOPPED
