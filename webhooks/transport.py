"""Sending one webhook over HTTP, safely: vetted addresses, no redirects, at most 1 KiB read back.

The URL's host is resolved once; every address it resolves to must be a
public one (not loopback, private, link-local such as the cloud metadata
address 169.254.169.254, shared, multicast or reserved) unless
WEBHOOK_ALLOW_PRIVATE is on. The connection then goes to the vetted address
itself, with the host name kept for the Host header and for TLS (SNI and the
certificate check), so a second DNS answer cannot point the request
elsewhere (DNS rebinding).
"""

import ipaddress
import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import urllib3
from django.conf import settings

MAX_ANSWER_BYTES = 1024


class UnsafeUrl(ValueError):
    """A URL the service will not send webhooks to; the message says why."""


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str
    address: str  # the vetted IP address to connect to


@dataclass
class Answer:
    status_code: int | None
    body: str
    error: str
    duration_ms: int

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def url_check(url: str) -> Target:
    """The URL's target, with the address to connect to; UnsafeUrl if the service may not call it."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeUrl(f"{url!r} is not a URL ({exc})") from None
    allowed = ("https", "http") if settings.WEBHOOK_ALLOW_HTTP else ("https",)
    if parts.scheme not in allowed:
        raise UnsafeUrl(f"the URL must start with https:// (it starts with {parts.scheme or 'nothing'}://)"
                        if parts.scheme != "http" else "the URL must use https (http needs WEBHOOK_ALLOW_HTTP=1)")
    if not parts.hostname:
        raise UnsafeUrl(f"{url!r} names no host")
    if parts.username or parts.password:
        raise UnsafeUrl("the URL must not carry a user name or password")
    port = port or (443 if parts.scheme == "https" else 80)
    try:
        found = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UnsafeUrl(f"the host {parts.hostname} cannot be resolved ({exc})") from None
    addresses = list(dict.fromkeys(info[4][0] for info in found))
    if not settings.WEBHOOK_ALLOW_PRIVATE:
        for address in addresses:
            ip = ipaddress.ip_address(address.split("%")[0])
            if not ip.is_global or ip.is_multicast:
                raise UnsafeUrl(
                    f"the host {parts.hostname} resolves to {address}, a loopback, private, link-local or "
                    "reserved address (allowed only with WEBHOOK_ALLOW_PRIVATE=1)"
                )
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(scheme=parts.scheme, host=parts.hostname, port=port, path=path, address=addresses[0])


def post(*, url: str, body: str, headers: dict[str, str], timeout: float) -> Answer:
    """POST the body to the URL once; never raises, the Answer says what happened."""
    started = time.monotonic()

    def answer(status_code=None, text="", error="") -> Answer:
        return Answer(status_code=status_code, body=text, error=error[:500],
                      duration_ms=int((time.monotonic() - started) * 1000))

    try:
        target = url_check(url)
    except UnsafeUrl as exc:
        return answer(error=f"Refused: {exc}")
    host_header = target.host if ":" not in target.host else f"[{target.host}]"
    default_port = 443 if target.scheme == "https" else 80
    if target.port != default_port:
        host_header += f":{target.port}"
    options = {"timeout": urllib3.Timeout(total=timeout), "retries": False, "maxsize": 1}
    if target.scheme == "https":
        pool = urllib3.HTTPSConnectionPool(target.address, target.port, server_hostname=target.host,
                                           assert_hostname=target.host, **options)
    else:
        pool = urllib3.HTTPConnectionPool(target.address, target.port, **options)
    try:
        response = pool.urlopen(
            "POST", target.path, body=body.encode(),
            headers={**headers, "Host": host_header, "Content-Type": "application/json",
                     "User-Agent": "sandbox-service-webhooks"},
            redirect=False, preload_content=False, assert_same_host=False,
        )
        try:
            text = response.read(MAX_ANSWER_BYTES, decode_content=False).decode("utf-8", errors="replace")
        finally:
            response.release_conn()
        return answer(status_code=response.status, text=text,
                      error="" if 200 <= response.status < 300 else f"Answered {response.status}")
    except urllib3.exceptions.TimeoutError:
        return answer(error=f"No answer within {timeout:g} s")
    except urllib3.exceptions.HTTPError as exc:
        return answer(error=f"Could not deliver: {exc}")
    finally:
        pool.close()
