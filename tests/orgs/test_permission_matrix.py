"""The permission matrix: every kind of key × every relation of the target × every endpoint; and the scopes.

Generated from the three tables below (KEY_KINDS, RELATIONS, ENDPOINTS) and
one function that says what the rules of DESIGN.md ("Who may act on which
account") answer in each cell (`expected_status`). Each cell is its own test,
in a world built for it:

    Alpha   Pat (owner), Sid (owner), Ina (owner), Amy (member)
    Beta    Pat, Sid, Ina, Ben (all members)
    Gamma   Gus (member)
    Staff   Sid (member; a staff organization)

Pat holds the personal, organization (of Beta), revoked and expired keys;
Sid, a member of the staff organization, the staff key; Ina, whose account is
inactive, the last one. Seen from the key's holder, Amy shares an
organization in which the holder is an owner, Ben one in which the holder is
a plain member, and Gus none. A key that reaches Ina still sets up,
renews and deletes nothing of hers (403, as the admin's "Run setup again"
skips her), and may read her runs, her sandbox and its files.

Every account starts with a snapshot (its record, with a file listing, and a
real archive of the local backend), a repository on the (local) git host and
a completed setup run. Each cell asserts the status code and body, that the
target changed only as an allowed request changes it (its run queued, its
snapshot and repository deleted, or its expiry renewed, with an audit
event; reading the sandbox or a file of it changes nothing), and
that nothing changed for any other account — its snapshot record, runs,
repositories, audit events, whether it is active, its live sandbox, its
commands and the files of its running sandbox — in particular for none that
the caller may not reach.

The live sandbox endpoints run on the local backend with
SANDBOX_LOCAL_EXEC=unsafe. For a command, an upload, a stop and the read of
a command, every account also has a running live sandbox (its folder holds a
file WHOSE with the account's name) and one finished command: a command that
reaches its target prints the target's name, and one that reached another
account would show in that account's commands. Starting, running a command
in, uploading to and stopping Ina's sandbox are refused (403) as the other
writes are; reading her command is not. A command is read by its id alone,
as a run is: one the caller may not see is a 404, as one that does not exist.
"""

import shutil
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from accounts.keys import generate_key, hash_key, visible_prefix
from accounts.models import Account, ApiKey, AuditEvent
from accounts.scopes import (
    ALL_SCOPES,
    AUDIT_READ,
    NO_SCOPE,
    SANDBOXES_DELETE,
    SANDBOXES_EXEC,
    SANDBOXES_READ,
    SANDBOXES_SETUP,
)
from orgs.access import ACCESS_DENIED_MESSAGE
from orgs.models import Membership, Organization
from sandboxes.models import LiveSandbox, SandboxCommand, SetupRun, Snapshot
from sandboxes.providers import get_git_host, get_sandbox_backend
from sandboxes.providers.base import repository_name_for

OWNER, MEMBER = Membership.Role.OWNER, Membership.Role.MEMBER

# --- the tables ---------------------------------------------------------------------


@dataclass(frozen=True)
class KeyKind:
    holder: str  # whose key it is ("" for none at all)
    usable: bool
    reaches: frozenset  # relations (below) whose account the key may act on


OWN = frozenset({"none_given", "self"})
KEY_KINDS = {
    "personal": KeyKind("pat", True, OWN | {"same_org_as_owner", "inactive"}),
    "organization": KeyKind("pat", True, OWN | {"same_org_as_member", "inactive"}),  # a key of Beta, held by Pat
    "staff_member": KeyKind("sid", True,
                            OWN | {"same_org_as_owner", "same_org_as_member", "other_org", "inactive"}),
    "revoked": KeyKind("pat", False, frozenset()),
    "expired": KeyKind("pat", False, frozenset()),
    "owner_inactive": KeyKind("ina", False, frozenset()),
    "malformed": KeyKind("", False, frozenset()),
    "missing": KeyKind("", False, frozenset()),
    "both_headers": KeyKind("pat", False, frozenset()),
}

