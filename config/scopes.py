"""The names of the API's scopes, which settings reads before Django starts (API_KEY_DEFAULT_SCOPES).

What a scope lets a key do, and the check, are in accounts/scopes.py.
"""

SANDBOXES_READ = "sandboxes:read"  # GET /api/sandboxes, the file read, runs, reading a command
SANDBOXES_SETUP = "sandboxes:setup"  # setup, start, renew
SANDBOXES_EXEC = "sandboxes:exec"  # commands, uploads, stop
SANDBOXES_DELETE = "sandboxes:delete"
AUDIT_READ = "audit:read"  # GET /api/audit

# In the order they are shown and stored.
ALL_SCOPES: tuple[str, ...] = (SANDBOXES_READ, SANDBOXES_SETUP, SANDBOXES_EXEC, SANDBOXES_DELETE, AUDIT_READ)
DEFAULT_SCOPES_SETTING = "sandboxes:read sandboxes:setup"
