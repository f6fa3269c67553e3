"""GET /api/audit: who reads which events, the filters, the pages and their cursors, what an event shows.

- alice (owner of Acme) reads the events of Acme's members and her own,
  never mallory's; bob (a plain member) only his own; an organization key of
  Acme those of Acme's members; sam (staff) every event, those of no account
  too.
- another organization's organization_id, or an account out of reach, is a
  403 with the same answer whether it exists or not.
- a walk through the pages while events are recorded returns every event
  that was there when it began, once each, newest first.
- a cursor this service did not make for these filters is a 400.
"""

import base64
import json
import re
import uuid
from datetime import timedelta
from urllib.parse import urlencode

import pytest
from django.core import signing
from django.utils import timezone

from accounts.audit import Actor, audit_record
from accounts.models import AuditEvent
from accounts.scopes import AUDIT_READ, SANDBOXES_READ
from accounts.services import api_key_create
from orgs.audit_trail import (
    ACCOUNT_DENIED_MESSAGE,
    CURSOR_SALT,
    ORGANIZATION_DENIED_MESSAGE,
    public_detail,
)
from tests.conftest import TESTS, requires_postgres

Action = AuditEvent.Action


def audit(api, key, **params):
    return api.call("get", "/api/audit", key=key, QUERY_STRING=urlencode(params))


def events_of(response) -> list[dict]:
    assert response.status_code == 200, response.content
    return response.json()["events"]


def accounts_seen(api, key, **params) -> set:
    return {event["account_id"] for event in events_of(audit(api, key, limit=200, **params))}


def record(person, action=Action.SANDBOX_RENEWED, **fields):
    return audit_record(action=action, actor=Actor(api_key=person.api_key), account=person.account, **fields)


@pytest.fixture
def trail(people):
    """An event of each person's sandbox, and one of no account (a cleanup)."""
    for person in (people.alice, people.carol, people.bob, people.dave, people.mallory, people.sam):
        record(person)
    audit_record(action=Action.CLEANUP, actor=Actor.command("scheduled cleanup of expired sandboxes"),
                 detail="Deleted 0 expired sandboxes")
    return people


def ids(*people) -> set:
    return {str(person.account.pk) for person in people}


# --- who reads what -----------------------------------------------------------------------


def test_an_owner_reads_the_events_of_every_member_of_her_organization(api, trail):
    p = trail
    assert accounts_seen(api, p.alice.key) == ids(p.alice, p.carol, p.bob, p.dave)


def test_an_admin_reads_the_events_of_every_member_too(api, trail):
    p = trail
    assert accounts_seen(api, p.carol.key) == ids(p.alice, p.carol, p.bob, p.dave)


def test_a_plain_member_reads_only_his_own_events(api, trail):
    assert accounts_seen(api, trail.bob.key) == ids(trail.bob)


def test_an_outsider_reads_nothing_of_acme(api, trail):
    assert accounts_seen(api, trail.mallory.key) == ids(trail.mallory)


def test_an_organization_key_reads_the_events_of_its_organizations_members(api, trail):
    p = trail
    key = p.organization_key(p.dave, p.globex)
    assert accounts_seen(api, key) == ids(p.dave)  # Globex has dave alone
    key = p.organization_key(p.bob, p.acme)
    assert accounts_seen(api, key) == ids(p.alice, p.carol, p.bob, p.dave)


def test_an_organization_key_reads_no_members_once_its_holder_left(api, trail):
    from orgs.models import Membership

    p = trail
    key = p.organization_key(p.bob, p.acme)
    Membership.objects.filter(account=p.bob.account, organization=p.acme).delete()
    assert accounts_seen(api, key) == ids(p.bob)


def test_a_staff_key_reads_every_event_those_of_no_account_too(api, trail):
    p = trail
    events = events_of(audit(api, p.sam.key, limit=200))
    assert {event["account_id"] for event in events} == ids(p.alice, p.carol, p.bob, p.dave, p.mallory, p.sam) | {
        None}
    assert AuditEvent.objects.count() == len(events)


def test_an_event_of_no_account_is_seen_by_staff_only(api, trail):
    for person in (trail.alice, trail.bob, trail.mallory):
        assert None not in accounts_seen(api, person.key)


# --- the account_id and organization_id filters ---------------------------------------------


def test_organization_id_of_her_own_organization_gives_its_members_events(api, trail):
    p = trail
    assert accounts_seen(api, p.alice.key, organization_id=p.acme.pk) == ids(p.alice, p.carol, p.bob, p.dave)


