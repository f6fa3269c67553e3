"""Where the CPU goes during a benchmark: the service's processes' CPU time, read from Linux's /proc.

A `CpuMeter` reading sums the user and system time of three groups of
processes: gunicorn (the master and its workers), PostgreSQL (every process of
the server: the benchmark's backends and the WAL writer and others working for
them) and Redis, when they run on this machine, with the machine's idle time.
The difference of two readings taken around a measured run, divided by the
run's requests, is the CPU each request cost each group. A process that ends
between the readings is counted too: its time goes to its parent's
"children" time (a backend whose connection the service closed after 60 s,
say). The load generator is the client and is left out. Where there is no
/proc, `CpuMeter.available()` is False and the benchmark prints no CPU figures.
"""

import os
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
GROUPS = ("gunicorn", "postgres", "redis")


@dataclass(frozen=True)
class Reading:
    seconds: dict  # CPU seconds so far, per group
    idle: float  # the machine's idle seconds so far, all cores together
    total: float  # the machine's seconds so far, all cores together


def cpu_per_request(before: Reading, after: Reading, requests: float) -> dict:
    """Milliseconds of CPU per request for each group, and the share of the machine left idle meanwhile."""
    figures = {group: (after.seconds[group] - before.seconds[group]) * 1000 / max(requests, 1) for group in GROUPS}
    figures["idle_share"] = (after.idle - before.idle) / max(after.total - before.total, 1e-9)
    return figures


class CpuMeter:
    def __init__(self, *, gunicorn_pid: int):
        self.gunicorn_pid = gunicorn_pid
        self.tick = os.sysconf("SC_CLK_TCK")

    @staticmethod
    def available() -> bool:
        return (PROC / "stat").exists()

    def reading(self) -> Reading:
        processes = dict(self._processes())
        seconds = dict.fromkeys(GROUPS, 0.0)
        for pid, (parent, name, own, children) in processes.items():
            group = self._group(pid, parent, name)
            if group is None:
                continue
            seconds[group] += own
            parent_group = self._group(parent, *processes.get(parent, (0, ""))[:2])
            if parent_group != group:  # the group's root: the time of its children that have ended
                seconds[group] += children
        machine = [int(value) for value in (PROC / "stat").read_text().splitlines()[0].split()[1:9]]
        return Reading(seconds, idle=(machine[3] + machine[4]) / self.tick, total=sum(machine) / self.tick)

    def _processes(self):
        """(pid, (parent pid, name, own CPU seconds, CPU seconds of its ended children)) of every process."""
        for entry in PROC.iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue  # it ended meanwhile
            # "pid (name) state ppid ... utime stime cutime cstime ...", the name possibly with spaces.
            name = stat[stat.index("(") + 1:stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2:].split()
            own = (int(fields[11]) + int(fields[12])) / self.tick
            children = (int(fields[13]) + int(fields[14])) / self.tick
            yield int(entry.name), (int(fields[1]), name, own, children)

    def _group(self, pid: int, parent: int, name: str) -> str | None:
        if self.gunicorn_pid in (pid, parent):
            return "gunicorn"
        if name == "postgres":
            return "postgres"
        if name == "redis-server":
            return "redis"
        return None
