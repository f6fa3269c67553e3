"""Staff kill a running command and stop a live sandbox from the account's page, in a real browser.

Headless Chromium at 1400×1000, as a staff user holding only the permissions
the task needs: the account's page shows the live sandbox running and the
command running, with its Kill button inside the window; Kill (a button in the
page's own form that submits another, by its `form` attribute) kills that
command and comes back to the page; Stop live sandbox stops it with a
snapshot and comes back, saying "stopped (by staff)". The value of the
command's environment is never on the page.
"""

import os
import signal
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from accounts.audit import Actor
from sandboxes.live import command_run, live_sandbox_start
from sandboxes.models import LiveSandbox, SandboxCommand, Snapshot
from tests.browser.test_back_office import WIDTH, log_in, wait_for
from tests.staff import make_staff

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

LOOK = ["accounts.view_account", "sandboxes.view_livesandbox", "sandboxes.view_sandboxcommand"]
ACT = ["sandboxes.stop_livesandbox", "sandboxes.kill_sandboxcommand"]
SECRET = "s3cr3t-value-never-shown-7a1c"


def test_staff_kill_a_command_and_stop_the_live_sandbox_from_the_account_page(browser, people, settings):
    settings.SANDBOX_BACKEND, settings.SANDBOX_LOCAL_EXEC = "local", "unsafe"
    make_staff("operator", LOOK + ACT)
    actor = Actor(api_key=people.alice.api_key)
    sandbox = live_sandbox_start(account=people.alice.account, actor=actor)
    record = command_run(account=people.alice.account, actor=actor, command="sleep", args=["30"], cwd="",
                         env={"API_TOKEN": SECRET}, timeout_ms=60_000, background=True)
    driver = browser.driver
    try:
        log_in(browser, "operator")
        browser.visit(f"/admin/accounts/account/{people.alice.account.pk}/change/")
        kill = wait_for(browser, f"#kill-{record.pk}")
        browser.snap("account-page")
        assert driver.execute_script("return window.innerWidth") == WIDTH
        assert driver.execute_script("return arguments[0].getBoundingClientRect().right", kill) <= \
            driver.execute_script("return document.documentElement.clientWidth"), "Kill is inside the window"
        assert "running" in driver.find_element(By.CSS_SELECTOR, ".field-live_sandbox").text
        assert SECRET not in driver.page_source

        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", kill)
        browser.snap("commands")
        kill.click()
        message = wait_for(browser, "ul.messagelist li.success")
        browser.snap("killed")
        assert message.text == f"Killed command {record.pk} (sleep 30) of {people.alice.account}."
        assert driver.find_elements(By.ID, f"kill-{record.pk}") == []
        assert SandboxCommand.objects.get(pk=record.pk).status == SandboxCommand.Status.KILLED

        driver.find_element(By.CSS_SELECTOR, "#page-action-stop_selected_live_sandboxes button").click()
        WebDriverWait(driver, 30).until(expected_conditions.staleness_of(message))  # the page after the stop
        wait_for(browser, "ul.messagelist li.success")
        browser.snap("stopped")
        snapshot = Snapshot.objects.get(account=people.alice.account)
        assert driver.find_element(By.CSS_SELECTOR, "ul.messagelist li.success").text == (
            f"Stopped sandbox {sandbox.pk} of {people.alice.account}: snapshot {snapshot.snapshot_id} taken.")
        assert "stopped (by staff)" in driver.find_element(By.CSS_SELECTOR, ".field-live_sandbox").text
        assert LiveSandbox.objects.get(pk=sandbox.pk).stop_reason == LiveSandbox.StopReason.STAFF
    finally:
        # Where the test failed before Kill: the local backend's stop removes the sandbox's folder, not its processes.
        for pid_file in Path(settings.SANDBOX_ROOT).rglob(f"{record.pk}.pid"):
            try:
                os.killpg(int(pid_file.read_text()), signal.SIGKILL)
            except (ProcessLookupError, PermissionError, ValueError):
                pass