def test_organization_id_of_another_organization_is_a_403_the_same_whether_it_exists_or_not(api, trail):
    p = trail
    answers = [audit(api, p.alice.key, organization_id=organization) for organization in (p.evil.pk, uuid.uuid4())]
    for answer in answers:
        assert answer.status_code == 403
        assert answer.json() == {"status": "error", "error": ORGANIZATION_DENIED_MESSAGE}
    assert answers[0].content == answers[1].content


def test_a_plain_member_may_not_read_his_organization_by_organization_id(api, trail):
    assert audit(api, trail.bob.key, organization_id=trail.acme.pk).status_code == 403


def test_staff_reads_any_organization_by_organization_id(api, trail):
    p = trail
    assert accounts_seen(api, p.sam.key, organization_id=p.evil.pk) == ids(p.mallory)


def test_account_id_of_a_member_gives_that_members_events(api, trail):
    assert accounts_seen(api, trail.alice.key, account_id=trail.bob.account.pk) == ids(trail.bob)


def test_account_id_out_of_reach_is_a_403_the_same_whether_it_exists_or_not(api, trail):
    p = trail
    answers = [audit(api, p.alice.key, account_id=account) for account in (p.mallory.account.pk, uuid.uuid4())]
    for answer in answers:
        assert answer.status_code == 403
        assert answer.json() == {"status": "error", "error": ACCOUNT_DENIED_MESSAGE}
    assert audit(api, p.bob.key, account_id=p.alice.account.pk).status_code == 403


def test_account_id_outside_the_organization_named_is_empty(api, trail):
    p = trail
    assert accounts_seen(api, p.sam.key, account_id=p.bob.account.pk, organization_id=p.evil.pk) == set()


def test_action_since_and_until_filter(api, trail):
    p = trail
    assert {event["action"] for event in events_of(audit(api, p.alice.key, action=Action.SANDBOX_RENEWED))} == {
        Action.SANDBOX_RENEWED}
    old = record(p.bob, detail="old")
    AuditEvent.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=3))
    since = (timezone.now() - timedelta(days=1)).isoformat()
    assert old.pk not in {event["id"] for event in events_of(audit(api, p.alice.key, since=since))}
    assert [event["id"] for event in events_of(audit(api, p.alice.key, until=since))] == [old.pk]


