"""Staff answer "what is the state of this person's sandbox, and what do I do?" in a real browser.

Headless Chromium at 1400×1000 with the admin's sidebar open, as a staff user
holding only the permissions the task needs:
- from the front page, find an account by email in two steps (search, open);
- read its sandbox state, expiry (to the second, with the time zone) and its
  last failure on the account page;
- revoke its sandbox from that page, through the confirmation page, and land
  back on the page, which then says "no sandbox";
- on the account, sandbox and run lists, the columns staff decide by end left
  of the window's right edge, and the page does not scroll sideways;
- a staff user without the revoke permission sees no Revoke sandbox button,
  and posting the action anyway changes nothing.

Every page visited is written to test-artifacts/browser/<test name>/.
"""


import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from accounts.audit import Actor
from accounts.services import account_create, api_key_create
from config.timefmt import format_moment
from sandboxes.models import SetupRun, Snapshot
from tests.sandboxes.local_git import git_root_blocked
from tests.sandboxes.test_delete import repository_path
from tests.staff import PASSWORD, make_staff

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

WIDTH, HEIGHT = 1400, 1000
# The task's permissions: look at accounts, sandboxes and runs; revoke sandboxes.
LOOK = ["accounts.view_account", "sandboxes.view_snapshot", "sandboxes.view_setuprun"]
REVOKE = ["sandboxes.revoke_snapshot"]
COLUMNS = {
    "/admin/accounts/account/": ["person", "email", "organizations", "sandbox", "expires", "last_run_status"],
    "/admin/sandboxes/snapshot/": ["account", "state", "expires", "repository"],
    "/admin/sandboxes/setuprun/": ["account", "state", "failed_step", "error_summary", "created", "duration"],
}


def wait_for(browser, selector: str, timeout: float = 10):
    return WebDriverWait(browser.driver, timeout).until(
        expected_conditions.presence_of_element_located((By.CSS_SELECTOR, selector))
    )


def log_in(browser, username: str) -> None:
    browser.visit("/admin/login/?next=/admin/")
    wait_for(browser, "#id_username").send_keys(username)
    browser.driver.find_element(By.ID, "id_password").send_keys(PASSWORD)
    browser.driver.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    wait_for(browser, "#content-main")


def set_up(api, key, run_queued_setups) -> SetupRun:
    assert api.setup(key).status_code == 200
    [run] = run_queued_setups()
    return run


def fail_a_setup(api, key, run_queued_setups) -> SetupRun:
    """A real failure at "Creating the repository"."""
    with git_root_blocked():
        run = set_up(api, key, run_queued_setups)
    assert run.status == SetupRun.Status.FAILED
    return run


@pytest.fixture
def sandboxes(people, api, run_queued_setups):
    """Alice: a failed setup, then a valid sandbox. Others fill the lists, one with a long name and email."""
    failure = fail_a_setup(api, people.alice.key, run_queued_setups)
    assert set_up(api, people.alice.key, run_queued_setups).status == SetupRun.Status.COMPLETED
    long = account_create(name="Maximiliana Featherstonehaugh-Cholmondeley",
                          email="maximiliana.featherstonehaugh@example-corporation.com")
    long_key = api_key_create(account=long, actor=Actor.command("tests"))[1]
    for key in (people.bob.key, people.carol.key, long_key):
        set_up(api, key, run_queued_setups)
    api.setup(people.dave.key)  # stays queued
    return failure


