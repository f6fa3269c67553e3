"""A webhook receiver on 127.0.0.1 that checks every delivery with the `standardwebhooks` package.

It answers each POST with the next of a script of answers (a status code, or
HANG to keep the request open without answering), then 200 once the script
is used up. Each delivery is kept with its headers, body, the time it came
and whether its signature verified.

The fixtures at the end (imported by the conftests of tests/webhooks and
tests/reliability) start one and register endpoints at it.
"""

import json
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from standardwebhooks.webhooks import Webhook

from accounts.audit import Actor
from webhooks.services import endpoint_create

HANG = "hang"


@dataclass
class Delivery:
    path: str
    headers: dict
    body: bytes
    received_at: float  # time.monotonic()
    verified: bool
    received_epoch: float = 0.0  # time.time(), to compare with the times the service records
    error: str = ""

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]

    @property
    def event(self) -> dict:
        return json.loads(self.body)


@dataclass
class Receiver:
    secret: str = ""
    answers: list = field(default_factory=list)
    answer_body: bytes = b"ok"
    extra_headers: dict = field(default_factory=dict)
    deliveries: list[Delivery] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None
    released: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/hooks"

    def start(self) -> "Receiver":
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {name.lower(): value for name, value in self.headers.items()}
                verified, error = True, ""
                try:
                    Webhook(receiver.secret).verify(body, headers)
                except Exception as exc:  # noqa: BLE001 (any failure to verify is recorded, not raised)
                    verified, error = False, repr(exc)
                with receiver.lock:
                    receiver.deliveries.append(Delivery(self.path, headers, body, time.monotonic(), verified,
                                                       received_epoch=time.time(), error=error))
                    answer = receiver.answers.pop(0) if receiver.answers else 200
                if answer == HANG:
                    receiver.released.wait(60)
                    return
                self.send_response(answer)
                for name, value in receiver.extra_headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(receiver.answer_body)))
                self.end_headers()
                self.wfile.write(receiver.answer_body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self):
        self.released.set()
        self.server.shutdown()
        self.server.server_close()

    def wait_for(self, count: int, timeout: float = 10) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.deliveries) >= count:
                    return list(self.deliveries)
            time.sleep(0.02)
        raise AssertionError(f"expected {count} deliveries within {timeout} s, got {len(self.deliveries)}")


# --- fixtures ------------------------------------------------------------------------


@pytest.fixture
def local_webhooks(settings):
    """Plain http to 127.0.0.1, as the test receiver needs (production refuses both); quick retries."""
    settings.WEBHOOK_ALLOW_HTTP = True
    settings.WEBHOOK_ALLOW_PRIVATE = True
    settings.WEBHOOK_TIMEOUT = 2
    settings.WEBHOOK_RETRY_SCHEDULE = [timedelta(seconds=0.2)] * 2
    return settings


@pytest.fixture
def receiver():
    started = Receiver().start()
    yield started
    started.stop()


@pytest.fixture
def make_endpoint(local_webhooks, receiver):
    """make_endpoint(account=… or organization=…, event_types=()) -> an endpoint at the receiver, which
    verifies with its secret."""

    def make(*, account=None, organization=None, event_types=(), url=None):
        endpoint = endpoint_create(url=url or receiver.url, account=account, organization=organization,
                                   event_types=event_types, actor=Actor.command("tests"))
        receiver.secret = endpoint.secret
        return endpoint

    return make