# Relation of the target to the key's holder -> the account (or raw value) the request names.
RELATIONS = {
    "none_given": None,  # the request names no account: the holder's own
    "self": "holder",
    "same_org_as_member": "ben",
    "same_org_as_owner": "amy",
    "other_org": "gus",
    "inactive": "ina",  # reachable by every usable key, but inactive
    "non_existent": "nobody",
    "not_a_uuid": "not-a-uuid",
}

ENDPOINTS = ("setup", "delete", "run_by_id", "runs_list", "sandbox_state", "file_read", "renew",
             "start", "run_command", "read_command", "upload_files", "stop")
# Writes: refused (403) for an inactive account the key reaches.
WRITES = ("setup", "delete", "renew", "start", "run_command", "upload_files", "stop")
# Read by an id alone (a run's, a command's): one the caller may not see is a 404, as one that does not exist.
BY_ID = ("run_by_id", "read_command")
# The endpoints whose every cell starts with a running live sandbox in each account.
ON_RUNNING_SANDBOXES = ("run_command", "read_command", "upload_files", "stop")


def expected_status(kind: str, relation: str, endpoint: str) -> int:
    """What the rules answer in one cell of the matrix."""
    if not KEY_KINDS[kind].usable:
        return 401
    if relation == "not_a_uuid":
        # A run or command id is not a UUID: an unknown one is one the caller cannot see.
        return 404 if endpoint in BY_ID else 400
    if relation in KEY_KINDS[kind].reaches:
        if relation == "inactive" and endpoint in WRITES:
            return 403
        return 200
    return 404 if endpoint in BY_ID else 403


CELLS = [
    pytest.param(kind, relation, endpoint, id=f"{kind}-{relation}-{endpoint}")
    for kind in KEY_KINDS
    for relation in RELATIONS
    for endpoint in ENDPOINTS
]

# --- the world ----------------------------------------------------------------------


@dataclass
class World:
    accounts: dict[str, Account]
    keys: dict[str, str]  # kind -> raw key
    runs: dict[str, str]  # account name -> id of its completed run
    commands: dict[str, str] = field(default_factory=dict)  # account name -> id of its finished command

    def account_name(self, account_id) -> str:
        return next(name for name, account in self.accounts.items() if account.pk == account_id)


MEMBERSHIPS = {  # account -> (organization, role), as the module docstring draws them
    "pat": [("alpha", OWNER), ("beta", MEMBER)],
    "sid": [("alpha", OWNER), ("beta", MEMBER), ("staff", MEMBER)],
    "ina": [("alpha", OWNER), ("beta", MEMBER)],
    "amy": [("alpha", MEMBER)],
    "ben": [("beta", MEMBER)],
    "gus": [("gamma", MEMBER)],
}
# kind -> (holder, organization of the key, expires, revoked)
ISSUED_KEYS = {
    "personal": ("pat", None, False, False),
    "organization": ("pat", "beta", False, False),
    "staff_member": ("sid", None, False, False),
    "revoked": ("pat", None, False, True),
    "expired": ("pat", None, True, False),
    "owner_inactive": ("ina", None, False, False),
    "both_headers": ("pat", None, False, False),
}


@pytest.fixture(scope="session")
def bare_repository(tmp_path_factory) -> Path:
    """A bare repository made once by the local git host; each world copies it (faster than git init)."""
    from sandboxes.providers.local_git import LocalGitHost

    root = tmp_path_factory.mktemp("matrix-git")
    LocalGitHost(root=root, command_timeout=30).ensure_repository(name="template", description="template")
    shutil.rmtree(root / "template.git" / "hooks")  # git's sample hooks: files to copy for nothing
    return root / "template.git"


@pytest.fixture(scope="session")
def snapshot_archive(tmp_path_factory) -> tuple[Path, list]:
    """A real snapshot of the local backend, made once (its archive and checksum) with its listing."""
    from sandboxes.providers.local_sandbox import LocalSandboxBackend

    backend = LocalSandboxBackend(root=tmp_path_factory.mktemp("matrix-sandbox"), command_timeout=30)
    sandbox_id = backend.create()
    backend.write_files(sandbox_id, {"README.md": README})
    info = backend.snapshot(sandbox_id)
    return backend.root / "snapshots" / info.snapshot_id, [entry.as_json() for entry in info.files]


