"""Running a program with a timeout and a minimal environment.

Both local providers run the real git binary through this: nothing of the
service's own environment (secrets, DATABASE_URL, ...) reaches the program.
"""

import subprocess
from collections.abc import Mapping
from pathlib import Path

from sandboxes.providers.base import CommandResult, ProviderError, os_reason

BASE_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": "/dev/null",
}
STDERR_TAIL = 500


def run_command(
    argv: list[str],
    *,
    cwd: Path,
    timeout: float,
    error: type[ProviderError],
    env: Mapping[str, str] | None = None,
) -> CommandResult:
    """Run argv in cwd; raise `error` with a readable message if it fails or times out.

    The message names the command (`git push`) and its exit status; its output,
    which names this host's folders, is the error's `detail`, for the log.
    """
    full_env = {**BASE_ENV, "HOME": str(cwd), **(env or {})}
    try:
        completed = subprocess.run(
            argv, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise error(f"`{' '.join(argv[:2])}` did not finish within {timeout:g} s", detail=f"in {cwd}") from None
    except OSError as exc:
        raise error(f"`{argv[0]}` could not be started: {os_reason(exc)}", detail=f"{exc} (in {cwd})") from None
    if completed.returncode != 0:
        output = (completed.stderr or completed.stdout).strip()[-STDERR_TAIL:]
        raise error(f"`{' '.join(argv[:2])}` failed with exit status {completed.returncode}", detail=output)
    return CommandResult(exit_code=completed.returncode, stdout=completed.stdout, stderr=completed.stderr)
