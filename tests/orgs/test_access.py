"""Who may act on which account (DESIGN.md, "Who may act on which account"; orgs/access.py).

The rules are written once, in PAIRS below: each rule that allows something
stands next to the rule that denies its nearest neighbour. Every pair is
checked on each endpoint that takes a target account:

- POST   /api/sandboxes/setup          {"account_id": ...}
- DELETE /api/sandboxes                {"account_id": ...}
- GET    /api/tasks/runs?account_id=...
- GET    /api/tasks/runs?runId=...     (a run of an unreachable account is a 404,
                                        exactly like a run id that does not exist)

and on orgs.access itself (reachable_accounts, may_act_on_account). A denied
request answers 403 {"status": "error", "error": "Access denied to specified
account_id"}, the same for an account that does not exist, and changes
nothing: no run is queued, no snapshot is deleted, no run is canceled.

Callers are written "alice" for Alice's personal key and "bob/acme" for an
organization key of Acme issued to Bob (see the personas in tests/conftest.py).
"""

import uuid
from dataclasses import dataclass
from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.keys import hash_key
from accounts.models import Account, ApiKey
from orgs.access import ACCESS_DENIED_MESSAGE, may_act_on_account, reachable_accounts
from orgs.models import Membership
from orgs.services import membership_set
from sandboxes.models import SetupRun, Snapshot
from tests.conftest import TESTS

ACCESS_DENIED = {"status": "error", "error": ACCESS_DENIED_MESSAGE}
NOBODY = "nobody"  # an account id that does not exist


@dataclass(frozen=True)
class Rule:
    name: str
    caller: str
    target: str
    allowed: bool


def allow(name, caller, target):
    return Rule(name, caller, target, allowed=True)


def deny(name, caller, target):
    return Rule(name, caller, target, allowed=False)


PAIRS = [
    # Every key may act on its own account; a plain member on no one else's.
    (
        allow("member may act on own account", "bob", "bob"),
        deny("member cannot act on another member", "bob", "dave"),
    ),
    (
        allow("outsider may act on own account", "mallory", "mallory"),
        deny("outsider cannot act on a member of another organization", "mallory", "bob"),
    ),
    # Owners and admins reach the members of their organizations, and no further.
    (
        allow("owner may act on a member of her organization", "alice", "bob"),
        deny("owner cannot act on someone outside her organizations", "alice", "mallory"),
    ),
    (
        allow("admin may act on a member of her organization", "carol", "bob"),
        deny("member cannot act on the admin of his organization", "bob", "carol"),
    ),
    (
        allow("admin may act on the owner of her organization", "carol", "alice"),
        deny("member cannot act on the owner of his organization", "bob", "alice"),
    ),
    (
        allow("owner may act on a member of two organizations", "alice", "dave"),
        deny("member of two organizations cannot act on a fellow member", "dave", "bob"),
    ),
    (
        allow("owner may act on own account", "alice", "alice"),
        deny("owner of another organization cannot act on an owner elsewhere", "mallory", "alice"),
    ),
    # Members of a staff organization reach everyone; being an owner does not make one staff.
    (
        allow("staff member may act on an outsider", "sam", "mallory"),
        deny("owner of an ordinary organization cannot act on a staff member", "alice", "sam"),
    ),
    (
        allow("staff member may act on an owner", "sam", "alice"),
        deny("staff member cannot act on an account that does not exist", "sam", NOBODY),
    ),
    # Organization keys reach the members of their organization only.
    (
        allow("organization key may act on a member of its organization", "bob/acme", "alice"),
        deny("organization key cannot act on an outsider", "bob/acme", "mallory"),
    ),
    (
        allow("organization key may act on its own account", "dave/globex", "dave"),
        deny(
            "organization key cannot act on its holders other organizations", "dave/globex", "bob"
        ),
    ),
    (
        allow("staff members organization key may act on any account", "sam/staff_org", "mallory"),
        deny(
            "outsiders organization key cannot act on an owner elsewhere", "mallory/evil", "alice"
        ),
    ),
    # An account that does not exist is refused exactly like one that is out of reach.
    (
        allow("owner may act on the admin of her organization", "alice", "carol"),
        deny("owner cannot act on an account that does not exist", "alice", NOBODY),
    ),
    (
        allow("organization key may act on another member of its organization", "bob/acme", "dave"),
        deny("organization key cannot act on an account that does not exist", "bob/acme", NOBODY),
    ),
]