README = b"# The sandbox\n"


def copy_snapshot(made: Path, snapshot_id: str) -> None:
    """The archive and checksum of `made` under another snapshot id, in this test's SANDBOX_ROOT."""
    from django.conf import settings

    folder = Path(settings.SANDBOX_ROOT) / "snapshots"
    folder.mkdir(parents=True, exist_ok=True)
    for suffix in (".tar.gz", ".sha256"):
        shutil.copyfile(made.with_name(made.name + suffix), folder / f"{snapshot_id}{suffix}")


@pytest.fixture
def world(db, settings, bare_repository, snapshot_archive) -> World:
    """The world of the module docstring, in a few bulk inserts (each of the 864 cells builds one)."""
    settings.SANDBOX_LOCAL_EXEC = "unsafe"  # live sandboxes on the local backend
    now = timezone.now()
    organizations = {
        name: Organization(name=name.title(), slug=name, is_staff=name == "staff")
        for name in ("alpha", "beta", "gamma", "staff")
    }
    Organization.objects.bulk_create(organizations.values())
    accounts = {name: Account(name=name.title(), email=f"{name}@example.com", is_active=name != "ina")
                for name in MEMBERSHIPS}
    Account.objects.bulk_create(accounts.values())
    Membership.objects.bulk_create(
        Membership(account=accounts[name], organization=organizations[organization], role=role)
        for name, memberships in MEMBERSHIPS.items()
        for organization, role in memberships
    )
    keys, rows = {"malformed": "sbx_" + "!" * 43}, []
    for kind, (holder, organization, expired, revoked) in ISSUED_KEYS.items():
        keys[kind] = raw = generate_key()
        rows.append(ApiKey(account=accounts[holder], organization=organizations.get(organization), name=kind,
                           prefix=visible_prefix(raw), key_hash=hash_key(raw),
                           expires_at=now - timedelta(seconds=1) if expired else None,
                           revoked_at=now - timedelta(minutes=1) if revoked else None, scopes=list(ALL_SCOPES)))
    ApiKey.objects.bulk_create(rows)

    snapshots, runs = [], {}
    for name, account in accounts.items():
        # The local git host's layout: GIT_ROOT/<name>.git, its file:// URL as the repository's URL.
        name_on_host = repository_name_for(account_name=account.name, account_id=account.pk)
        repository = Path(settings.GIT_ROOT) / f"{name_on_host}.git"
        shutil.copytree(bare_repository, repository)
        snapshot_id = f"snap_{uuid.uuid4().hex}"
        copy_snapshot(snapshot_archive[0], snapshot_id)
        snapshots.append(Snapshot(account=account, snapshot_id=snapshot_id, filetree=snapshot_archive[1],
                                  expires_at=now + timedelta(days=7), github_repo=repository.resolve().as_uri()))
        runs[name] = SetupRun(account=account, status=SetupRun.Status.COMPLETED, finished_at=now)
    Snapshot.objects.bulk_create(snapshots)
    SetupRun.objects.bulk_create(runs.values())
    return World(accounts=accounts, keys=keys, runs={name: run.pk for name, run in runs.items()})


def start_live_sandboxes(world: World) -> None:
    """A running live sandbox in every account, its folder holding WHOSE (the account's name), and one command."""
    backend, now = get_sandbox_backend(), timezone.now()
    sandboxes, commands = [], []
    for name, account in world.accounts.items():
        runtime_id = backend.create()
        backend.write_files(runtime_id, {"README.md": README, "WHOSE": name.encode()})
        sandboxes.append(LiveSandbox(account=account, status=LiveSandbox.Status.RUNNING, backend=backend.name,
                                     engine=backend.engine, runtime_id=runtime_id, started_at=now,
                                     last_activity_at=now))
        commands.append(SandboxCommand(sandbox=sandboxes[-1], account=account, command="cat", args=["WHOSE"],
                                       timeout_ms=60_000, status=SandboxCommand.Status.FINISHED, exit_code=0,
                                       stdout=name, duration_ms=1, finished_at=now))
    LiveSandbox.objects.bulk_create(sandboxes)
    SandboxCommand.objects.bulk_create(commands)
    world.commands = {name: command.pk for name, command in zip(world.accounts, commands)}