def assert_columns_fit(browser, path: str) -> None:
    browser.visit(path)
    wait_for(browser, "#result_list")
    browser.snap(path.strip("/").replace("/", "-"))
    driver = browser.driver
    assert driver.execute_script("return window.innerWidth") == WIDTH
    assert driver.find_element(By.ID, "nav-sidebar").is_displayed(), "the sidebar is open"
    inner_width = driver.execute_script("return document.documentElement.clientWidth")
    for column in COLUMNS[path]:
        cells = driver.find_elements(By.CSS_SELECTOR, f"#result_list .column-{column}, #result_list .field-{column}")
        assert len(cells) >= 2, f"{path}: no column {column}"
        right = max(driver.execute_script("return arguments[0].getBoundingClientRect().right", cell) for cell in cells)
        assert right <= inner_width, (
            f"{path}: column {column} ends at {right}px, the window at {inner_width}px; columns: "
            + ", ".join(f"{th.get_attribute('class')} {th.rect['width']:.0f}px"
                        for th in driver.find_elements(By.CSS_SELECTOR, "#result_list thead th"))
        )
    assert driver.execute_script("return document.documentElement.scrollWidth") <= inner_width, (
        f"{path} scrolls sideways"
    )


def test_staff_find_an_account_read_its_state_and_revoke_its_sandbox(browser, people, sandboxes):
    make_staff("operator", LOOK + REVOKE)
    account = people.alice.account
    snapshot = Snapshot.objects.get(account=account)
    driver = browser.driver
    log_in(browser, "operator")
    browser.snap("front-page")
    assert "Sandbox service back office" in driver.title

    # Two steps from the front page: search by email, open the account.
    driver.find_element(By.ID, "find-account-q").send_keys("alice@example.com")
    driver.find_element(By.CSS_SELECTOR, "#find-account input[type=submit]").click()
    rows = WebDriverWait(driver, 10).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "#result_list tbody tr") if "q=alice" in d.current_url else None
    )
    browser.snap("account-search")
    assert len(rows) == 1
    rows[0].find_element(By.CSS_SELECTOR, "th.field-person a").click()
    wait_for(browser, "#account-runs")
    browser.snap("account-page")

    # The state, the expiry and the last failure, on the page.
    assert driver.find_element(By.CSS_SELECTOR, ".field-sandbox_state .readonly").text == "valid"
    expires = driver.find_element(By.CSS_SELECTOR, ".field-expires .readonly").text
    assert expires == format_moment(snapshot.expires_at) and expires.endswith(" UTC")
    runs = driver.find_elements(By.CSS_SELECTOR, "#account-runs tr.account-run")
    assert [row.find_elements(By.TAG_NAME, "td")[2].text for row in runs] == ["completed", "failed"]
    failed_cells = [cell.text for cell in runs[1].find_elements(By.TAG_NAME, "td")]
    assert failed_cells[3] == "ensure_repository"
    assert failed_cells[5].startswith("Creating the repository failed")

    # Revoke from the page, through the confirmation page.
    driver.find_element(By.CSS_SELECTOR, "#page-action-revoke_selected_sandboxes button").click()
    wait_for(browser, "#revoke-plan")
    browser.snap("revoke-confirmation")
    assert driver.find_element(By.CSS_SELECTOR, "h1").text == "Revoke sandboxes"
    assert [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".revoke-snapshot")] == [snapshot.snapshot_id]
    assert format_moment(snapshot.expires_at) in driver.find_element(By.ID, "revoke-plan").text
    assert Snapshot.objects.filter(pk=snapshot.pk).exists()
    driver.find_element(By.CSS_SELECTOR, "input[type=submit][value='Yes, revoke these sandboxes']").click()

    message = wait_for(browser, "ul.messagelist li.success")
    browser.snap("revoked")
    assert message.text.startswith(f"Revoked the sandbox of {account}: deleted snapshot {snapshot.snapshot_id}")
    assert driver.find_element(By.CSS_SELECTOR, ".field-sandbox_state .readonly").text == "no sandbox"
    assert not Snapshot.objects.filter(account=account).exists()
    assert not repository_path(account).exists()
    assert Snapshot.objects.filter(account=people.bob.account).exists()


def test_the_deciding_columns_fit_the_window_with_the_sidebar_open(browser, sandboxes):
    make_staff("operator", LOOK + REVOKE)
    log_in(browser, "operator")

    for path in COLUMNS:
        assert_columns_fit(browser, path)


