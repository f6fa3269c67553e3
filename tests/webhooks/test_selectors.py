"""endpoint_targets: which active endpoints receive each account's events, for many accounts in one query."""

from accounts.audit import Actor
from webhooks.selectors import endpoint_targets
from webhooks.services import endpoint_disable


def test_an_account_gets_its_own_endpoints_and_its_organizations(people, make_endpoint):
    own = make_endpoint(account=people.dave.account, event_types=["run.completed"])
    of_acme = make_endpoint(organization=people.acme)
    of_globex = make_endpoint(organization=people.globex, event_types=["sandbox.deleted"])

    targets = endpoint_targets([people.dave.account.pk])

    assert sorted(targets[people.dave.account.pk]) == sorted(
        [(own.pk, ",run.completed,"), (of_acme.pk, ""), (of_globex.pk, ",sandbox.deleted,")]
    )


def test_accounts_without_endpoints_are_left_out_and_others_get_only_theirs(
    people, make_endpoint, django_assert_num_queries
):
    of_acme = make_endpoint(organization=people.acme)
    of_mallory = make_endpoint(account=people.mallory.account)
    asked = [people.alice.account.pk, people.bob.account.pk, people.mallory.account.pk, people.sam.account.pk]

    with django_assert_num_queries(1):
        targets = endpoint_targets(asked)

    assert targets == {
        people.alice.account.pk: [(of_acme.pk, "")],
        people.bob.account.pk: [(of_acme.pk, "")],
        people.mallory.account.pk: [(of_mallory.pk, "")],
    }


def test_a_disabled_endpoint_is_not_a_target(people, make_endpoint):
    endpoint = make_endpoint(account=people.alice.account)
    endpoint_disable(endpoint=endpoint, actor=Actor.command("tests"), reason="tests")

    assert endpoint_targets([people.alice.account.pk]) == {}


def test_no_accounts_ask_nothing(db, django_assert_num_queries):
    with django_assert_num_queries(0):
        assert endpoint_targets([]) == {}
