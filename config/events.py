"""Events of the service, recorded through one small interface.

The app whose data changed records the event, shaped already: its type, the
account, and its data (a dict, or a function that builds it, called only when
someone wants the event). The app that keeps and delivers events (webhooks)
implements `Recorder` and registers it from its AppConfig.ready(); with none
registered an event goes nowhere. So the recording app never imports the
delivering one, and the delivering one never calls back for data.

Events a schedule finds rather than a change causes (a snapshot about to
expire) come from a `Producer` that the app owning the data registers; the
schedule runs `produce(event_type)`.
"""

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from django.utils import timezone

EventData = dict | Callable[[], dict]


class Batch(Protocol):
    """The events of one change, saved at once inside the change's transaction."""

    now: datetime
    targets: Mapping[UUID, Any]  # the accounts someone listens to: no data is built for the others

    def add(self, event_type: str, account_id: UUID, data: EventData, *, dedupe_key: str = "") -> None: ...

    def save(self, *, deliver_here: bool = False, unrecorded_only: bool = False) -> list:
        """Store the events; `deliver_here`: try each once in this process after commit; `unrecorded_only`: leave
        out those whose dedupe_key is recorded already. Returns what was stored."""


class Recorder(Protocol):
    def batch(self, account_ids: Iterable[UUID]) -> Batch: ...


class Producer(Protocol):
    def __call__(self, *, now: datetime, batch_size: int) -> int: ...


class _Nowhere:
    """The batch when no recorder is registered: nobody listens."""

    def __init__(self):
        self.now = timezone.now()
        self.targets: dict = {}

    def add(self, event_type: str, account_id: UUID, data: EventData, *, dedupe_key: str = "") -> None:
        pass

    def save(self, *, deliver_here: bool = False, unrecorded_only: bool = False) -> list:
        return []


_recorders: list[Recorder] = []
_producers: dict[str, list[Producer]] = {}


def register_recorder(recorder: Recorder) -> None:
    """One recorder keeps the events (webhooks, from its AppConfig.ready())."""
    _recorders[:] = [recorder]


def register_producer(event_type: str, producer: Producer) -> None:
    if producer not in _producers.setdefault(event_type, []):
        _producers[event_type].append(producer)


def batch(account_ids: Iterable[UUID]) -> Batch:
    """A batch for the events of one change to these accounts."""
    return _recorders[0].batch(account_ids) if _recorders else _Nowhere()


def record(event_type: str, *, account_id: UUID, data: EventData, deliver_here: bool = False) -> list:
    """Record one event of one account; returns what the recorder stored."""
    events = batch([account_id])
    if not events.targets:
        return []
    events.add(event_type, account_id, data)
    return events.save(deliver_here=deliver_here)


def produce(event_type: str, *, now: datetime | None = None, batch_size: int = 500) -> int:
    """Run the producers of a scheduled event; returns how many events they recorded."""
    now = now or timezone.now()
    return sum(producer(now=now, batch_size=batch_size) for producer in _producers.get(event_type, ()))