def _workspace_files(runtime_id: str) -> list[str]:
    """The files of a running sandbox of the local backend, relative to its workspace."""
    from django.conf import settings

    workspace = Path(settings.SANDBOX_ROOT) / "sandboxes" / runtime_id / "workspace"
    return sorted(str(path.relative_to(workspace)) for path in workspace.rglob("*") if path.is_file())


def state_of_every_account() -> dict:
    """Per account: its snapshot record, its runs, its repositories, its audit events, whether it is active,
    its live sandboxes, its commands and the files of its running sandbox."""
    repositories = [repository.name for repository in get_git_host().list_all_repositories()]
    snapshots = {account_id: (snapshot_id, expires_at)
                 for account_id, snapshot_id, expires_at in Snapshot.objects.values_list(
                     "account_id", "snapshot_id", "expires_at")}
    runs, audit = {}, {}
    for account_id, run_id, status in SetupRun.objects.order_by("pk").values_list("account_id", "pk", "status"):
        runs.setdefault(account_id, []).append((run_id, status))
    for account_ref in AuditEvent.objects.values_list("account_ref", flat=True):
        audit[account_ref] = audit.get(account_ref, 0) + 1
    live, workspaces, commands = {}, {}, {}
    for account_id, sandbox_id, status, runtime_id in LiveSandbox.objects.order_by("pk").values_list(
            "account_id", "pk", "status", "runtime_id"):
        live.setdefault(account_id, []).append((sandbox_id, status))
        if status == LiveSandbox.Status.RUNNING:
            workspaces[account_id] = _workspace_files(runtime_id)
    for account_id, command_id, status in SandboxCommand.objects.order_by("pk").values_list(
            "account_id", "pk", "status"):
        commands.setdefault(account_id, []).append((command_id, status))
    return {
        account_id: {
            "active": active,
            "snapshot": snapshots.get(account_id),
            "runs": runs.get(account_id, []),
            "repositories": [name for name in repositories if name.endswith(str(account_id))],
            "audit": audit.get(account_id, 0),
            "live": live.get(account_id, []),
            "commands": commands.get(account_id, []),
            "workspace": workspaces.get(account_id),
        }
        for account_id, active in Account.objects.values_list("pk", "is_active")
    }


# --- one request per cell -----------------------------------------------------------


def _headers(world: World, kind: str) -> dict:
    if kind == "missing":
        return {}
    key = world.keys[kind]
    if kind == "both_headers":
        return {"x-api-key": key, "Authorization": f"Bearer {key}"}
    return {"x-api-key": key}


def _target(world: World, kind: str, relation: str):
    """(the account the cell is about, the value the request names)."""
    named = RELATIONS[relation]
    holder = world.accounts.get(KEY_KINDS[kind].holder) or world.accounts["pat"]
    if named is None:
        return holder, None
    if named == "holder":
        return holder, str(holder.pk)
    if named == "nobody":
        return None, str(uuid.uuid4())
    if named == "not-a-uuid":
        return None, named
    return world.accounts[named], str(world.accounts[named].pk)


