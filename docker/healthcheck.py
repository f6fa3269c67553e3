"""The image's HEALTHCHECK: exit 0 when GET /healthz on this container's web server answers 200.

Standard library only (the image has no curl). The request carries a Host
that ALLOWED_HOSTS accepts (its first name; a leading-dot domain becomes
that domain, `*` becomes localhost), as Django answers 400 to any other. The
port is gunicorn's: PORT, 8000 when unset.
"""

import os
import sys
import urllib.error
import urllib.request


def host_header() -> str:
    names = os.environ.get("ALLOWED_HOSTS", "").replace(",", " ").split()
    if not names or names[0] == "*":
        return "localhost"
    return names[0].lstrip(".")


def main() -> int:
    port = os.environ.get("PORT") or "8000"
    request = urllib.request.Request(f"http://127.0.0.1:{port}/healthz", headers={"Host": host_header()})
    try:
        with urllib.request.urlopen(request, timeout=4) as response:
            status = response.status
    except urllib.error.HTTPError as error:
        status = error.code
    except OSError as error:
        print(f"/healthz: no answer ({error})")
        return 1
    print(f"/healthz: {status}")
    return 0 if status == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
