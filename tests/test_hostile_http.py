"""A hostile or careless client against the real server: gunicorn over HTTP, with a raw http.client.

Django's test client hides what these tests are about: it never sends a
chunked body, skips the CSRF check and sends paths as it is given them.
Here a gunicorn on a SQLite database of its own (tests/processes.py) gets
query strings setup and delete do not take, misspelt fields, chunked bodies
(well-formed, too large, broken), JSON nested 5000 deep, and paths and
methods nobody serves. Each answer must be a JSON error with the right code,
and nothing may happen to any account: the queued setup runs of the key's
own account and of another one are still queued afterwards (a delete cancels
its account's queued run, so a wrong delete would show).
"""

import http.client
import json
import socket
from dataclasses import dataclass

import pytest

from tests.processes import (
    Service,
    free_port,
    gunicorn_command,
    manage,
    service_environment,
    wait_until_healthy,
)

SETUP = "/api/sandboxes/setup"
DELETE = "/api/sandboxes"
BODY_LIMIT = 8192

MAKE_PEOPLE = """
import json
from accounts.audit import Actor
from accounts.services import account_create, api_key_create
from accounts.scopes import ALL_SCOPES
from orgs.services import membership_set, organization_create
tests = Actor.command("tests")
acme = organization_create(name="Acme", actor=tests)
people = {}
for name, role in (("alice", "owner"), ("bob", "member")):
    account = account_create(name=name.title(), email=f"{name}@example.com")
    membership_set(organization=acme, account=account, role=role, actor=tests)
    people[name] = {"id": str(account.pk),
                    "key": api_key_create(actor=tests, account=account, scopes=ALL_SCOPES)[1]}
print(json.dumps(people))
"""


@dataclass
class Server:
    port: int
    service: Service
    alice: dict
    bob: dict

    def send(self, method: str, path: str, *, key: str | None = None, body: bytes | None = None,
             chunks: list[bytes] | None = None, raw_chunked: bytes | None = None,
             headers: dict | None = None) -> tuple[int, dict, bytes]:
        """One request on a fresh connection: (status, headers, body).

        `chunks` are sent with Transfer-Encoding: chunked; `raw_chunked` is sent
        as the chunked body exactly as given (for broken chunks).
        """
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.putrequest(method, path, skip_accept_encoding=True)
            all_headers = {"Accept": "application/json", **(headers or {})}
            if key is not None:
                all_headers["x-api-key"] = key
            if body is not None or chunks is not None or raw_chunked is not None:
                all_headers.setdefault("Content-Type", "application/json")
            if body is not None:
                all_headers["Content-Length"] = str(len(body))
            if chunks is not None or raw_chunked is not None:
                all_headers["Transfer-Encoding"] = "chunked"
            for name, value in all_headers.items():
                connection.putheader(name, value)
            connection.endheaders()
            if body is not None:
                connection.send(body)
            if chunks is not None:
                for chunk in chunks:
                    connection.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                connection.send(b"0\r\n\r\n")
            if raw_chunked is not None:
                connection.send(raw_chunked)
            response = connection.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            connection.close()

    def json_error(self, status: int, *args, **kwargs) -> dict:
        """Send; the answer must be a JSON error with this status."""
        got, headers, payload = self.send(*args, **kwargs)
        assert got == status, self.service.report(f"{args} answered {got} {payload[:300]!r}, not {status}")
        assert headers["content-type"].startswith("application/json"), (headers, payload[:300])
        body = json.loads(payload)
        assert body["status"] == "error" and body["error"], body
        return body

    def queued_setups(self) -> dict[str, str]:
        """A queued setup run for alice and for bob (both asked by alice's key): their run ids."""
        runs = {}
        for name, target in (("alice", None), ("bob", self.bob["id"])):
            payload = json.dumps({"account_id": target}).encode()
            status, _, answer = self.send("POST", SETUP, key=self.alice["key"], body=payload)
            assert status == 200, self.service.report(f"setup answered {status} {answer!r}")
            runs[name] = json.loads(answer)["runId"]
        assert self.run_statuses(runs) == {"alice": "QUEUED", "bob": "QUEUED"}
        return runs

    def run_statuses(self, runs: dict[str, str]) -> dict[str, str]:
        statuses = {}
        for name, run_id in runs.items():
            status, _, answer = self.send("GET", f"/api/tasks/runs?runId={run_id}", key=self.alice["key"])
            assert status == 200, answer
            statuses[name] = json.loads(answer)["runs"][0]["status"]
        return statuses


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """gunicorn on a SQLite file of its own (migrated, with alice and bob of Acme); no worker, so runs stay queued."""
    folder = tmp_path_factory.mktemp("hostile")
    env = service_environment(database_url="", queue_name="hostile", sandbox_root=folder / "sandboxes",
                              git_root=folder / "git", var_dir=folder / "var")
    for name in ("DATABASE_URL", "REDIS_URL"):
        env.pop(name)  # the defaults: SQLite under VAR_DIR, django-q2's ORM broker
    env.update(THROTTLE_SETUP_RATE="off", THROTTLE_DELETE_RATE="off", API_MAX_BODY_BYTES=str(BODY_LIMIT))
    manage(env, "migrate", "--no-input")
    people = json.loads(manage(env, "shell", "-c", MAKE_PEOPLE).stdout.strip().splitlines()[-1])
    port = free_port()
    service = Service(base_url=f"http://127.0.0.1:{port}", git_root=folder / "git",
                      sandbox_root=folder / "sandboxes", queue_name="hostile", env=env, logs=folder / "logs")
    try:
        web = service.start("gunicorn", gunicorn_command(port))
        wait_until_healthy(service, web)
        yield Server(port=port, service=service, alice=people["alice"], bob=people["bob"])
    finally:
        service.stop()