def _request(api, world: World, endpoint: str, target: Account | None, named, headers: dict):
    body = {} if named is None else {"account_id": named}
    if endpoint == "start":
        return api.call("post", "/api/sandboxes", body=body, headers=headers)
    if endpoint == "run_command":
        return api.call("post", "/api/sandboxes/commands", body={**body, "command": "cat", "args": ["WHOSE"]},
                        headers=headers)
    if endpoint == "upload_files":
        return api.call("post", "/api/sandboxes/files", body={**body, "files": [
            {"path": "uploaded.txt", "content": "uploaded\n"}]}, headers=headers)
    if endpoint == "stop":
        return api.call("post", "/api/sandboxes/stop", body=body, headers=headers)
    if endpoint == "read_command":
        # The target's command; one that does not exist; a value that is no command id.
        # No id given, as the holder itself: the holder's own command.
        if target is not None:
            command_id = world.commands[world.account_name(target.pk)]
        elif named == "not-a-uuid":
            command_id = named
        else:
            command_id = "cmd_" + uuid.uuid4().hex[:24]
        return api.call("get", f"/api/sandboxes/commands?commandId={command_id}", headers=headers)
    if endpoint == "setup":
        return api.call("post", "/api/sandboxes/setup", body=body, headers=headers)
    if endpoint == "delete":
        return api.call("delete", "/api/sandboxes", body=body, headers=headers)
    query = "" if named is None else f"?account_id={named}"
    if endpoint == "runs_list":
        return api.call("get", f"/api/tasks/runs{query}", headers=headers)
    if endpoint == "sandbox_state":
        return api.call("get", f"/api/sandboxes{query}", headers=headers)
    if endpoint == "file_read":
        return api.call("get", f"/api/sandboxes/file{query or '?'}&path=README.md", headers=headers)
    if endpoint == "renew":
        return api.call("patch", "/api/sandboxes", body=body, headers=headers)
    # run_by_id: the target's completed run; a run that does not exist; a value that is no run id.
    # An empty runId is no runId: the holder's own recent runs.
    if named is None:
        run_id = ""
    elif target is not None:
        run_id = world.runs[world.account_name(target.pk)]
    elif named == "not-a-uuid":
        run_id = named
    else:
        run_id = "run_" + uuid.uuid4().hex[:24]
    return api.call("get", f"/api/tasks/runs?runId={run_id}", headers=headers)


@pytest.mark.parametrize("kind, relation, endpoint", CELLS)
def test_cell_answers_as_the_rules_say_and_changes_nothing_out_of_reach(world, api, kind, relation, endpoint):
    if endpoint in ON_RUNNING_SANDBOXES:
        start_live_sandboxes(world)
    target, named = _target(world, kind, relation)
    before = state_of_every_account()
    expected = expected_status(kind, relation, endpoint)

    response = _request(api, world, endpoint, target, named, _headers(world, kind))

    assert response.status_code == expected, response.content
    body = response.json()
    if expected == 200:
        assert body["status"] == "success", body
    else:
        assert body["status"] == "error" and body["error"], body
    if expected == 403 and relation == "inactive":
        assert body["error"] == f"The account {target.pk} is inactive"
    elif expected == 403:
        assert body["error"] == ACCESS_DENIED_MESSAGE  # the same whether the account exists or not
    if expected == 404:
        assert body["error"].startswith("No command " if endpoint == "read_command" else "No run "), body

    after = state_of_every_account()
    changed = {account_id for account_id in before if before[account_id] != after[account_id]}
    if expected == 200 and endpoint in WRITES:
        assert changed == {target.pk}, [world.account_name(pk) for pk in changed]
        _assert_target_changed_as_asked(endpoint, target, before[target.pk], after[target.pk], body)
    else:
        assert changed == set(), [world.account_name(pk) for pk in changed]

    if expected == 200 and endpoint == "run_by_id":
        assert [run["id"] for run in body["runs"]] == [world.runs[world.account_name(target.pk)]]
    if expected == 200 and endpoint == "runs_list":
        assert {run["account_id"] for run in body["runs"]} == {str(target.pk)}
    if expected == 200 and endpoint == "sandbox_state":
        assert (body["account_id"], body["state"]) == (str(target.pk), "ready")
        assert body["snapshot_id"] == before[target.pk]["snapshot"][0]
    if expected == 200 and endpoint == "file_read":
        assert (body["path"], body["content"]) == ("README.md", README.decode())
    if expected == 200 and endpoint == "read_command":
        name = world.account_name(target.pk)
        assert (body["commandId"], body["stdout"]) == (world.commands[name], name), body


