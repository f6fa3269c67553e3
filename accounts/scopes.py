"""What an API key may do: its scopes.

A key holds a list of scopes, and each API endpoint names, per HTTP method,
the one scope it needs (`ApiView.required_scopes`, checked for every view by
orgs.permissions.KeyHasScope). Scopes narrow what a key may do; which
accounts it may do it to is decided apart (orgs/access.py).

Plain Python, no Django. The names themselves are in config/scopes.py, which
config/settings.py reads to validate API_KEY_DEFAULT_SCOPES before Django starts.
"""

from collections.abc import Iterable

from config.scopes import (
    ALL_SCOPES,
    AUDIT_READ,
    SANDBOXES_DELETE,
    SANDBOXES_EXEC,
    SANDBOXES_READ,
    SANDBOXES_SETUP,
)

DESCRIPTIONS = {
    SANDBOXES_READ: "see the sandbox, read its files, its runs and its commands",
    SANDBOXES_SETUP: "set the sandbox up, start it, renew it",
    SANDBOXES_EXEC: "run commands in the sandbox, upload files, stop it",
    SANDBOXES_DELETE: "delete the sandbox",
    AUDIT_READ: "read the audit trail (GET /api/audit)",
}

# An endpoint's method that needs no scope: any usable key may call it (GET /api/ping).
NO_SCOPE = ""


def unknown_scopes(scopes: Iterable[str]) -> list[str]:
    return [scope for scope in scopes if scope not in ALL_SCOPES]


def normalized_scopes(scopes: Iterable[str]) -> list[str]:
    """The scopes, each once, in ALL_SCOPES's order; ValueError naming any that is not a scope."""
    scopes = list(scopes)
    unknown = unknown_scopes(scopes)
    if unknown:
        raise ValueError(f"not a scope: {', '.join(unknown)} (the scopes are {', '.join(ALL_SCOPES)})")
    return [scope for scope in ALL_SCOPES if scope in scopes]


def scopes_display(scopes: Iterable[str]) -> str:
    """For people: the scopes separated by spaces, or "no scope"."""
    scopes = list(scopes)
    return " ".join(scopes) if scopes else "no scope"


def required_scope(key, required_scopes: dict[str, str], method: str) -> str:
    """Why the key may not call the method of a view that requires `required_scopes`; "" when it may.

    HEAD is asked as GET (Django answers it with the GET handler); OPTIONS
    only describes the endpoint and needs no scope. A method the view does
    not declare is refused: a forgotten declaration fails closed.
    """
    method = "GET" if method == "HEAD" else method
    if method == "OPTIONS":
        return ""
    if method not in required_scopes:
        return f"This endpoint declares no scope for {method}"
    scope = required_scopes[method]
    if scope == NO_SCOPE or scope in key.scopes:
        return ""
    return f"This key lacks the scope {scope}"
