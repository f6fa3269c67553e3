"""A stand-in for DNS where the docs' commands run in the tests: example.com's names resolve without a server.

Python imports `sitecustomize` as it starts, from its path; tests/test_make_run.py
puts this folder on PYTHONPATH for the docs' blocks it types, and for nothing
else. A test machine may have no DNS, and the webhook URLs the docs show
(https://hooks.example.com/…) are checked when an endpoint is made: the
service resolves the host and refuses one without a public address
(webhooks/transport.py). Here example.com and its subdomains, names reserved
for documentation (RFC 2606), resolve to 93.184.215.14, a public address
example.com has long had; every other name goes to the system's resolver.
Nothing connects to it: the blocks only register, list, rotate and disable
endpoints.
"""

import socket

EXAMPLE_ADDRESS = "93.184.215.14"
system_getaddrinfo = socket.getaddrinfo


def getaddrinfo(host, port, *args, **kwargs):
    name = host.decode() if isinstance(host, bytes) else host
    if isinstance(name, str) and (name.rstrip(".") == "example.com" or name.rstrip(".").endswith(".example.com")):
        host = EXAMPLE_ADDRESS
    return system_getaddrinfo(host, port, *args, **kwargs)


socket.getaddrinfo = getaddrinfo
