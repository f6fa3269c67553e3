"""gunicorn's settings, read when gunicorn starts in the checkout (its default is ./gunicorn.conf.py).

With LOG_FORMAT=json gunicorn's own lines (start-up, workers, and an access
line per request carrying the request's id) are JSON objects, like every
other line of the service (config/logs.py). Otherwise gunicorn logs as it
always does. https://docs.gunicorn.org/en/stable/settings.html#logconfig-dict
"""

from config import environment, logs

if environment.choice("LOG_FORMAT", "plain", logs.FORMATS) == "json":
    logconfig_dict = logs.logging_config(
        level=environment.choice("LOG_LEVEL", "info", logs.LEVELS).upper(), log_format="json",
        levels={"gunicorn.error": "INFO", "gunicorn.access": "INFO"},
    )

# A foreground command of a live sandbox (POST /api/sandboxes/commands) holds
# its worker up to SANDBOX_COMMAND_MAX_MS: the worker's timeout is above it.
# A --timeout on the command line takes precedence over this.
timeout = environment.integer("SANDBOX_COMMAND_MAX_MS", 300_000, minimum=1000) // 1000 + 30
