"""`python -m config.port_check HOST PORT`: whether `make run` can serve on HOST:PORT.

Run before anything else starts, so a port another program holds (or a port
that is not a number) stops `make run` with one line, before migrations, the
worker or the web server start. Exit status 0 when the port is free, 1 with
the reason on stderr otherwise.
"""

import errno
import socket
import sys


def problem(host: str, raw_port: str) -> str:
    """Why HOST:PORT cannot be served on, or "" when it can."""
    if not raw_port.isdigit() or not 1 <= int(raw_port) <= 65535:
        return f"PORT must be a number from 1 to 65535, not {raw_port!r}"
    port = int(raw_port)
    with socket.socket() as probe:
        # As the development server binds: a port left in TIME_WAIT by a
        # server that just stopped is free to take again.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                return f"port {port} on {host} is in use by another program; choose another, e.g. make run PORT={port + 10}"
            return f"cannot serve on {host}:{port}: {error.strerror}"
    return ""


def main(argv: list[str]) -> int:
    host, raw_port = argv
    reason = problem(host, raw_port)
    if reason:
        sys.stderr.write(f"make run: {reason}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
