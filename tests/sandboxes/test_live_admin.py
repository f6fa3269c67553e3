"""Live sandboxes and their commands in the back office: the account's page, the two lists, Stop and Kill.

What is pinned:
- the account's page shows its live sandbox (state in words, the snapshot it
  started from, the engine, the idle deadline) and its last commands (the
  key's prefix and name, command and arguments, folder, the names of the
  environment, status, exit code, duration, when);
- the value of a command's environment is on no page: not the account's, not
  the lists, not a command's or a sandbox's own page (not even through the
  output of a command that prints it);
- staff with sandboxes.stop_livesandbox get a Stop button, which stops the
  sandbox with a snapshot (reason "staff") and comes back to the page; with
  sandboxes.kill_sandboxcommand a running command's row has a Kill button;
  the lists offer the same actions, which re-check each row, report what they
  did per row and end with a summary;
- staff without the permissions see the same pages without the buttons, and
  posting the actions anyway changes nothing;
- a stop that fails (the sandbox is held by a host this server does not reach)
  is reported in words, leaves that sandbox running and goes on to the next.

Sandboxes run on the local backend, commands as processes of this host
(SANDBOX_LOCAL_EXEC=unsafe).
"""

import os
import re
import signal
import time
from pathlib import Path

import pytest
from django.conf import settings

from accounts.audit import Actor
from accounts.models import Account, AuditEvent
from config.admin_links import admin_change_url
from sandboxes.live import command_run, live_sandbox_start
from sandboxes.models import LiveSandbox, SandboxCommand, Snapshot
from tests.staff import VIEW_PERMISSIONS, make_staff, messages_of, offered_actions

pytestmark = pytest.mark.django_db

LIVE = "/admin/sandboxes/livesandbox/"
COMMANDS = "/admin/sandboxes/sandboxcommand/"
SECRET = "s3cr3t-value-never-shown-0d5e"
LIVE_VIEW = VIEW_PERMISSIONS + ["sandboxes.view_livesandbox", "sandboxes.view_sandboxcommand"]
LIVE_ACTIONS = ["sandboxes.stop_livesandbox", "sandboxes.kill_sandboxcommand"]


@pytest.fixture
def local_exec(settings):
    settings.SANDBOX_BACKEND = "local"
    settings.SANDBOX_LOCAL_EXEC = "unsafe"
    started: list[str] = []
    yield started
    # The local backend's stop removes the sandbox's folder, not its processes: end the tests' own.
    for command_id in started:
        for pid_file in Path(settings.SANDBOX_ROOT).rglob(f"{command_id}.pid"):
            try:
                os.killpg(int(pid_file.read_text()), signal.SIGKILL)
            except (ProcessLookupError, PermissionError, ValueError):
                pass


def start(person) -> LiveSandbox:
    return live_sandbox_start(account=person.account, actor=Actor(api_key=person.api_key))


def run(person, argv, *, background=False, started=None, env=None) -> SandboxCommand:
    record = command_run(account=person.account, actor=Actor(api_key=person.api_key), command=argv[0],
                         args=list(argv[1:]), cwd="", env=env if env is not None else {"API_TOKEN": SECRET},
                         timeout_ms=60_000, background=background)
    if background:
        started.append(record.pk)
        # Running for real: its process has written its pid.
        deadline = time.monotonic() + 10
        while not list(Path(settings.SANDBOX_ROOT).rglob(f"{record.pk}.pid")):
            assert time.monotonic() < deadline, "the background command did not start"
            time.sleep(0.05)
    return record


def operator(client):
    user = make_staff("live-operator", LIVE_VIEW + LIVE_ACTIONS)
    client.force_login(user)
    return user


def viewer(client):
    user = make_staff("live-viewer", LIVE_VIEW)
    client.force_login(user)
    return user


def page_of(client, account):
    return client.get(admin_change_url(Account, account.pk))


def buttons(response) -> list[str]:
    return re.findall(r'id="page-action-([a-z_]+)"', response.content.decode())


def form_fields(page: str, form_id: str) -> tuple[str, dict]:
    tag, body = re.search(rf'(<form[^>]*id="{form_id}"[^>]*>)(.*?)</form>', page, re.DOTALL).groups()
    fields = dict(re.findall(r'name="([^"]+)" value="([^"]*)"', body))
    fields.pop("csrfmiddlewaretoken", None)
    return re.search(r' action="([^"]+)"', tag).group(1), fields


def press_stop(client, response):
    """Post the Stop button's form as the browser would (its hidden fields, from the page)."""
    url, fields = form_fields(response.content.decode(), "page-action-stop_selected_live_sandboxes")
    return client.post(url, fields, follow=True)