def _assert_target_changed_as_asked(endpoint: str, target: Account, before: dict, after: dict, body: dict):
    if endpoint in ("start", "run_command", "upload_files", "stop"):
        _assert_live_target_changed_as_asked(endpoint, target, before, after, body)
        return
    if endpoint == "setup":
        [new_run] = set(after["runs"]) - set(before["runs"])
        assert new_run == (body["runId"], SetupRun.Status.QUEUED)
        assert (after["snapshot"], after["repositories"]) == (before["snapshot"], before["repositories"])
    elif endpoint == "renew":
        assert body["snapshot"]["account_id"] == str(target.pk)
        assert after["snapshot"][0] == before["snapshot"][0]
        assert after["snapshot"][1] > before["snapshot"][1]
        assert (after["runs"], after["repositories"]) == (before["runs"], before["repositories"])
    else:
        assert body["deleted_snapshot"]["account_id"] == str(target.pk)
        assert body["deleted_snapshot"]["snapshot_id"] == before["snapshot"][0]
        assert after["snapshot"] is None
        assert after["repositories"] == []
    assert after["audit"] > before["audit"]


# --- the table itself ---------------------------------------------------------------


def test_the_matrix_covers_every_kind_relation_and_endpoint():
    assert len(CELLS) == len(KEY_KINDS) * len(RELATIONS) * len(ENDPOINTS) == 864


def test_the_matrix_has_allowed_and_denied_cells_for_every_usable_kind():
    for kind, key_kind in KEY_KINDS.items():
        answers = {expected_status(kind, relation, "setup") for relation in RELATIONS}
        assert answers == ({200, 400, 403} if key_kind.usable else {401}), kind


def _assert_live_target_changed_as_asked(endpoint: str, target: Account, before: dict, after: dict, body: dict):
    kept = {"runs", "repositories", "active"}
    if endpoint == "start":
        [sandbox] = body["sandboxes"]
        assert sandbox["sandboxStatus"] == "running", body
        assert before["live"] == [] and after["live"] == [(sandbox["sandboxId"], LiveSandbox.Status.RUNNING)]
        assert after["workspace"] == ["README.md"], after  # from the account's snapshot
        assert after["audit"] > before["audit"]
        kept |= {"snapshot", "commands"}
    elif endpoint == "run_command":
        assert (body["exitCode"], body["stdout"]) == (0, Account.objects.get(pk=target.pk).name.lower()), body
        assert after["commands"] == sorted([*before["commands"], (body["commandId"], "finished")])
        kept |= {"snapshot", "live", "workspace", "audit"}
    elif endpoint == "upload_files":
        assert [file["path"] for file in body["uploaded"]] == ["uploaded.txt"], body
        assert after["workspace"] == sorted([*before["workspace"], "uploaded.txt"]), after
        assert after["audit"] > before["audit"]
        kept |= {"snapshot", "live", "commands"}
    else:
        assert body["snapshot"]["account_id"] == str(target.pk), body
        assert after["snapshot"][0] == body["snapshot"]["snapshot_id"] != before["snapshot"][0]
        [(sandbox_id, _running)] = before["live"]
        assert after["live"] == [(sandbox_id, LiveSandbox.Status.STOPPED)] and after["workspace"] is None, after
        assert after["audit"] > before["audit"]
        kept |= {"commands"}
    for name in kept:
        assert after[name] == before[name], (name, before[name], after[name])


# --- the scope dimension ------------------------------------------------------------
#
# Every endpoint × every set of scopes, with Pat's personal key on her own
# account: a key without the endpoint's scope gets a 403 naming it and nothing
# changes (no run, no command, no file, no event); with it, the endpoint
# answers as it does for a key of every scope. The live sandbox's endpoints
# find a running sandbox in every account (start_live_sandboxes).