@pytest.mark.parametrize("params", [
    {"action": "sandbox.exploded"}, {"since": "yesterday"}, {"account_id": "bob"}, {"limit": 201}, {"limit": 0},
    {"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, {"accountId": "x"},
])
def test_an_invalid_filter_is_a_400_naming_it(api, trail, params):
    answer = audit(api, trail.alice.key, **params)
    assert answer.status_code == 400, answer.content
    assert answer.json()["invalid_fields"]


def test_limit_defaults_to_50_and_goes_up_to_200(api, people):
    for _ in range(210):
        record(people.bob)
    assert len(events_of(audit(api, people.bob.key))) == 50
    assert len(events_of(audit(api, people.bob.key, limit=200))) == 200


# --- what an event shows ------------------------------------------------------------------


def test_an_event_shows_its_fields_with_the_moment_to_the_second_and_its_zone(api, people):
    event = audit_record(action=Action.RUN_FAILED, actor=Actor(api_key=people.bob.api_key), account=people.bob.account,
                         run_id="run_abc", outcome=AuditEvent.Outcome.FAILURE, detail="It failed")
    [shown] = events_of(audit(api, people.bob.key, action=Action.RUN_FAILED))
    assert shown == {
        "id": event.pk, "at": shown["at"], "action": "run.failed", "outcome": "failure",
        "actor": {"kind": "key", "name": people.bob.api_key.prefix + "…"},
        "account_id": str(people.bob.account.pk), "target": "run_abc", "detail": "It failed",
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d", shown["at"])


def test_the_actor_says_staff_user_command_and_schedule(api, people, django_user_model):
    staff = django_user_model.objects.create_user("stella", is_staff=True)
    for actor in (Actor(user=staff), Actor.command("cleanup_sandboxes"), Actor.command("scheduled reconcile"),
                  Actor.command("worker")):
        audit_record(action=Action.SANDBOX_REVOKED, actor=actor, account=people.bob.account)
    actors = [event["actor"] for event in events_of(audit(api, people.bob.key, action=Action.SANDBOX_REVOKED))]
    assert actors == [{"kind": "worker", "name": "worker"}, {"kind": "schedule", "name": "scheduled reconcile"},
                      {"kind": "command", "name": "cleanup_sandboxes"}, {"kind": "staff", "name": "stella"}]


@pytest.mark.parametrize("detail, shown", [
    ("Deleted file:///srv/sandbox/var/git/bob-1234.git", "Deleted file://…/bob-1234.git"),
    ("Could not write: [Errno 13] Permission denied: '/srv/sandbox/var/sandboxes/x/a.txt'",
     "Could not write: [Errno 13] Permission denied: '…/a.txt'"),
    ("in /home/service/var/git", "in …/git"),
    ("Webhook endpoint #1 (https://user:pw@hooks.example.com/in?token=s3cret) disabled",
     "Webhook endpoint #1 (https://hooks.example.com/in?…) disabled"),
    ("key sbx_" + "a" * 43 + " and whsec_" + "b" * 32, "key sbx_… and whsec_…"),
    ("Deleted https://github.com/acme/bob-1234 and snapshot snap_1", "Deleted https://github.com/acme/bob-1234 and "
                                                                      "snapshot snap_1"),
    ("Expires 2026-12-13T03:00:00+00:00", "Expires 2026-12-13T03:00:00+00:00"),
    ("scopes: sandboxes:read sandboxes:delete → sandboxes:read", "scopes: sandboxes:read sandboxes:delete → "
                                                                "sandboxes:read"),
])
def test_a_detail_never_shows_a_server_path_or_a_secret(detail, shown):
    assert public_detail(detail) == shown


def test_the_api_shows_the_detail_without_the_path(api, people):
    record(people.bob, action=Action.SANDBOX_DELETED, detail="Deleted file:///srv/var/git/bob.git")
    [event] = events_of(audit(api, people.bob.key, action=Action.SANDBOX_DELETED))
    assert event["detail"] == "Deleted file://…/bob.git"


# --- the scope ------------------------------------------------------------------------------


def test_a_key_without_audit_read_gets_a_403_naming_the_scope(api, people):
    _, key = api_key_create(account=people.alice.account, actor=TESTS, scopes=[SANDBOXES_READ])
    answer = audit(api, key)
    assert answer.status_code == 403
    assert answer.json() == {"status": "error", "error": "This key lacks the scope audit:read"}
    _, key = api_key_create(account=people.alice.account, actor=TESTS, scopes=[AUDIT_READ])
    assert audit(api, key).status_code == 200


# --- pages and cursors ------------------------------------------------------------------------


def walk(api, key, *, limit, between_pages=lambda: None, **filters) -> list[int]:
    seen, cursor = [], None
    while True:
        params = {**filters, "limit": limit, **({"cursor": cursor} if cursor else {})}
        answer = audit(api, key, **params)
        page = events_of(answer)
        assert len(page) <= limit
        seen += [event["id"] for event in page]
        cursor = answer.json()["next"]
        if cursor is None:
            return seen
        between_pages()


def test_a_walk_across_inserts_returns_every_event_of_its_start_once_newest_first(api, people):
    for number in range(95):
        record([people.alice, people.bob, people.carol][number % 3], detail=f"event {number}")
    # Events recorded at the same moment are told apart by their id.
    AuditEvent.objects.filter(pk__in=list(AuditEvent.objects.order_by("pk").values_list("pk", flat=True)[:30])) \
        .update(created_at=timezone.now() - timedelta(hours=1))
    expected = list(AuditEvent.objects.filter(account_ref__in=[p.account.pk for p in (
        people.alice, people.bob, people.carol, people.dave)]).order_by("-created_at", "-id").values_list("pk", flat=True))

    def insert():
        for person in (people.alice, people.bob, people.mallory):
            record(person, detail="while walking")

    seen = walk(api, people.alice.key, limit=7, between_pages=insert)
    assert len(seen) == len(set(seen))
    assert seen == expected
    # A new walk starts with the events recorded meanwhile (alice's and bob's; mallory's are out of reach).
    recorded_meanwhile = list(AuditEvent.objects.filter(detail="while walking", account_ref__in=[
        people.alice.account.pk, people.bob.account.pk]).order_by("-created_at", "-id").values_list("pk", flat=True))
    assert recorded_meanwhile
    assert walk(api, people.alice.key, limit=50) == recorded_meanwhile + expected


def test_the_last_page_has_no_next(api, people):
    answer = audit(api, people.bob.key, limit=200)
    assert answer.json()["next"] is None


def test_a_walk_with_filters_keeps_them(api, people):
    for _ in range(12):
        record(people.bob)
        record(people.bob, action=Action.SANDBOX_DELETED)
    seen = walk(api, people.alice.key, limit=5, action=Action.SANDBOX_DELETED, account_id=people.bob.account.pk)
    assert len(seen) == len(set(seen)) == 12
    assert set(AuditEvent.objects.filter(pk__in=seen).values_list("action", flat=True)) == {Action.SANDBOX_DELETED}


@pytest.fixture
def cursor(api, people):
    for _ in range(5):
        record(people.bob)
    answer = audit(api, people.bob.key, limit=2)
    return answer.json()["next"]


def hostile_cursors(real: str) -> dict:
    payload = signing.loads(real, salt=CURSOR_SALT)
    unsigned = base64.urlsafe_b64encode(json.dumps({**payload, "id": 10 ** 9}).encode()).decode()
    return {
        "truncated": real[:-5],
        "cut in the middle": real[: len(real) // 2],
        "a character changed": real[:3] + ("A" if real[3] != "A" else "B") + real[4:],
        "unsigned JSON": unsigned,
        "signed with another key": signing.dumps({**payload, "id": 10 ** 9}, key="not-our-secret", salt=CURSOR_SALT),
        "signed for another purpose": signing.dumps(payload, salt="another.salt"),
        "our signature on a bad position": signing.dumps({**payload, "at": "yesterday"}, salt=CURSOR_SALT),
        "empty-ish": "e30",
        "garbage": "'; DROP TABLE accounts_auditevent; --",
    }


@pytest.mark.parametrize("name", list(hostile_cursors(signing.dumps({"at": "x", "id": 1, "f": "x"},
                                                                      salt=CURSOR_SALT))))
def test_a_hostile_cursor_is_a_400(api, people, cursor, name):
    answer = audit(api, people.bob.key, limit=2, cursor=hostile_cursors(cursor)[name])
    assert answer.status_code == 400, answer.content
    assert answer.json()["invalid_fields"] == ["cursor"]


@pytest.mark.parametrize("other", [{"action": "key.created"}, {"account_id": "{bob}"}, {"since": "2020-01-01T00:00Z"}])
def test_a_cursor_of_other_filters_is_a_400(api, people, cursor, other):
    other = {name: value.format(bob=people.bob.account.pk) for name, value in other.items()}
    answer = audit(api, people.bob.key, limit=2, cursor=cursor, **other)
    assert answer.status_code == 400
    assert "other filters" in answer.json()["error"]


def test_the_same_cursor_with_the_same_filters_and_another_limit_goes_on(api, people, cursor):
    assert audit(api, people.bob.key, limit=3, cursor=cursor).status_code == 200


def test_a_cursor_does_not_widen_what_a_key_sees(api, people, cursor):
    """A cursor is a position, not a permission: another key with it sees only its own reach."""
    for _ in range(3):
        record(people.mallory)
    seen = {event["account_id"] for event in events_of(audit(api, people.mallory.key, limit=2, cursor=cursor))}
    assert seen <= ids(people.mallory)


# --- the cost of a page -----------------------------------------------------------------------


@pytest.mark.parametrize("who, filters", [
    ("alice", {}), ("alice", {"organization_id": "acme"}), ("alice", {"account_id": "bob"}), ("bob", {}),
    ("sam", {}), ("sam", {"organization_id": "acme"}),
])
def test_a_page_costs_three_queries(api, trail, django_assert_num_queries, who, filters):
    """The key (with its account), the memberships that decide the reach, the events."""
    key = getattr(trail, who).key
    filters = {name: trail.acme.pk if value == "acme" else trail.bob.account.pk for name, value in filters.items()}
    audit(api, key)  # the key's first use writes last_used_at
    cursor = audit(api, key, limit=2, **filters).json()["next"]
    with django_assert_num_queries(3):
        answer = audit(api, key, limit=2, cursor=cursor, **filters)
    assert answer.status_code == 200, answer.content


@requires_postgres
def test_a_page_of_an_owner_costs_three_queries_on_postgresql(api, trail, django_assert_num_queries):
    audit(api, trail.alice.key)
    cursor = audit(api, trail.alice.key, limit=2).json()["next"]
    with django_assert_num_queries(3):
        answer = audit(api, trail.alice.key, limit=2, cursor=cursor)
    assert answer.status_code == 200
    with django_assert_num_queries(3):
        assert audit(api, trail.alice.key, organization_id=trail.acme.pk).status_code == 200


@requires_postgres
def test_the_walk_is_served_by_the_indexes_on_postgresql(trail):
    """With the planner's sequential scans off, the page query of one account and of all runs on our indexes.

    The plans at 1,000,000 events are bench/api.py's (--audit-events).
    """
    from django.db import connection

    from orgs.audit_trail import visible_events

    sam_key, bob_key = trail.sam.api_key, trail.bob.api_key
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        for key in (sam_key, bob_key):
            events = visible_events(key=key, filters={})[:51]
            plan = "\n".join(row[0] for row in _explain(cursor, events))
            assert "audit_walk" in plan or "audit_account_recent" in plan, plan
            # A few rows of one account may be fetched by a bitmap scan and sorted: never the whole table.
            assert "Seq Scan" not in plan, plan


def _explain(cursor, queryset):
    sql, params = queryset.query.sql_with_params()
    cursor.execute("EXPLAIN " + sql, params)
    return cursor.fetchall()

