"""Reads on webhooks."""

from collections import defaultdict
from collections.abc import Sequence
from functools import cache
from uuid import UUID

from django.db import connections, router

from orgs.models import Membership
from webhooks.models import Endpoint


def endpoint_by_id(raw_id: str) -> Endpoint | None:
    """The endpoint with this id; None for an unknown id or one that is not a number."""
    return Endpoint.objects.filter(pk=int(raw_id)).first() if str(raw_id).isdigit() else None


def endpoint_targets(account_ids: Sequence[UUID]) -> dict[UUID, list[tuple[int, str]]]:
    """The active endpoints that receive each account's events, its own and its organizations'.

    (endpoint id, event types) by account id, in one query; accounts with
    none are left out. Every change that may cause an event asks, mostly for
    accounts that have none (a delete, a run's end): the statement is written
    once per database from the models' columns, as Django compiling the union
    of two joins cost more CPU than the database answering it (bench/README.md,
    "DELETE /api/sandboxes").
    """
    if not account_ids:
        return {}
    connection = connections[router.db_for_read(Endpoint)]
    account_field = Endpoint._meta.get_field("account")
    # The database's values map back to the ids asked for (on SQLite a UUID is stored as hex text).
    asked = {account_field.get_db_prep_value(account_id, connection): account_field.to_python(account_id)
             for account_id in account_ids}
    if connection.vendor == "postgresql":  # one array: one statement whatever the number, prepared once
        ids, parameters = "= ANY(%s)", [list(asked)] * 2
    else:
        ids, parameters = f"IN ({', '.join(['%s'] * len(asked))})", [*asked, *asked]
    sql = _endpoint_targets_sql(connection.alias).format(ids=ids)
    targets = defaultdict(list)
    with connection.cursor() as cursor:
        cursor.execute(sql, parameters)
        for endpoint_id, event_types, account in cursor.fetchall():
            targets[asked[account]].append((endpoint_id, event_types))
    return dict(targets)


@cache
def _endpoint_targets_sql(alias: str) -> str:
    """The statement of endpoint_targets, the test of the account ids left as {ids}."""
    quote = connections[alias].ops.quote_name
    endpoints, memberships = quote(Endpoint._meta.db_table), quote(Membership._meta.db_table)
    endpoint_id, event_types, is_active = (
        quote(Endpoint._meta.get_field(name).column) for name in ("id", "event_types", "is_active")
    )
    account = quote(Endpoint._meta.get_field("account").column)
    organization = quote(Endpoint._meta.get_field("organization").column)
    member, member_organization = (quote(Membership._meta.get_field(name).column) for name in ("account", "organization"))
    # UNION ALL: an endpoint belongs to an account or to an organization (a check constraint), and an account
    # is a member of an organization once (a unique constraint), so no row comes twice.
    return (
        f"SELECT e.{endpoint_id}, e.{event_types}, e.{account} FROM {endpoints} e "
        f"WHERE e.{is_active} AND e.{account} {{ids}} "
        f"UNION ALL "
        f"SELECT e.{endpoint_id}, e.{event_types}, m.{member} FROM {endpoints} e "
        f"JOIN {memberships} m ON m.{member_organization} = e.{organization} "
        f"WHERE e.{is_active} AND m.{member} {{ids}}"
    )