def _params(allowed: bool):
    return [
        pytest.param(rule, id=rule.name.replace(" ", "_"))
        for pair in PAIRS
        for rule in pair
        if rule.allowed is allowed
    ]


ALLOWED = _params(True)
DENIED = _params(False)


def caller_key(people, caller: str) -> str:
    """The raw key of "alice" (her personal key) or "bob/acme" (an Acme key held by Bob)."""
    person_name, _, organization_name = caller.partition("/")
    person = getattr(people, person_name)
    if not organization_name:
        return person.key
    return people.organization_key(person, getattr(people, organization_name))


def caller_api_key(people, caller: str) -> ApiKey:
    return ApiKey.objects.select_related("account").get(
        key_hash=hash_key(caller_key(people, caller))
    )


def target_id(people, target: str) -> uuid.UUID:
    if target == NOBODY:
        return uuid.uuid4()
    return getattr(people, target).account.pk


def assert_access_denied(response):
    assert response.status_code == 403, response.content
    assert response.json() == ACCESS_DENIED


def give_every_account_a_snapshot_and_a_queued_run():
    for account in Account.objects.all():
        Snapshot.objects.create(
            account=account,
            snapshot_id="snap_" + uuid.uuid4().hex,
            expires_at=timezone.now() + timedelta(days=7),
        )
        SetupRun.objects.create(account=account)


def snapshot_ids():
    return set(Snapshot.objects.values_list("snapshot_id", flat=True))


def run_statuses():
    return dict(SetupRun.objects.values_list("pk", "status"))


# --- POST /api/sandboxes/setup ----------------------------------------------------------------


@pytest.mark.parametrize("rule", ALLOWED)
def test_setup_for_a_reachable_account_queues_a_run_for_that_account(people, api, rule):
    target = target_id(people, rule.target)

    response = api.setup(caller_key(people, rule.caller), {"account_id": str(target)})

    assert response.status_code == 200, response.json()
    run = SetupRun.objects.get(pk=response.json()["runId"])
    assert run.account_id == target
    assert SetupRun.objects.count() == 1


@pytest.mark.parametrize("rule", DENIED)
def test_setup_for_an_unreachable_account_is_denied_and_queues_nothing(people, api, rule):
    response = api.setup(
        caller_key(people, rule.caller), {"account_id": str(target_id(people, rule.target))}
    )

    assert_access_denied(response)
    assert not SetupRun.objects.exists()  # neither for the target nor, by mistake, for the caller


def test_member_cannot_set_up_another_members_sandbox(people, api):
    response = api.setup(people.bob.key, {"account_id": str(people.dave.account.pk)})

    assert_access_denied(response)
    assert not SetupRun.objects.filter(account=people.dave.account).exists()


def test_owner_may_set_up_a_members_sandbox(people, api):
    response = api.setup(people.alice.key, {"account_id": str(people.bob.account.pk)})

    assert response.status_code == 200
    assert SetupRun.objects.get(pk=response.json()["runId"]).account == people.bob.account


# --- DELETE /api/sandboxes --------------------------------------------------------------------


@pytest.mark.parametrize("rule", ALLOWED)
def test_delete_for_a_reachable_account_removes_that_accounts_snapshot_only(people, api, rule):
    give_every_account_a_snapshot_and_a_queued_run()
    target = target_id(people, rule.target)
    target_snapshot = Snapshot.objects.get(account_id=target)
    others = snapshot_ids() - {target_snapshot.snapshot_id}

    response = api.delete(caller_key(people, rule.caller), {"account_id": str(target)})

    assert response.status_code == 200, response.json()
    deleted = response.json()["deleted_snapshot"]
    assert deleted["account_id"] == str(target)
    assert deleted["snapshot_id"] == target_snapshot.snapshot_id
    assert snapshot_ids() == others