# --- nothing happens to the wrong account ------------------------------------------------------


@pytest.mark.parametrize("query", ["account_id={bob}", "accountId={bob}", "account_id={alice}", "x"])
def test_delete_with_a_query_string_is_a_400_and_deletes_nothing(server, query):
    runs = server.queued_setups()
    path = f"{DELETE}?{query.format(bob=server.bob['id'], alice=server.alice['id'])}"
    body = server.json_error(400, "DELETE", path, key=server.alice["key"])
    assert body["invalid_fields"] == [query.split("=")[0]]
    assert server.run_statuses(runs) == {"alice": "QUEUED", "bob": "QUEUED"}


def test_setup_with_a_query_string_is_a_400(server):
    body = server.json_error(400, "POST", f"{SETUP}?account_id={server.bob['id']}", key=server.alice["key"])
    assert body["invalid_fields"] == ["account_id"]


@pytest.mark.parametrize("method, path", [("DELETE", DELETE), ("POST", SETUP)])
def test_a_misspelt_field_is_a_400_naming_it_and_nothing_happens(server, method, path):
    runs = server.queued_setups()
    body = server.json_error(400, method, path, key=server.alice["key"],
                             body=json.dumps({"accountId": server.bob["id"]}).encode())
    assert body["invalid_fields"] == ["accountId"]
    assert server.run_statuses(runs) == {"alice": "QUEUED", "bob": "QUEUED"}


def test_a_chunked_delete_body_is_read_and_acts_on_the_account_it_names(server):
    runs = server.queued_setups()
    payload = json.dumps({"account_id": server.bob["id"]}).encode()
    status, _, answer = server.send("DELETE", DELETE, key=server.alice["key"], chunks=[payload[:10], payload[10:]])
    assert status == 200, server.service.report(f"{status} {answer!r}")
    assert server.run_statuses(runs) == {"alice": "QUEUED", "bob": "CANCELED"}


def test_a_chunked_setup_body_is_read_and_its_fields_checked(server):
    body = server.json_error(400, "POST", SETUP, key=server.alice["key"], chunks=[b'{"accountId": null}'])
    assert body["invalid_fields"] == ["accountId"]