def test_staff_without_the_revoke_permission_get_no_button_and_are_refused(browser, people, sandboxes):
    make_staff("viewer", LOOK)
    account = people.alice.account
    driver = browser.driver
    log_in(browser, "viewer")

    browser.visit(f"/admin/accounts/account/{account.pk}/change/")
    wait_for(browser, "#account-runs")
    browser.snap("account-page-without-revoke")
    assert driver.find_elements(By.CSS_SELECTOR, "#page-action-revoke_selected_sandboxes") == []
    assert driver.find_element(By.CSS_SELECTOR, ".field-sandbox_state .readonly").text == "valid"

    # Post the action anyway, from the page, with the session's CSRF token.
    driver.execute_script(
        """
        const form = document.createElement("form");
        form.method = "post";
        form.action = "/admin/sandboxes/snapshot/";
        const token = document.cookie.split("; ").find(c => c.startsWith("csrftoken=")).split("=")[1];
        const fields = {csrfmiddlewaretoken: token, action: "revoke_selected_sandboxes",
                        _selected_action: arguments[0], post: "yes", next: location.pathname};
        for (const [name, value] of Object.entries(fields)) {
            const input = document.createElement("input");
            input.type = "hidden"; input.name = name; input.value = value;
            form.appendChild(input);
        }
        document.body.appendChild(form);
        form.submit();
        """,
        str(account.pk),
    )
    WebDriverWait(driver, 10).until(lambda d: "/admin/sandboxes/snapshot/" in d.current_url)
    wait_for(browser, "#result_list")
    browser.snap("forged-revoke")
    assert driver.find_elements(By.CSS_SELECTOR, "ul.messagelist li.success") == []
    assert Snapshot.objects.filter(account=account).exists()
    assert repository_path(account).is_dir()


def test_staff_deactivate_an_account_and_read_it_in_its_audit_trail(browser, people, sandboxes):
    make_staff("operator", LOOK + ["accounts.deactivate_account", "accounts.view_auditevent"])
    account = people.alice.account
    snapshot = Snapshot.objects.get(account=account)
    driver = browser.driver
    log_in(browser, "operator")

    browser.visit(f"/admin/accounts/account/{account.pk}/change/")
    wait_for(browser, "#account-runs")
    assert [e.get_attribute("id") for e in driver.find_elements(By.CSS_SELECTOR, "form.page-action")] == [
        "page-action-deactivate_accounts"
    ]
    driver.find_element(By.CSS_SELECTOR, "#page-action-deactivate_accounts button").click()
    wait_for(browser, "#deactivate-keys")
    browser.snap("deactivate-confirmation")
    assert [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".revoke-snapshot")] == [snapshot.snapshot_id]
    assert [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".deactivate-key")] == [
        f"{people.alice.api_key.prefix}…"
    ]
    driver.find_element(By.CSS_SELECTOR, "input[type=submit][value='Yes, deactivate']").click()

    message = wait_for(browser, "ul.messagelist li.success")
    browser.snap("deactivated")
    assert message.text.startswith(f"Deactivated {account}: 1 key(s) revoked, deleted snapshot")
    assert driver.find_element(By.CSS_SELECTOR, ".field-state .readonly").text == "inactive"
    assert driver.find_element(By.CSS_SELECTOR, ".field-sandbox_state .readonly").text == "no sandbox"

    driver.find_element(By.LINK_TEXT, "Events of this account").click()
    wait_for(browser, "#result_list")
    browser.snap("audit-trail")
    actions = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#result_list td.field-action")]
    assert {"Account deactivated by staff", "Sandbox revoked by staff", "API key revoked"} <= set(actions)
    details = driver.find_element(By.ID, "result_list").text
    assert "Deactivated: marked inactive; 1 key(s) revoked; sandbox revoked" in details
    assert "staff user operator" in details
