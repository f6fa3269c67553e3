"""What the bulk commands (cleanup_sandboxes, reconcile_sandboxes) share: progress and number options.

Progress is a tqdm bar on a terminal, and plain lines otherwise: a cron job's
or a CI's log gets a line at most every `interval` seconds and a last one at
the end, never a bar's carriage returns.
"""

import argparse
import time

from tqdm import tqdm

LOG_INTERVAL_SECONDS = 10.0


def number_between_1_and(maximum: int):
    """An argparse type: a whole number from 1 to `maximum`."""

    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            value = 0
        if not 1 <= value <= maximum:
            raise argparse.ArgumentTypeError(f"{raw!r} is not a whole number from 1 to {maximum}")
        return value

    return parse


class ProgressDisplay:
    def __init__(self, *, total: int, label: str, stream, interval: float = LOG_INTERVAL_SECONDS):
        """`stream` is the command's stderr (an OutputWrapper); stdout stays free for the report."""
        self.total = total
        self.label = label
        self.stream = stream
        self.interval = interval
        self.on_terminal = stream.isatty()
        self.started = time.monotonic()
        self.last_line = self.started
        self.done = 0
        self.status = ""
        self.bar = (
            # The stream under Django's OutputWrapper: the wrapper would end
            # each of tqdm's carriage-return updates with a newline.
            tqdm(total=total, desc=label, unit="row", file=stream._out, dynamic_ncols=True)
            if self.on_terminal
            else None
        )

    def update(self, done: int, status: str = "") -> None:
        """`done` items of `total` so far; `status` such as "deleted 980, failed 2"."""
        step, self.done, self.status = done - self.done, done, status
        if self.bar is not None:
            self.bar.update(step)
            if status:
                self.bar.set_postfix_str(status, refresh=False)
            return
        now = time.monotonic()
        if now - self.last_line >= self.interval:
            self.last_line = now
            self._line()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.done:
            self._line()

    def _line(self) -> None:
        elapsed = time.monotonic() - self.started
        share = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        status = f", {self.status}" if self.status else ""
        self.stream.write(f"{self.label}: {self.done}/{self.total}{share}{status}, {elapsed:.1f} s")