@pytest.mark.parametrize("method, path", [("DELETE", DELETE), ("POST", SETUP)])
def test_a_chunked_body_over_the_limit_is_a_413_and_nothing_happens(server, method, path):
    runs = server.queued_setups()
    padding = b" " * 1000
    chunks = [b'{"account_id": null'] + [padding] * (BODY_LIMIT // len(padding) + 1) + [b"}"]
    body = server.json_error(413, method, path, key=server.alice["key"], chunks=chunks)
    assert str(BODY_LIMIT) in body["error"]
    assert server.run_statuses(runs) == {"alice": "QUEUED", "bob": "QUEUED"}


def test_a_chunked_body_just_under_the_limit_is_read(server):
    padding = b" " * (BODY_LIMIT - 100)
    status, _, answer = server.send("POST", SETUP, key=server.alice["key"],
                                    chunks=[b'{"account_id": null', padding, b"}"])
    assert status == 200, answer


@pytest.mark.parametrize("broken", [b"zz\r\n{}\r\n0\r\n\r\n", b"5\r\n{}\r\n0\r\n\r\n"], ids=["bad size", "short"])
def test_a_broken_chunked_body_is_a_400_and_nothing_happens(server, broken):
    runs = server.queued_setups()
    server.json_error(400, "DELETE", DELETE, key=server.alice["key"], raw_chunked=broken)
    assert server.run_statuses(runs) == {"alice": "QUEUED", "bob": "QUEUED"}


def test_a_body_cut_short_of_its_content_length_is_a_400_and_nothing_happens(server):
    runs = server.queued_setups()
    payload = json.dumps({"account_id": server.bob["id"]}).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as raw:
        raw.sendall(b"DELETE /api/sandboxes HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                    b"x-api-key: " + server.alice["key"].encode() + b"\r\n"
                    b"Content-Length: %d\r\n\r\n" % (len(payload) + 50) + payload)
        raw.shutdown(socket.SHUT_WR)  # the client is gone before the body it announced is whole
        answer = b""
        while chunk := raw.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == b"400", answer[:500]
    assert b"application/json" in head.lower()
    assert json.loads(body)["error"] == "The request body could not be read"
    assert server.run_statuses(runs) == {"alice": "QUEUED", "bob": "QUEUED"}


@pytest.mark.parametrize("method, path", [("DELETE", DELETE), ("POST", SETUP)])
def test_json_nested_5000_deep_is_a_400(server, method, path):
    body = server.json_error(400, method, path, key=server.alice["key"], body=b"[" * 5000)
    assert "JSON" in body["error"]
    web_log = server.service.processes[0].output()
    assert "RecursionError" not in web_log and "Traceback" not in web_log, web_log[-3000:]


# --- never an HTML page ------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE"])
@pytest.mark.parametrize("path", ["/api/nope", "/api/sandboxes/setup/", "/api/sandboxes/", "//api/sandboxes/setup",
                                  "/api//sandboxes", "/api", "/healthz/", "//healthz", "/api/tasks/runs/"])
def test_an_unknown_path_is_a_json_404_for_any_method_without_a_csrf_token(server, method, path):
    server.json_error(404, method, path, key=server.alice["key"])
    server.json_error(404, method, path)


@pytest.mark.parametrize("method, path", [("GET", SETUP), ("PUT", DELETE), ("POST", "/api/tasks/runs"),
                                          ("PATCH", SETUP), ("POST", "/healthz"), ("DELETE", "/healthz")])
def test_a_wrong_method_is_a_json_405(server, method, path):
    server.json_error(405, method, path, key=server.alice["key"])


def test_a_post_with_a_session_cookie_but_no_csrf_token_is_json_too(server):
    server.json_error(404, "POST", "/api/nope", headers={"Cookie": "sessionid=abc; csrftoken=abc"})


def test_the_server_process_is_still_healthy(server):
    server.service.check_running()
    assert server.send("GET", "/healthz")[0] == 200
    assert "Traceback" not in server.service.processes[0].output()