def press_kill(client, response, record):
    """Press a command's Kill button: it submits the form it names, with the command's id."""
    page = response.content.decode()
    button = re.search(rf'<button[^>]*id="kill-{record.pk}"[^>]*>', page).group(0)
    form_id = re.search(r' form="([^"]+)"', button).group(1)
    name, value = re.search(r' name="([^"]+)" value="([^"]+)"', button).groups()
    url, fields = form_fields(page, form_id)
    return client.post(url, {**fields, name: value}, follow=True)


def status_of(model, pk) -> str:
    return model.objects.get(pk=pk).status


# --- what staff see ------------------------------------------------------------------------------


def test_the_account_page_shows_the_live_sandbox_and_its_last_commands(client, people, local_exec):
    operator(client)
    sandbox = start(people.alice)
    finished = run(people.alice, ["echo", "hello", "two words"])
    sleeping = run(people.alice, ["sleep", "30"], background=True, started=local_exec)

    page = page_of(client, people.alice.account).content.decode()

    assert '<span class="state state-good">running</span>' in page
    assert sandbox.pk in page
    assert "the starter layout (no valid snapshot)" in page
    assert "local backend on " in page
    assert re.search(r"\d\d:\d\d:\d\d UTC \(in (29|30) min \d\d s\)", page), "the idle deadline"
    commands = page[page.index('id="account-commands"'):]
    assert commands.index(sleeping.pk) < commands.index(finished.pk)  # the newest first
    assert "<code>echo hello &#x27;two words&#x27;</code>" in commands
    assert "<code>sleep 30</code>" in commands
    assert f"{people.alice.api_key.prefix}… (alice&#x27;s key)" in commands
    assert '<td class="wrap">API_TOKEN</td>' in commands
    assert '<span class="state state-good">finished</span></td><td>0</td>' in commands
    assert '<span class="state state-waiting">running</span></td><td>—</td><td class="nowrap">running ' in commands
    assert f'id="kill-{sleeping.pk}"' in commands and f'id="kill-{finished.pk}"' not in commands
    assert buttons(page_of(client, people.alice.account))[0] == "stop_selected_live_sandboxes"


def test_an_account_without_a_live_sandbox_says_so(client, people, local_exec):
    operator(client)

    response = page_of(client, people.bob.account)

    page = response.content.decode()
    assert '<span class="state state-neutral">no live sandbox</span> No live sandbox was started yet.' in page
    assert "No command yet." in page
    assert "stop_selected_live_sandboxes" not in buttons(response)


def test_the_value_of_a_commands_environment_is_on_no_admin_page(admin_client, people, local_exec):
    sandbox = start(people.alice)
    # It prints the value: its output must not show it either.
    printed = run(people.alice, ["printenv", "API_TOKEN"])
    sleeping = run(people.alice, ["sleep", "30"], background=True, started=local_exec)
    assert SECRET in SandboxCommand.objects.get(pk=printed.pk).stdout  # the client reads it through the API

    # Each page, and whether it shows the environment's names.
    pages = {
        "account": (admin_change_url(Account, people.alice.account.pk), True),
        "live sandboxes": (LIVE, False),
        "live sandbox": (admin_change_url(LiveSandbox, sandbox.pk), True),
        "commands": (COMMANDS, True),  # the command printenv API_TOKEN
        "command that printed it": (admin_change_url(SandboxCommand, printed.pk), True),
        "background command": (admin_change_url(SandboxCommand, sleeping.pk), True),
        "search": (f"{COMMANDS}?q=alice", True),
    }
    for name, (url, shows_names) in pages.items():
        response = admin_client.get(url)
        assert response.status_code == 200, name
        page = response.content.decode()
        assert ("API_TOKEN" in page) is shows_names, name
        assert SECRET not in page, name
    command_page = admin_client.get(admin_change_url(SandboxCommand, printed.pk)).content.decode()
    assert f"stdout {len(SECRET) + 1} characters" in command_page


