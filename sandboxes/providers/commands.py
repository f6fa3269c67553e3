"""Running a client's command in a sandbox: the small shell programs both backends run, and capped output.

A client's command is an argument list, never a shell string: it reaches the
programs below as their positional parameters ("$@"), which the shell passes
on without reading them. Each program records its process id in the
sandbox's commands folder (in a container: /tmp/.commands, outside the
workspace), so that any process of the service, on any host, can kill the
command's whole process group by its command id.

The time limit is enforced twice: inside, by `timeout` (TERM at the limit,
KILL two seconds later), and outside, by the backend, which kills the
process group when the limit and a grace period have passed.
https://www.gnu.org/software/coreutils/manual/html_node/timeout-invocation.html
"""

from dataclasses import dataclass, field

from sandboxes.providers.base import CommandOutput

# Seconds between `timeout`'s TERM and its KILL, and the grace the outside
# deadline gives the inside one before killing the process group itself.
KILL_AFTER_SECONDS = 2
OUTSIDE_GRACE_SECONDS = 3

# $0: command id; $1: commands folder; $2: working folder; $3: time limit (s); then the argv.
FOREGROUND = (
    'mkdir -p "$1" && echo $$ > "$1/$0.pid" && cd -- "$2" && s=$3 && shift 3 && '
    f'exec timeout -s TERM -k {KILL_AFTER_SECONDS} "$s" "$@"'
)
# The same, its output and exit status kept in files beside the pid (read by READ_BACKGROUND).
# `timeout` runs as a job whose pid is kept too (.job): GNU timeout leads a
# process group of its own, which KILL kills beside the shell's.
BACKGROUND = (
    'd="$1/$0"; mkdir -p "$1" && echo $$ > "$d.pid" && cd -- "$2" && s=$3 && shift 3 && '
    f'{{ timeout -s TERM -k {KILL_AFTER_SECONDS} "$s" "$@" > "$d.out" 2> "$d.err" < /dev/null & '
    'echo $! > "$d.job"; wait $!; echo $? > "$d.part"; mv "$d.part" "$d.exit"; }'
)
# $0: command id; $1: commands folder; $2: bytes to read of each stream.
# The first line says `finished <status>`, `running` (or not started yet: no pid) or `gone`
# (killed before it could say).
READ_BACKGROUND = (
    'd="$1/$0"; if [ -f "$d.exit" ]; then echo "finished $(cat "$d.exit")"; '
    'elif [ ! -s "$d.pid" ] || kill -0 "$(cat "$d.pid")" 2>/dev/null; then echo running; exit 0; '
    # It may have ended between the two looks: its exit status is there now.
    'elif [ -f "$d.exit" ]; then echo "finished $(cat "$d.exit")"; '
    'else echo gone; fi; head -c "$2" "$d.out" 2>/dev/null; head -c "$2" "$d.err" >&2 2>/dev/null; true'
)
# $0: command id; $1: commands folder. Kills the process groups the command leads, then the processes.
KILL = ('for f in "$1/$0.job" "$1/$0.pid"; do p=$(cat "$f" 2>/dev/null) && '
        '{ kill -KILL -"$p" 2>/dev/null; kill -KILL "$p" 2>/dev/null; }; done; true')
# $0: a folder; exit status 0 when it is one.
IS_FOLDER = 'test -d "$0" && ! test -L "$0"'
# What `timeout` and a KILL make a command exit with: its own, TERM's and KILL's statuses.
TIMEOUT_STATUSES = frozenset({124, 137, 143})


@dataclass
class CappedOutput:
    """stdout and stderr kept up to `cap` bytes each; what comes beyond is counted, not held."""

    cap: int
    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)
    stdout_truncated: bool = False
    stderr_truncated: bool = False

    def add(self, stream: str, chunk: bytes) -> None:
        if not chunk:
            return
        kept = getattr(self, stream)
        room = self.cap - len(kept)
        if len(chunk) > room:
            setattr(self, f"{stream}_truncated", True)
            chunk = chunk[:max(room, 0)]
        kept += chunk

    def text(self, stream: str) -> str:
        return bytes(getattr(self, stream)).decode("utf-8", "replace")


def background_state(first_line: str) -> tuple[str, int | None]:
    """("finished", status), ("running", None) or ("gone", None) from READ_BACKGROUND's first line."""
    state, _, status = first_line.strip().partition(" ")
    if state == "finished" and status.lstrip("-").isdigit():
        return state, int(status)
    return ("running", None) if state == "running" else ("gone", None)


def finished_command(output: CappedOutput, *, exit_code: int, elapsed: float, timeout_seconds: float,
                     killed: bool) -> CommandOutput:
    """How a foreground command ended: killed at the deadline, or timed out inside, has no exit code."""
    timed_out = killed or (exit_code in TIMEOUT_STATUSES and elapsed >= timeout_seconds)
    return CommandOutput(
        exit_code=None if timed_out else exit_code, stdout=output.text("stdout"), stderr=output.text("stderr"),
        stdout_truncated=output.stdout_truncated, stderr_truncated=output.stderr_truncated, timed_out=timed_out,
        duration_ms=int(elapsed * 1000),
    )


def background_command(stdout: bytes, stderr: bytes, *, cap: int) -> CommandOutput | None:
    """READ_BACKGROUND's output (read with `cap` + 1 bytes a stream) as a command's end; None while it runs."""
    first_line, _, stdout = stdout.partition(b"\n")
    state, exit_code = background_state(first_line.decode("ascii", "replace"))
    if state == "running":
        return None
    output = CappedOutput(cap=cap)
    output.add("stdout", stdout)
    output.add("stderr", stderr)
    timed_out = exit_code is None or exit_code in TIMEOUT_STATUSES
    return CommandOutput(exit_code=None if timed_out else exit_code, stdout=output.text("stdout"),
                         stderr=output.text("stderr"), stdout_truncated=output.stdout_truncated,
                         stderr_truncated=output.stderr_truncated, timed_out=timed_out)
