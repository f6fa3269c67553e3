"""The audit trail as the API shows it (GET /api/audit): who sees which events, pages, cursors, public fields.

Who sees what (the reach of orgs/access.py, applied to events):
- every key: the events of its own account;
- a personal key: also those of every member of each organization in which
  its account is an owner or an admin;
- an organization key: also those of every member of its organization, while
  its holder is a member;
- a key of a member of a staff organization: every event, those of no account
  (cleanups, reconciles, admin users) and of deleted accounts included.
An `account_id` or `organization_id` outside that is refused with the same
403 whether it exists or not.

A page is the newest events first, by (created_at, id). Its cursor is the
position of its last event and a hash of the filters, signed
(django.core.signing): the next page continues below that position, so an
event recorded while a client walks the pages is never shown twice and never
pushes another off a page; a forged, cut or altered cursor, or one made for
other filters, is refused. A page costs three queries: the key (with its
account), the memberships that decide the reach, and the events.
"""

import hashlib
import json
import re
import uuid
from dataclasses import dataclass
from datetime import datetime

from django.core import signing
from django.db.models import Q, QuerySet
from django.utils.dateparse import parse_datetime

from accounts.models import ApiKey, AuditEvent
from orgs.models import MANAGING_ROLES, Membership

# The module's old name (it lived in accounts): the salt is part of every cursor's signature, so a new value
# would refuse the cursors clients hold from before the move.
CURSOR_SALT = "accounts.audit_trail.cursor"
FILTERS = ("account_id", "organization_id", "action", "since", "until")
DEFAULT_LIMIT, MAX_LIMIT = 50, 200
ACCOUNT_DENIED_MESSAGE = "Access denied to specified account_id"
ORGANIZATION_DENIED_MESSAGE = "Access denied to specified organization_id"


class AuditAccessDenied(Exception):
    """The key may not read the events it asked for (an account or organization out of its reach)."""


class BadCursor(Exception):
    """A cursor this service did not make for these filters."""


@dataclass(frozen=True)
class Reach:
    """Whose events a key may read: everyone's, or its own account's and the members' of some organizations."""

    everything: bool
    own_account: uuid.UUID
    organizations: frozenset  # ids of the organizations whose members' events it reads

    def accounts_filter(self) -> Q:
        members = Membership.objects.filter(organization_id__in=self.organizations).values("account_id")
        return Q(account_ref=self.own_account) | Q(account_ref__in=members)


def _reach_and_target(key: ApiKey, account_id: uuid.UUID | None) -> tuple[Reach, set]:
    """The key's reach, and the organizations of `account_id` (if given), from one query."""
    holders = {key.account_id} | ({account_id} if account_id else set())
    rows = Membership.objects.filter(account_id__in=holders).values_list(
        "account_id", "organization_id", "role", "organization__is_staff")
    held, target_organizations, everything = {}, set(), False
    for member, organization, role, is_staff in rows:
        if member == key.account_id:
            held[organization] = role
            everything = everything or is_staff
        if member == account_id:
            target_organizations.add(organization)
    if key.organization_id is not None:
        # An organization key reaches its organization's members while its holder is one of them.
        organizations = {key.organization_id} & set(held)
    else:
        organizations = {organization for organization, role in held.items() if role in MANAGING_ROLES}
    return Reach(everything=everything, own_account=key.account_id, organizations=frozenset(organizations)), \
        target_organizations


def visible_events(*, key: ApiKey, filters: dict) -> QuerySet[AuditEvent]:
    """The events the key may read that match the filters, newest first; AuditAccessDenied for a filter out of reach.

    One query (the memberships); the events are read when the queryset is.
    """
    account_id, organization_id = filters.get("account_id"), filters.get("organization_id")
    reach, target_organizations = _reach_and_target(key, account_id)
    if organization_id is not None and not reach.everything and organization_id not in reach.organizations:
        raise AuditAccessDenied(ORGANIZATION_DENIED_MESSAGE)
    if (account_id is not None and not reach.everything and account_id != key.account_id
            and not reach.organizations & target_organizations):
        raise AuditAccessDenied(ACCOUNT_DENIED_MESSAGE)
    events = AuditEvent.objects.all()
    if account_id is not None:
        events = events.filter(account_ref=account_id)
    elif not reach.everything and organization_id is None:
        events = events.filter(reach.accounts_filter())
    if organization_id is not None:
        events = events.filter(account_ref__in=Membership.objects.filter(organization_id=organization_id)
                               .values("account_id"))
    if filters.get("action"):
        events = events.filter(action=filters["action"])
    if filters.get("since") is not None:
        events = events.filter(created_at__gte=filters["since"])
    if filters.get("until") is not None:
        events = events.filter(created_at__lt=filters["until"])
    return events.order_by("-created_at", "-id")


# --- cursors ---------------------------------------------------------------------