def test_the_lists_filter_by_status_and_find_by_account(client, people, local_exec):
    viewer(client)
    alices = start(people.alice)
    bobs = start(people.bob)
    LiveSandbox.objects.filter(pk=bobs.pk).update(status=LiveSandbox.Status.STOPPED,
                                                  stop_reason=LiveSandbox.StopReason.IDLE)
    alices_command = run(people.alice, ["true"])
    failing = run(people.alice, ["false"])

    def listed(url, **query):
        return [row.pk for row in client.get(url, query).context["cl"].result_list]

    assert listed(LIVE, status__exact="running") == [alices.pk]
    assert listed(LIVE, status__exact="stopped") == [bobs.pk]
    assert listed(LIVE, q="bob@example.com") == [bobs.pk]
    assert listed(LIVE, q=str(people.alice.account.pk)) == [alices.pk]
    assert listed(COMMANDS, q="Alice") == [failing.pk, alices_command.pk]
    assert listed(COMMANDS, q="bob@example.com") == []
    assert listed(COMMANDS, status__exact="finished") == [failing.pk, alices_command.pk]
    assert listed(COMMANDS, status__exact="running") == []
    stopped_row = client.get(LIVE, {"q": "bob"}).content.decode()
    assert '<span class="state state-neutral">stopped</span> (idle)' in stopped_row
    commands = client.get(COMMANDS).content.decode()
    assert '<td class="field-exit_code">1</td>' in commands
    assert '<span class="state state-bad">finished</span>' in commands


# --- Stop and Kill -------------------------------------------------------------------------------


def test_stop_on_the_account_page_takes_a_snapshot_and_comes_back(client, people, local_exec):
    staff = operator(client)
    sandbox = start(people.alice)
    sleeping = run(people.alice, ["sleep", "30"], background=True, started=local_exec)

    done = press_stop(client, page_of(client, people.alice.account))

    stopped = LiveSandbox.objects.get(pk=sandbox.pk)
    assert done.redirect_chain[-1][0] == admin_change_url(Account, people.alice.account.pk)
    assert stopped.status == LiveSandbox.Status.STOPPED and stopped.stop_reason == LiveSandbox.StopReason.STAFF
    snapshot = Snapshot.objects.get(account=people.alice.account)
    assert stopped.snapshot_id == snapshot.snapshot_id
    assert messages_of(done) == [(f"Stopped sandbox {sandbox.pk} of {people.alice.account}: "
                                  f"snapshot {snapshot.snapshot_id} taken.")]
    assert status_of(SandboxCommand, sleeping.pk) == SandboxCommand.Status.KILLED
    page = done.content.decode()
    assert '<span class="state state-neutral">stopped</span> (by staff)' in page
    assert "stop_selected_live_sandboxes" not in buttons(done)
    assert f'id="kill-{sleeping.pk}"' not in page
    event = AuditEvent.objects.get(action=AuditEvent.Action.SANDBOX_STOPPED)
    assert event.actor == f"staff user {staff.username}" and "(staff)" in event.detail

    # Started again, it starts from the snapshot the stop took, and says so.
    start(people.alice)
    assert f"snapshot {snapshot.snapshot_id}" in page_of(client, people.alice.account).content.decode()


def test_kill_on_a_commands_row_kills_it_and_comes_back(client, people, local_exec):
    staff = operator(client)
    sandbox = start(people.alice)
    sleeping = run(people.alice, ["sleep", "30"], background=True, started=local_exec)

    done = press_kill(client, page_of(client, people.alice.account), sleeping)

    assert done.redirect_chain[-1][0] == admin_change_url(Account, people.alice.account.pk)
    assert messages_of(done) == [f"Killed command {sleeping.pk} (sleep 30) of {people.alice.account}."]
    assert status_of(SandboxCommand, sleeping.pk) == SandboxCommand.Status.KILLED
    assert status_of(LiveSandbox, sandbox.pk) == LiveSandbox.Status.RUNNING  # only the command
    assert f'id="kill-{sleeping.pk}"' not in done.content.decode()
    event = AuditEvent.objects.get(action=AuditEvent.Action.COMMAND_KILLED)
    assert event.actor == f"staff user {staff.username}" and sleeping.pk in event.detail


def test_the_lists_actions_recheck_each_row_and_end_with_a_summary(client, people, local_exec):
    operator(client)
    alices, bobs = start(people.alice), start(people.bob)
    sleeping = run(people.alice, ["sleep", "30"], background=True, started=local_exec)
    ended = run(people.alice, ["true"])
    LiveSandbox.objects.filter(pk=bobs.pk).update(status=LiveSandbox.Status.STOPPED)

    killed = client.post(COMMANDS, {"action": "kill_selected_commands",
                                    "_selected_action": [sleeping.pk, ended.pk]}, follow=True)
    stopped = client.post(LIVE, {"action": "stop_selected_live_sandboxes",
                                 "_selected_action": [alices.pk, bobs.pk]}, follow=True)

    assert messages_of(killed) == [
        f"Killed command {sleeping.pk} (sleep 30) of {people.alice.account}.",
        f"1 selected command(s) had ended already and were left alone: {ended.pk}",
        "Killed 1 of 1 running command(s) selected.",
    ]
    snapshot = Snapshot.objects.get(account=people.alice.account)
    assert messages_of(stopped) == [
        f"Stopped sandbox {alices.pk} of {people.alice.account}: snapshot {snapshot.snapshot_id} taken.",
        f"1 selected sandbox(es) were not running and were left alone: {bobs.pk} (stopped)",
        "Stopped 1 of 1 running sandbox(es) selected.",
    ]
    assert status_of(LiveSandbox, alices.pk) == LiveSandbox.Status.STOPPED


