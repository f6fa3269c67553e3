"""A staff user revokes a sandbox in a real browser (headless Chromium), the way they would by hand.

Log in to the admin, find the account's sandbox by email, choose "Revoke
selected sandboxes", read the confirmation page, confirm, read the success
message; then the repository is gone from the git host, the snapshot archive
from the backend and the row from the list, while another account's sandbox
is untouched.
"""

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.ui import WebDriverWait

from sandboxes.models import SetupRun, Snapshot
from tests.sandboxes.test_delete import repository_name, repository_path, snapshot_files
from tests.staff import ACTION_PERMISSIONS, PASSWORD, VIEW_PERMISSIONS, make_staff

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def set_up(api, person, run_queued_setups) -> Snapshot:
    assert api.setup(person.key).status_code == 200
    [run] = run_queued_setups()
    assert run.status == SetupRun.Status.COMPLETED, run.error
    return Snapshot.objects.get(account=person.account)


def wait_for(browser, selector: str, timeout: float = 10):
    return WebDriverWait(browser.driver, timeout).until(
        expected_conditions.presence_of_element_located((By.CSS_SELECTOR, selector))
    )


def test_staff_revokes_a_sandbox_through_the_confirmation_page(browser, people, api, run_queued_setups):
    make_staff("operator", VIEW_PERMISSIONS + ACTION_PERMISSIONS)
    alices = set_up(api, people.alice, run_queued_setups)
    bobs = set_up(api, people.bob, run_queued_setups)
    account = people.alice.account
    driver = browser.driver

    # Log in.
    browser.visit("/admin/login/?next=/admin/sandboxes/snapshot/")
    wait_for(browser, "#id_username").send_keys("operator")
    driver.find_element(By.ID, "id_password").send_keys(PASSWORD)
    browser.snap("login")
    driver.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    wait_for(browser, "#result_list")
    browser.snap("sandboxes")

    # Find Alice's sandbox.
    search = driver.find_element(By.ID, "searchbar")
    search.send_keys("alice@example.com", Keys.ENTER)
    WebDriverWait(driver, 10).until(lambda d: "q=alice" in d.current_url)
    rows = driver.find_elements(By.CSS_SELECTOR, "#result_list tbody tr")
    browser.snap("search")
    assert len(rows) == 1
    assert "alice@example.com" in rows[0].text and "valid" in rows[0].text
    assert "bob@example.com" not in driver.find_element(By.ID, "result_list").text

    # Choose the action.
    rows[0].find_element(By.CSS_SELECTOR, "input.action-select").click()
    Select(driver.find_element(By.NAME, "action")).select_by_visible_text("Revoke selected sandboxes")
    driver.find_element(By.CSS_SELECTOR, "button[name=index]").click()

    # The confirmation page says exactly what goes.
    wait_for(browser, "#revoke-plan")
    browser.snap("confirmation")
    assert driver.find_element(By.CSS_SELECTOR, "h1").text == "Revoke sandboxes"
    assert [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".revoke-snapshot")] == [alices.snapshot_id]
    assert [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".revoke-repository")] == [repository_name(account)]
    assert repository_path(account).is_dir()  # nothing happened yet
    driver.find_element(By.CSS_SELECTOR, "input[type=submit][value='Yes, revoke these sandboxes']").click()

    # The success message, and the row is gone from the list.
    message = wait_for(browser, "ul.messagelist li.success")
    browser.snap("revoked")
    assert message.text.startswith(f"Revoked the sandbox of {account}: deleted snapshot {alices.snapshot_id}")
    assert driver.find_elements(By.CSS_SELECTOR, "ul.messagelist li.error") == []
    assert "alice@example.com" not in driver.find_element(By.ID, "changelist-form").text

    # Really gone: the repository from the git host, the archive from the backend, the row.
    assert not repository_path(account).exists()
    assert not any(path.exists() for path in snapshot_files(alices.snapshot_id))
    assert not Snapshot.objects.filter(account=account).exists()

    # Bob's sandbox is still listed, and still there.
    browser.visit("/admin/sandboxes/snapshot/")
    wait_for(browser, "#result_list")
    browser.snap("all-sandboxes")
    listed = driver.find_element(By.ID, "result_list").text
    assert "bob@example.com" in listed and "alice@example.com" not in listed
    assert bobs.snapshot_id in driver.page_source  # in the row checkbox's label
    assert repository_path(people.bob.account).is_dir()
