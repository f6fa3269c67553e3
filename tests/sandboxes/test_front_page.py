"""The back office's front page (the admin index) and the setup run list's columns.

What is pinned:
- the site is named after the service;
- the front page lists the runs failed in the last 24 hours (not older ones),
  the runs queued or executing longest first, the sandboxes expiring within
  24 hours, and counts by state; each heading and count links to the list
  filtered the same way, which holds the same rows;
- a staff user who may not see runs and sandboxes gets no front page;
- the run list shows status in words, the failed step, a summary of the
  error and the duration.
"""

import re
from datetime import timedelta
from html import unescape

import pytest
from django.utils import timezone

from config.admin_links import admin_change_url
from sandboxes.models import SetupRun, Snapshot
from tests.sandboxes.seeded_sandboxes import seed_sandbox
from tests.staff import make_staff

pytestmark = pytest.mark.django_db

RUNS = "/admin/sandboxes/setuprun/"


def failed_run(account, *, hours_ago: float, step="provision", error="Provisioning the sandbox failed: push refused"):
    created = timezone.now() - timedelta(hours=hours_ago)
    return SetupRun.objects.create(
        account=account, status=SetupRun.Status.FAILED, created_at=created, started_at=created,
        finished_at=created + timedelta(seconds=42), error=error, current_step=step,
        steps=[{"name": "create_sandbox", "ok": True}, {"name": step, "ok": False, "detail": error}],
    )


def waiting_run(account, *, minutes_ago: float, status=SetupRun.Status.QUEUED):
    created = timezone.now() - timedelta(minutes=minutes_ago)
    started = created if status == SetupRun.Status.EXECUTING else None
    return SetupRun.objects.create(account=account, status=status, created_at=created, started_at=started)


def section(page: str, section_id: str) -> str:
    start = page.index(f'id="{section_id}"')
    return page[start:page.index("</div>", start)]


def heading_link(part: str) -> str:
    return unescape(re.search(r'<h2><a href="([^"]+)"', part).group(1))


def listed(client, url) -> list:
    return [row.pk for row in client.get(url).context["cl"].result_list]


def test_the_site_is_named_after_the_service(admin_client):
    page = admin_client.get("/admin/").content.decode()

    assert "<title>What needs attention | Sandbox service back office</title>" in page
    assert 'id="site-name"><a href="/admin/">Sandbox service back office</a>' in page


def test_the_front_page_lists_failed_waiting_and_expiring_and_links_to_the_same_lists(admin_client, people):
    recent = failed_run(people.alice.account, hours_ago=2)
    failed_run(people.bob.account, hours_ago=30)  # older than 24 hours
    newest_waiting = waiting_run(people.carol.account, minutes_ago=1)
    oldest_waiting = waiting_run(people.dave.account, minutes_ago=50, status=SetupRun.Status.EXECUTING)
    soon = seed_sandbox(people.alice.account, expires_in=timedelta(hours=5))
    seed_sandbox(people.bob.account, expires_in=timedelta(days=5))
    seed_sandbox(people.carol.account, expires_in=-timedelta(hours=1))

    page = admin_client.get("/admin/").content.decode()

    failed = section(page, "failed-runs")
    assert "failed in the last 24 hours: 1" in failed
    assert admin_change_url(SetupRun, recent.pk) in failed and "provision" in failed and "push refused" in failed
    assert listed(admin_client, heading_link(failed)) == [recent.pk]

    waiting = section(page, "waiting-runs")
    assert waiting.index(oldest_waiting.pk[:10]) < waiting.index(newest_waiting.pk[:10])
    assert "executing" in waiting and "queued" in waiting
    assert listed(admin_client, heading_link(waiting)) == [oldest_waiting.pk, newest_waiting.pk]

    expiring = section(page, "expiring-sandboxes")
    assert "expiring in the next 24 hours: 1" in expiring and "alice@example.com" in expiring
    assert listed(admin_client, heading_link(expiring)) == [soon.pk]

    counts = section(page, "state-counts")
    links = dict(re.findall(r'class="count-([a-z]+)">.*?</span> (\d+)</a>', counts))
    assert links == {"valid": "2", "expired": "1", "queued": "1", "executing": "1", "completed": "0",
                     "failed": "2", "canceled": "0"}
    failed_url = unescape(re.search(r'<a href="([^"]+)" class="count-failed"', counts).group(1))
    assert len(listed(admin_client, failed_url)) == 2
    assert Snapshot.objects.count() == 3


def test_staff_who_may_not_see_runs_get_no_front_page_but_can_find_accounts(client, people):
    failed_run(people.alice.account, hours_ago=1)
    client.force_login(make_staff("accounts-only", ["accounts.view_account"]))

    page = client.get("/admin/").content.decode()

    assert 'id="failed-runs"' not in page
    assert 'id="find-account"' in page


def test_the_run_list_shows_status_in_words_failed_step_error_and_duration(admin_client, people):
    long_error = "Provisioning the sandbox failed: " + "the remote hung up unexpectedly " * 5
    failed_run(people.alice.account, hours_ago=1, error=long_error)

    page = admin_client.get(RUNS).content.decode()

    assert '<td class="field-state"><span class="state state-bad">failed</span></td>' in page
    assert '<td class="field-failed_step">provision</td>' in page
    error_cell = re.search(r'<td class="field-error_summary"><span title="([^"]*)">([^<]*)</span>', page)
    assert unescape(error_cell.group(1)) == long_error
    assert len(error_cell.group(2)) < 70 and error_cell.group(2).endswith("…")
    assert '<td class="field-duration">42 s</td>' in page