def filters_hash(filters: dict) -> str:
    canonical = json.dumps({name: _plain(filters.get(name)) for name in FILTERS}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def _plain(value):
    if isinstance(value, datetime):
        return value.isoformat()
    return None if value is None else str(value)


def cursor_after(event: AuditEvent, filters: dict) -> str:
    """The opaque cursor of the page that follows `event`, for these filters."""
    return signing.dumps({"at": event.created_at.isoformat(), "id": event.pk, "f": filters_hash(filters)},
                         salt=CURSOR_SALT, compress=True)


def cursor_position(cursor: str, filters: dict) -> tuple[datetime, int]:
    """(created_at, id) of the last event of the page before; BadCursor for anything this service did not make."""
    try:
        position = signing.loads(cursor, salt=CURSOR_SALT)
    except signing.BadSignature:
        raise BadCursor("This cursor is not one this service made (use the next of the last answer)") from None
    except (ValueError, TypeError, UnicodeError):  # what decompressing or decoding a mangled value may raise
        raise BadCursor("This cursor is not one this service made (use the next of the last answer)") from None
    if position.get("f") != filters_hash(filters):
        raise BadCursor("This cursor was made for other filters: send the same filters with it")
    at = parse_datetime(position["at"]) if isinstance(position.get("at"), str) else None
    if at is None or not isinstance(position.get("id"), int):
        raise BadCursor("This cursor is not one this service made (use the next of the last answer)")
    return at, position["id"]


@dataclass
class AuditPage:
    events: list[AuditEvent]
    next: str | None


def events_after(events: QuerySet[AuditEvent], at: datetime, event_id: int) -> QuerySet[AuditEvent]:
    """The events below the position (at, event_id) in the walk's order."""
    # (created_at, id) < (at, event_id), written so that created_at <= at bounds the index scan.
    return events.filter(created_at__lte=at).filter(Q(created_at__lt=at) | Q(id__lt=event_id))


def audit_page(*, key: ApiKey, filters: dict, cursor: str | None, limit: int) -> AuditPage:
    """One page of the key's visible events; AuditAccessDenied, BadCursor."""
    position = cursor_position(cursor, filters) if cursor else None
    events = visible_events(key=key, filters=filters)
    if position is not None:
        events = events_after(events, *position)
    fields = ("id", "created_at", "action", "outcome", "actor", "account_ref", "run_id", "detail")
    found = list(events.only(*fields)[:limit + 1])
    page, more = found[:limit], len(found) > limit
    return AuditPage(events=page, next=cursor_after(page[-1], filters) if more else None)


# --- what an event shows ---------------------------------------------------------------

_KEY_ACTOR = re.compile(r"^API key (\S+?)…? of ")
_STAFF_ACTOR = "staff user "
SCHEDULES = ("scheduled ", "idle sandbox sweep")
WORKERS = ("worker", "webhook delivery")


def actor_of(event: AuditEvent) -> dict:
    """{kind, name}: key (its visible prefix), staff (the user name), schedule, worker, command (its name)."""
    label = event.actor
    if match := _KEY_ACTOR.match(label):
        return {"kind": "key", "name": match.group(1) + "…"}
    if label.startswith(_STAFF_ACTOR):
        return {"kind": "staff", "name": label.removeprefix(_STAFF_ACTOR)}
    if label.startswith(SCHEDULES):
        return {"kind": "schedule", "name": label}
    if label in WORKERS:
        return {"kind": "worker", "name": label}
    return {"kind": "command", "name": label}


# Server paths and secrets never leave in a detail: a file:// URL or an absolute path keeps its last part,
# a URL loses its user, password and query string, a raw API key or webhook secret its value.
_FILE_URL = re.compile(r"file://(?:/[^\s/'\"`),;]+)*/([^\s/'\"`),;]*)")
_ABSOLUTE_PATH = re.compile(r"(?<![\w:/.~-])(?:/[^\s/'\"`),;:]+)+/([^\s/'\"`),;:]*)")
_URL_USER = re.compile(r"(\b[a-z][a-z0-9+.-]*://)[^\s/@]+@", re.IGNORECASE)
_URL_QUERY = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^\s?#'\"`]+)[?#][^\s'\"`),;]*", re.IGNORECASE)
_SECRETS = re.compile(r"\b(sbx_|whsec_)[A-Za-z0-9_+/=-]{16,}")


def public_detail(detail: str) -> str:
    detail = _FILE_URL.sub(lambda match: f"file://…/{match.group(1)}", detail)
    detail = _URL_USER.sub(r"\1", detail)
    detail = _URL_QUERY.sub(r"\1?…", detail)
    detail = _ABSOLUTE_PATH.sub(lambda match: f"…/{match.group(1)}", detail)
    return _SECRETS.sub(lambda match: f"{match.group(1)}…", detail)


def event_representation(event: AuditEvent) -> dict:
    return {
        "id": event.pk,
        "at": event.created_at.isoformat(timespec="seconds"),
        "action": event.action,
        "outcome": event.outcome,
        "actor": actor_of(event),
        "account_id": str(event.account_ref) if event.account_ref else None,
        "target": event.run_id or None,
        "detail": public_detail(event.detail),
    }
