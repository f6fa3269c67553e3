"""The audit trail: who did what to which account, recorded with the change itself.

Services take an `Actor` (an API request, a staff user in the admin, or a
command or worker of our own) and call `audit_record` inside the transaction
of the change, so an event exists exactly when its change does.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache, lru_cache
from types import SimpleNamespace
from uuid import UUID

from django.conf import settings
from django.db import connections, router
from ipware import get_client_ip

from accounts.models import Account, ApiKey, AuditEvent


@dataclass(frozen=True)
class Actor:
    api_key: ApiKey | None = None
    user: object | None = None  # a staff user of the admin
    system: str = ""  # a command or the worker
    client_ip: str | None = None
    request_id: str = ""

    @classmethod
    def from_api_request(cls, request) -> "Actor":
        return cls(api_key=request.auth, client_ip=client_ip(request), request_id=request_id(request))

    @classmethod
    def from_admin_request(cls, request) -> "Actor":
        return cls(user=request.user, client_ip=client_ip(request), request_id=request_id(request))

    @classmethod
    def command(cls, name: str) -> "Actor":
        return cls(system=name)

    @property
    def label(self) -> str:
        if self.api_key is not None:
            return f"API key {self.api_key.prefix}… of {self.api_key.account.email}"
        if self.user is not None:
            return f"staff user {self.user.get_username()}"
        return self.system or "system"

    @property
    def is_staff_user(self) -> bool:
        return self.user is not None


WORKER = Actor.command("worker")


def client_ip(request) -> str | None:
    """The address of the client, as far as the proxies in front of the service (TRUSTED_PROXY_COUNT) vouch for it.

    With no proxy the peer of the connection (REMOTE_ADDR) is the client and
    X-Forwarded-For, which anyone can send, is ignored. Behind N proxies, each
    appending the address it received the request from to X-Forwarded-For,
    the client is the N-th address from the right; what stands left of it
    came from the client and is ignored. django-ipware counts the proxies
    listed after the client in the header; the last proxy is not listed there
    (it is REMOTE_ADDR), hence N - 1. None when the header has fewer than N
    addresses. https://github.com/un33k/django-ipware#proxy-count and
    nginx's $proxy_add_x_forwarded_for:
    https://nginx.org/en/docs/http/ngx_http_proxy_module.html#var_proxy_add_x_forwarded_for
    """
    proxies = settings.TRUSTED_PROXY_COUNT
    if not proxies:
        return _peer_address(request.META.get("REMOTE_ADDR", ""))
    else:
        ip, _routable = get_client_ip(request, proxy_count=proxies - 1, request_header_order=["HTTP_X_FORWARDED_FOR"],
                                      strict=False)
    return ip


@lru_cache(maxsize=4096)
def _peer_address(remote_addr: str) -> str | None:
    """REMOTE_ADDR as django-ipware reads it, once per address: its parsing cost a delete 3% of its CPU."""
    ip, _routable = get_client_ip(SimpleNamespace(META={"REMOTE_ADDR": remote_addr}),
                                  request_header_order=["REMOTE_ADDR"])
    return ip


def request_id(request) -> str:
    return getattr(request, "request_id", "")


def audit_event(
    *,
    action: str,
    actor: Actor,
    account: Account | UUID | None = None,
    outcome: str = AuditEvent.Outcome.SUCCESS,
    run_id: str = "",
    detail: str = "",
) -> AuditEvent:
    """An unsaved event; `audit_record` saves one, `audit_record_many` saves a batch in one query."""
    account_id = account.pk if isinstance(account, Account) else account
    return AuditEvent(
        action=action,
        outcome=outcome,
        actor=actor.label[:200],
        actor_key=actor.api_key,
        actor_user=actor.user,
        account_id=account_id,
        account_ref=account_id,
        run_id=run_id,
        client_ip=actor.client_ip,
        request_id=actor.request_id,
        detail=detail,
    )


def audit_record(**fields) -> AuditEvent:
    event = audit_event(**fields)
    _insert(event)
    return event


# An SQL expression that makes the commit of the transaction it runs in asynchronous: PostgreSQL does not
# wait for the disk before it answers. Evaluated in a statement that is a transaction of its own (in its
# RETURNING or its SELECT, which run before the commit), it costs no round trip, and the setting ends
# with that transaction. Only where the transaction's one write is the event of a request that changed
# nothing (audit_record_many), and never inside a caller's transaction, whose commit it would relax too.
# https://www.postgresql.org/docs/current/wal-async-commit.html
ASYNC_COMMIT_SQL = "set_config('synchronous_commit', 'off', true)"


def audit_record_many(events: Iterable[AuditEvent], *, durable: bool = True) -> list[AuditEvent]:
    """Save a batch of events.

    `durable=False` is for the event of a request that changed nothing (a
    delete that found nothing to delete), recorded outside any transaction:
    on PostgreSQL its commit does not wait for the disk (asynchronous commit,
    for that one transaction). A crash of the database server within a
    fraction of a second of it may lose that event, and nothing else; the
    client is not kept waiting for the flush of a record that nothing
    happened. Inside a transaction the event is committed with the change, as
    every other event is (ASYNC_COMMIT_SQL).
    """
    events = list(events)
    if len(events) == 1:
        # bulk_create opens a transaction of its own (BEGIN/COMMIT round trips) even for one row.
        _insert(events[0], durable=durable)
        return events
    return AuditEvent.objects.bulk_create(events)


def _insert(event: AuditEvent, *, durable: bool = True) -> None:
    """Save a new event as Model.save() does, with an INSERT written once per database.

    Nearly every request that changes something records one event, and
    Django compiling its INSERT afresh each time cost more CPU than the
    database spent on it (bench/README.md, "DELETE /api/sandboxes").
    """
    connection = connections[router.db_for_write(AuditEvent)]
    if not connection.features.can_return_columns_from_insert:  # SQLite before 3.35
        event.save(using=connection.alias)
        return
    values = audit_insert_values(event, connection)
    durable = durable or connection.in_atomic_block or connection.vendor != "postgresql"
    with connection.cursor() as cursor:
        cursor.execute(_insert_sql(connection.alias, durable=durable), values)
        event.pk = cursor.fetchone()[0]
    event._state.adding, event._state.db = False, connection.alias


def audit_insert_fields() -> list:
    """The fields a new event's INSERT writes, in order (all but its id)."""
    meta = AuditEvent._meta
    return [field for field in meta.local_concrete_fields if field is not meta.auto_field]


def audit_insert_values(event: AuditEvent, connection) -> list:
    """The values of a new event's INSERT, for audit_insert_fields(), prepared as Model.save() prepares them."""
    return [field.get_db_prep_save(field.pre_save(event, True), connection) for field in audit_insert_fields()]


@cache
def _insert_sql(alias: str, *, durable: bool = True) -> str:
    quote = connections[alias].ops.quote_name
    meta = AuditEvent._meta
    columns = ", ".join(quote(field.column) for field in audit_insert_fields())
    placeholders = ", ".join(["%s"] * len(audit_insert_fields()))
    relax = "" if durable else f", {ASYNC_COMMIT_SQL}"  # PostgreSQL only, outside a transaction: _insert
    return (f"INSERT INTO {quote(meta.db_table)} ({columns}) VALUES ({placeholders}) "
            f"RETURNING {quote(meta.auto_field.column)}{relax}")