@pytest.mark.parametrize("rule", DENIED)
def test_delete_for_an_unreachable_account_is_denied_and_changes_nothing(people, api, rule):
    give_every_account_a_snapshot_and_a_queued_run()
    snapshots_before, runs_before = snapshot_ids(), run_statuses()

    response = api.delete(
        caller_key(people, rule.caller), {"account_id": str(target_id(people, rule.target))}
    )

    assert_access_denied(response)
    assert snapshot_ids() == snapshots_before
    assert run_statuses() == runs_before  # no queued run was canceled either


def test_member_cannot_delete_another_members_sandbox(people, api):
    give_every_account_a_snapshot_and_a_queued_run()

    response = api.delete(people.bob.key, {"account_id": str(people.dave.account.pk)})

    assert_access_denied(response)
    assert Snapshot.objects.filter(account=people.dave.account).exists()


def test_admin_may_delete_a_members_sandbox(people, api):
    give_every_account_a_snapshot_and_a_queued_run()

    response = api.delete(people.carol.key, {"account_id": str(people.dave.account.pk)})

    assert response.status_code == 200
    assert not Snapshot.objects.filter(account=people.dave.account).exists()


# --- GET /api/tasks/runs?account_id=... -------------------------------------------------------


@pytest.mark.parametrize("rule", ALLOWED)
def test_runs_of_a_reachable_account_are_listed(people, api, rule):
    give_every_account_a_snapshot_and_a_queued_run()
    target = target_id(people, rule.target)

    response = api.runs(caller_key(people, rule.caller), account_id=target)

    assert response.status_code == 200, response.json()
    [run] = response.json()["runs"]
    assert run["account_id"] == str(target)
    assert run["id"] == SetupRun.objects.get(account_id=target).pk


@pytest.mark.parametrize("rule", DENIED)
def test_runs_of_an_unreachable_account_are_denied(people, api, rule):
    give_every_account_a_snapshot_and_a_queued_run()

    response = api.runs(caller_key(people, rule.caller), account_id=target_id(people, rule.target))

    assert_access_denied(response)


# --- GET /api/tasks/runs?runId=... ------------------------------------------------------------


@pytest.mark.parametrize("rule", ALLOWED)
def test_a_run_of_a_reachable_account_is_shown(people, api, rule):
    give_every_account_a_snapshot_and_a_queued_run()
    target = target_id(people, rule.target)
    run = SetupRun.objects.get(account_id=target)

    response = api.runs(caller_key(people, rule.caller), runId=run.pk)

    assert response.status_code == 200, response.json()
    assert [shown["id"] for shown in response.json()["runs"]] == [run.pk]


@pytest.mark.parametrize("rule", DENIED)
def test_a_run_of_an_unreachable_account_is_not_found(people, api, rule):
    give_every_account_a_snapshot_and_a_queued_run()
    if rule.target == NOBODY:
        run_id = "run_" + uuid.uuid4().hex[:24]  # an account that does not exist has no run
    else:
        run_id = SetupRun.objects.get(account=getattr(people, rule.target).account).pk

    response = api.runs(caller_key(people, rule.caller), runId=run_id)

    assert response.status_code == 404, response.content
    assert response.json() == {"status": "error", "error": f"No run {run_id}"}


def test_a_run_out_of_reach_answers_exactly_like_a_run_that_does_not_exist(people, api):
    hidden = SetupRun.objects.create(account=people.alice.account)
    made_up = "run_" + "0" * 24

    hidden_response = api.runs(people.mallory.key, runId=hidden.pk)
    missing_response = api.runs(people.mallory.key, runId=made_up)

    assert hidden_response.status_code == missing_response.status_code == 404
    assert hidden_response.json() == {"status": "error", "error": f"No run {hidden.pk}"}
    assert missing_response.json() == {"status": "error", "error": f"No run {made_up}"}


# --- no account_id: the key's own account ------------------------------------------------------