# name -> (method, path, body, the scope it needs, its answer with the scope)
SCOPED_ENDPOINTS = {
    "ping": ("get", "/api/ping", None, NO_SCOPE, 200),
    "setup": ("post", "/api/sandboxes/setup", {}, SANDBOXES_SETUP, 200),
    "sandbox_state": ("get", "/api/sandboxes", None, SANDBOXES_READ, 200),
    "start": ("post", "/api/sandboxes", {}, SANDBOXES_SETUP, 200),
    "renew": ("patch", "/api/sandboxes", {}, SANDBOXES_SETUP, 200),
    "delete": ("delete", "/api/sandboxes", {}, SANDBOXES_DELETE, 200),
    "file_read": ("get", "/api/sandboxes/file?path=README.md", None, SANDBOXES_READ, 200),
    "runs_list": ("get", "/api/tasks/runs", None, SANDBOXES_READ, 200),
    "command_run": ("post", "/api/sandboxes/commands", {"command": "cat", "args": ["WHOSE"]}, SANDBOXES_EXEC, 200),
    "command_read": ("get", "/api/sandboxes/commands?commandId={command}", None, SANDBOXES_READ, 200),
    "upload": ("post", "/api/sandboxes/files", {"files": [{"path": "a.txt", "content": "a"}]}, SANDBOXES_EXEC, 200),
    "stop": ("post", "/api/sandboxes/stop", {"snapshot": False}, SANDBOXES_EXEC, 200),
    "audit": ("get", "/api/audit", None, AUDIT_READ, 200),
}
SCOPE_SETS = {
    "none": (),
    **{scope: (scope,) for scope in ALL_SCOPES},
    "default": ("sandboxes:read", "sandboxes:setup"),
    "all": ALL_SCOPES,
}


def scope_cells():
    for endpoint, (*_, needed, _answer) in SCOPED_ENDPOINTS.items():
        for name, scopes in SCOPE_SETS.items():
            yield pytest.param(endpoint, name, id=f"{endpoint}-{name}")
        if needed != NO_SCOPE:
            # Every scope but the one it needs.
            yield pytest.param(endpoint, f"all-but-{needed}", id=f"{endpoint}-all-but-{needed}")


def scopes_of(name: str) -> tuple:
    if name.startswith("all-but-"):
        return tuple(scope for scope in ALL_SCOPES if scope != name.removeprefix("all-but-"))
    return SCOPE_SETS[name]


@pytest.mark.parametrize("endpoint, scope_set", list(scope_cells()))
def test_scope_cell_passes_with_the_scope_and_is_refused_without_it(world, api, endpoint, scope_set):
    scopes = scopes_of(scope_set)
    ApiKey.objects.filter(name="personal").update(scopes=list(scopes))
    method, path, body, needed, answer = SCOPED_ENDPOINTS[endpoint]
    if endpoint in ("start", "command_run", "command_read", "upload", "stop"):
        start_live_sandboxes(world)
        path = path.format(command=world.commands["pat"])
    before = state_of_every_account()

    response = api.call(method, path, body=body, headers={"x-api-key": world.keys["personal"]})

    if needed == NO_SCOPE or needed in scopes:
        assert response.status_code == answer, response.content
        if answer == 200:
            assert response.json()["status"] == "success"
    else:
        assert response.status_code == 403, response.content
        assert response.json() == {"status": "error", "error": f"This key lacks the scope {needed}"}
        assert state_of_every_account() == before


def test_the_scope_matrix_covers_every_api_endpoint_and_method():
    from tests.test_api_input import _api_views

    declared = {(route, method) for route, view in _api_views()
                if route not in ("api/schema/", "api/docs/") and view is not None and hasattr(view, "required_scopes")
                for method in view.required_scopes}
    covered = {(path.split("?")[0].lstrip("/"), method.upper()) for method, path, *_ in SCOPED_ENDPOINTS.values()}
    assert len(covered) == len(SCOPED_ENDPOINTS)
    assert covered == declared
