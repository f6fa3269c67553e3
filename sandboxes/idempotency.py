"""Idempotency-Key on the API's writes: a client whose answer was lost retries without doing it twice.

The semantics are the IETF httpapi draft's, as Stripe has them
(https://datatracker.ietf.org/doc/draft-ietf-httpapi-idempotency-key-header/,
https://docs.stripe.com/api/idempotent_requests):

- the first request with a key is processed, and its status and body are
  kept for IDEMPOTENCY_KEY_TTL per API key;
- a repeat with the same key, method, path and body is answered with the
  kept answer and header `Idempotent-Replayed: true`, and does nothing;
- the same key with another method, path or body: 422;
- a repeat while the first is still being processed: 409 with Retry-After;
- a key is 1 to 255 printable ASCII characters (400 otherwise).

An answer the view returned is kept whatever its status (a delete the git
host failed answers 400, and that answer is replayed; send a new key to try
again). A request refused before it was processed (a bad body, a target the
key may not act on, a database that did not answer) keeps nothing: the key
is released and may be sent again.

Which request is processed is decided by the database: the key is claimed by
an INSERT that a unique constraint (API key, key) lets through once. A
record left in flight by a process that died is taken over by a repeat once
it is IN_FLIGHT_TAKEOVER_AFTER old, so a crash does not block the key for a
day; the three endpoints are safe to process twice (setup answers with the
account's active run, delete and renew finish the same job).

`idempotent` applies this to a view's handler; `idempotency_records_purge`
(an hourly django-q2 schedule) removes the records past their time.
"""

import hashlib
import re
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import timedelta
from functools import wraps

from django.db import IntegrityError, connections, router, transaction
from django.utils import timezone
from rest_framework import status
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.response import Response

from sandboxes.models import IdempotencyRecord

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
IDEMPOTENCY_KEY_TTL = timedelta(hours=24)
IN_FLIGHT_TAKEOVER_AFTER = timedelta(minutes=1)
IN_FLIGHT_RETRY_AFTER_SECONDS = 1
_VALID_KEY = re.compile(r"[\x20-\x7e]{1,255}")
State = IdempotencyRecord.State


class IdempotencyKeyInFlight(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "A request with this Idempotency-Key is still being processed; try again shortly"
    wait = IN_FLIGHT_RETRY_AFTER_SECONDS  # sent as Retry-After by DRF's exception handler


class IdempotencyKeyReused(APIException):
    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    default_detail = (
        "This Idempotency-Key was used with a different request (method, path or body); "
        "send a new key for a new request"
    )


@dataclass(frozen=True)
class Claim:
    """A key claimed for processing this request (record set), or the kept answer to replay."""

    record: IdempotencyRecord | None = None
    replay: Response | None = None


def request_fingerprint(request) -> str:
    """Method, path and the SHA-256 of the body: what must match for a repeat to be the same request."""
    return f"{request.method} {request.path} {hashlib.sha256(request.body).hexdigest()}"


def validated_key(raw: str) -> str:
    if not _VALID_KEY.fullmatch(raw):
        raise ValidationError({HEADER: ["must be 1 to 255 printable ASCII characters"]})
    return raw


def _savepoint(model):
    """Inside a caller's transaction, a savepoint keeps a refused INSERT from spoiling the rest of it."""
    connection = connections[router.db_for_write(model)]
    return transaction.atomic(using=connection.alias) if connection.in_atomic_block else nullcontext()


def idempotency_claim(*, api_key, key: str, fingerprint: str) -> Claim:
    """Claim `key` of `api_key` for this request, or find the answer to replay.

    Raises IdempotencyKeyReused (422) for another request's key and
    IdempotencyKeyInFlight (409) while the first is still processed.
    """
    for _attempt in range(3):
        now = timezone.now()
        record = IdempotencyRecord(api_key=api_key, key=key, fingerprint=fingerprint, created_at=now)
        try:
            with _savepoint(IdempotencyRecord):
                record.save(force_insert=True)
            return Claim(record=record)
        except IntegrityError:
            pass
        found = IdempotencyRecord.objects.filter(api_key=api_key, key=key).first()
        if found is None:
            continue  # released or purged just now: claim it again
        if found.created_at <= now - IDEMPOTENCY_KEY_TTL:
            taken = _take_over(found, fingerprint=fingerprint, now=now)  # past its time: as if it were gone
        elif found.fingerprint != fingerprint:
            raise IdempotencyKeyReused()
        elif found.state == State.DONE:
            return Claim(replay=Response(found.body, status=found.status_code, headers={REPLAYED_HEADER: "true"}))
        elif found.created_at > now - IN_FLIGHT_TAKEOVER_AFTER:
            raise IdempotencyKeyInFlight()
        else:
            taken = _take_over(found, fingerprint=fingerprint, now=now)  # its process died
        if taken is not None:
            return Claim(record=taken)
    raise IdempotencyKeyInFlight()


def _take_over(found: IdempotencyRecord, *, fingerprint: str, now) -> IdempotencyRecord | None:
    # Compare and set: of several requests taking over one record, one wins.
    won = IdempotencyRecord.objects.filter(pk=found.pk, created_at=found.created_at).update(
        fingerprint=fingerprint, state=State.IN_FLIGHT, status_code=None, body=None, created_at=now
    )
    if not won:
        return None
    found.fingerprint, found.state, found.status_code, found.body, found.created_at = (
        fingerprint, State.IN_FLIGHT, None, None, now
    )
    return found


def idempotency_complete(*, record: IdempotencyRecord, response: Response) -> None:
    IdempotencyRecord.objects.filter(pk=record.pk, created_at=record.created_at).update(
        state=State.DONE, status_code=response.status_code, body=response.data
    )


def idempotency_release(*, record: IdempotencyRecord) -> None:
    IdempotencyRecord.objects.filter(pk=record.pk, created_at=record.created_at, state=State.IN_FLIGHT).delete()


def idempotency_records_purge() -> int:
    """Remove the records past IDEMPOTENCY_KEY_TTL; returns how many."""
    return IdempotencyRecord.objects.filter(created_at__lte=timezone.now() - IDEMPOTENCY_KEY_TTL).delete()[0]


def idempotent(handler):
    """Apply the Idempotency-Key rules to a DRF view's handler (after authentication, permissions, rate limits)."""

    @wraps(handler)
    def handle(view, request, *args, **kwargs):
        raw = request.headers.get(HEADER)
        if raw is None:
            return handler(view, request, *args, **kwargs)
        claim = idempotency_claim(
            api_key=request.auth, key=validated_key(raw), fingerprint=request_fingerprint(request)
        )
        if claim.replay is not None:
            return claim.replay
        try:
            response = handler(view, request, *args, **kwargs)
        except BaseException:
            idempotency_release(record=claim.record)
            raise
        idempotency_complete(record=claim.record, response=response)
        return response

    return handle