def test_a_stop_that_fails_is_reported_and_the_others_go_on(client, people, local_exec):
    operator(client)
    alices, bobs = start(people.alice), start(people.bob)
    # Alice's sandbox is held by another host, which this server does not reach.
    LiveSandbox.objects.filter(pk=alices.pk).update(engine="local#another-host")

    response = client.post(LIVE, {"action": "stop_selected_live_sandboxes", "_selected_action": [alices.pk, bobs.pk],
                                  "next": admin_change_url(Account, people.alice.account.pk)}, follow=True)

    assert response.status_code == 200
    assert response.redirect_chain[-1][0] == admin_change_url(Account, people.alice.account.pk)
    # Newest first, as the list shows them.
    assert messages_of(response) == [
        (f"Stopped sandbox {bobs.pk} of {people.bob.account}: "
         f"snapshot {Snapshot.objects.get(account=people.bob.account).snapshot_id} taken."),
        (f"Sandbox {alices.pk} of {people.alice.account}: The sandbox could not be stopped (it is still running): "
         f"Sandbox {alices.pk} is held by another host (another-host), which this server does not reach"),
        "Stopped 1 of 2 running sandbox(es) selected; 1 could not be stopped and are still running.",
    ]
    assert status_of(LiveSandbox, alices.pk) == LiveSandbox.Status.RUNNING
    assert status_of(LiveSandbox, bobs.pk) == LiveSandbox.Status.STOPPED
    # Still running, so still offered.
    assert "stop_selected_live_sandboxes" in buttons(response)


# --- staff without the permissions ---------------------------------------------------------------


def test_staff_without_the_permissions_see_the_pages_without_stop_or_kill(client, people, local_exec):
    sandbox = start(people.alice)
    sleeping = run(people.alice, ["sleep", "30"], background=True, started=local_exec)
    operator(client)
    operator_page = page_of(client, people.alice.account)
    viewer(client)

    response = page_of(client, people.alice.account)
    page = response.content.decode()
    assert response.status_code == 200
    assert sleeping.pk in page and '<span class="state state-good">running</span>' in page
    assert buttons(response) == []
    assert 'class="button kill-command"' not in page and 'id="kill-command"' not in page
    assert offered_actions(client.get(LIVE)) == []
    assert offered_actions(client.get(COMMANDS)) == []

    # Posting the buttons' forms anyway changes nothing.
    press_stop(client, operator_page)
    press_kill(client, operator_page, sleeping)
    client.post(LIVE, {"action": "stop_selected_live_sandboxes", "_selected_action": [sandbox.pk]})
    client.post(COMMANDS, {"action": "kill_selected_commands", "_selected_action": [sleeping.pk]})
    assert status_of(LiveSandbox, sandbox.pk) == LiveSandbox.Status.RUNNING
    assert status_of(SandboxCommand, sleeping.pk) == SandboxCommand.Status.RUNNING
    assert not AuditEvent.objects.filter(action__in=[AuditEvent.Action.SANDBOX_STOPPED,
                                                     AuditEvent.Action.COMMAND_KILLED]).exists()


def test_an_operator_is_offered_stop_and_kill_on_the_lists(client, people, local_exec):
    operator(client)

    assert offered_actions(client.get(LIVE)) == ["stop_selected_live_sandboxes"]
    assert offered_actions(client.get(COMMANDS)) == ["kill_selected_commands"]


def test_live_sandboxes_and_commands_are_not_added_edited_or_deleted_here(admin_client, people, local_exec):
    sandbox = start(people.alice)
    record = run(people.alice, ["true"])

    assert admin_client.get(f"{LIVE}add/").status_code == 403
    assert admin_client.get(f"{COMMANDS}add/").status_code == 403
    assert admin_client.post(f"{LIVE}{sandbox.pk}/delete/").status_code == 403
    assert admin_client.post(f"{COMMANDS}{record.pk}/delete/").status_code == 403
    assert "delete_selected" not in offered_actions(admin_client.get(LIVE))