@pytest.mark.parametrize("caller", ["alice", "bob", "sam", "bob/acme", "sam/staff_org"])
def test_without_account_id_setup_acts_on_the_keys_own_account(people, api, caller):
    response = api.setup(caller_key(people, caller))

    assert response.status_code == 200, response.json()
    own = getattr(people, caller.partition("/")[0]).account
    assert SetupRun.objects.get(pk=response.json()["runId"]).account == own
    assert SetupRun.objects.count() == 1


@pytest.mark.parametrize("caller", ["alice", "bob", "sam", "bob/acme", "sam/staff_org"])
def test_without_account_id_delete_acts_on_the_keys_own_account(people, api, caller):
    give_every_account_a_snapshot_and_a_queued_run()
    own = getattr(people, caller.partition("/")[0]).account
    others = snapshot_ids() - {own.snapshot.snapshot_id}

    response = api.delete(caller_key(people, caller))

    assert response.status_code == 200, response.json()
    assert response.json()["deleted_snapshot"]["account_id"] == str(own.pk)
    assert snapshot_ids() == others


@pytest.mark.parametrize("caller", ["alice", "bob", "sam", "bob/acme", "sam/staff_org"])
def test_without_account_id_runs_lists_the_keys_own_runs(people, api, caller):
    give_every_account_a_snapshot_and_a_queued_run()
    own = getattr(people, caller.partition("/")[0]).account

    response = api.runs(caller_key(people, caller))

    assert response.status_code == 200, response.json()
    assert [run["account_id"] for run in response.json()["runs"]] == [str(own.pk)]


# --- answers that do not leak whether an account exists -----------------------------------------


@pytest.mark.parametrize("endpoint", ["setup", "delete", "runs"])
def test_an_unknown_account_id_is_refused_exactly_like_an_unreachable_one(people, api, endpoint):
    def call(account_id):
        if endpoint == "runs":
            return api.runs(people.mallory.key, account_id=account_id)
        return getattr(api, endpoint)(people.mallory.key, {"account_id": str(account_id)})

    unreachable = call(people.alice.account.pk)
    unknown = call(uuid.uuid4())

    assert unreachable.status_code == unknown.status_code == 403
    assert unreachable.json() == unknown.json() == ACCESS_DENIED


# --- organization keys are bounded by their organization ------------------------------------------


@pytest.fixture
def alice_in_globex(people):
    """Alice, owner of Acme, also joins Globex as a plain member and gets a Globex key."""
    membership_set(
        organization=people.globex, account=people.alice.account, role=Membership.Role.MEMBER, actor=TESTS
    )
    return people.organization_key(people.alice, people.globex)


def test_organization_key_may_act_on_a_member_of_its_organization_whatever_its_holders_role(
    people, api, alice_in_globex
):
    response = api.setup(alice_in_globex, {"account_id": str(people.dave.account.pk)})

    assert response.status_code == 200
    assert SetupRun.objects.get(pk=response.json()["runId"]).account == people.dave.account


def test_organization_key_cannot_act_where_its_holder_is_owner_of_another_organization(
    people, api, alice_in_globex
):
    response = api.setup(alice_in_globex, {"account_id": str(people.bob.account.pk)})

    assert_access_denied(response)
    assert not SetupRun.objects.exists()


def test_the_personal_key_of_the_same_owner_still_reaches_her_own_organization(
    people, api, alice_in_globex
):
    response = api.setup(people.alice.key, {"account_id": str(people.bob.account.pk)})

    assert response.status_code == 200


# --- roles change reach at once -------------------------------------------------------------


def test_owner_demoted_to_member_can_no_longer_act_on_members(people, api):
    membership_set(
        organization=people.acme, account=people.alice.account, role=Membership.Role.MEMBER, actor=TESTS
    )

    assert_access_denied(api.setup(people.alice.key, {"account_id": str(people.bob.account.pk)}))


def test_member_promoted_to_admin_may_act_on_members(people, api):
    membership_set(organization=people.acme, account=people.bob.account, role=Membership.Role.ADMIN, actor=TESTS)

    assert api.setup(people.bob.key, {"account_id": str(people.dave.account.pk)}).status_code == 200


# --- orgs.access itself ---------------------------------------------------------------------------

ACME = {"alice", "carol", "bob", "dave"}
EVERYONE = ACME | {"mallory", "sam"}


@pytest.mark.parametrize(
    "caller, reachable",
    [
        ("alice", ACME),  # owner
        ("carol", ACME),  # admin
        ("bob", {"bob"}),  # plain member
        ("dave", {"dave"}),  # plain member of two organizations
        ("mallory", {"mallory"}),  # owner of an organization with no other members
        ("sam", EVERYONE),  # staff
        ("bob/acme", ACME),
        ("dave/globex", {"dave"}),
        ("mallory/evil", {"mallory"}),
        ("sam/staff_org", EVERYONE),
    ],
)
def test_reachable_accounts_are_exactly_those_the_table_allows(people, caller, reachable):
    key = caller_api_key(people, caller)
    expected = {getattr(people, name).account.pk for name in reachable}

    accounts = list(reachable_accounts(key=key))

    assert {account.pk for account in accounts} == expected
    assert len(accounts) == len(expected), "no account is listed twice"


@pytest.mark.parametrize("caller", ["alice", "bob", "sam", "bob/acme", "sam/staff_org"])
def test_reachable_accounts_is_one_query(people, caller, django_assert_num_queries):
    key = caller_api_key(people, caller)

    with django_assert_num_queries(1):
        list(reachable_accounts(key=key))


def test_reachable_accounts_of_an_organization_key_ignores_its_holders_other_roles(
    people, alice_in_globex
):
    key = ApiKey.objects.get(key_hash=hash_key(alice_in_globex))

    assert set(reachable_accounts(key=key)) == {people.alice.account, people.dave.account}


@pytest.mark.parametrize("rule", ALLOWED)
def test_may_act_on_account_allows_what_the_table_allows(people, rule):
    target = Account.objects.get(pk=target_id(people, rule.target))

    assert may_act_on_account(key=caller_api_key(people, rule.caller), account=target) is True


@pytest.mark.parametrize("rule", DENIED)
def test_may_act_on_account_denies_what_the_table_denies(people, rule):
    target_pk = target_id(people, rule.target)
    # An account that does not exist is an unsaved row with a fresh id.
    target = Account.objects.filter(pk=target_pk).first() or Account(pk=target_pk, name="Nobody")

    assert may_act_on_account(key=caller_api_key(people, rule.caller), account=target) is False


def test_may_act_on_account_agrees_with_reachable_accounts_for_every_pair(people):
    callers = [
        "alice",
        "carol",
        "bob",
        "dave",
        "mallory",
        "sam",
        "bob/acme",
        "dave/globex",
        "sam/staff_org",
    ]
    accounts = list(Account.objects.all())

    for caller in callers:
        key = caller_api_key(people, caller)
        reachable = set(reachable_accounts(key=key))
        for account in accounts:
            assert may_act_on_account(key=key, account=account) is (account in reachable), (
                caller,
                account,
            )


def test_may_act_on_own_account_needs_no_query(people, django_assert_num_queries):
    with django_assert_num_queries(0):
        assert may_act_on_account(key=people.bob.api_key, account=people.bob.account)


def test_may_act_on_another_account_is_one_query(people, django_assert_num_queries):
    with django_assert_num_queries(1):
        assert may_act_on_account(key=people.alice.api_key, account=people.bob.account)
    with django_assert_num_queries(1):
        assert not may_act_on_account(key=people.bob.api_key, account=people.alice.account)


def test_organization_key_loses_its_reach_when_its_holder_leaves(people, api):
    key = people.organization_key(people.alice, people.acme)
    assert api.setup(key, {"account_id": str(people.bob.account.pk)}).status_code == 200
    people.acme.memberships.filter(account=people.alice.account).delete()
    response = api.setup(key, {"account_id": str(people.carol.account.pk)})
    assert response.status_code == 403
    assert api.setup(key).status_code == 200  # its own account stays reachable
