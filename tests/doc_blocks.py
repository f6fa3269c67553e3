"""The shell blocks of README.md and docs/*.md, each with the marker on the line before it.

A marker is an HTML comment, invisible on the rendered page. It either names
the test that runs the block as typed:

    <!-- organization-example: tests/test_make_run.py runs the next block against `make run` -->

or says why no test runs it, and where the same thing is tested instead:

    <!-- not run by the tests: it needs a Docker engine; tests/reliability/… run … -->

tests/test_doc_blocks.py holds the rule (every block marked, every claim
true); the tests that run blocks find them by their marker's name.
"""

import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The fences GitHub renders as shell; a block fenced with any of them is held to the rule.
SHELL_FENCE = re.compile(r"^```(?:sh|bash|shell|console|zsh)\s*$")
MARKER = re.compile(r"^<!--\s*(?P<name>[^:]+?)\s*:\s*(?P<says>.*?)\s*-->$")
NOT_RUN = "not run by the tests"
DOCUMENTED_PORT = "http://127.0.0.1:8000/"


def pages() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


@dataclass(frozen=True)
class ShellBlock:
    page: str  # relative to the checkout
    line: int  # of the opening fence, counted from 1
    marker: str  # the line before the fence
    text: str

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def marker_name(self) -> str | None:
        match = MARKER.match(self.marker.strip())
        return match["name"] if match else None

    @property
    def marker_says(self) -> str:
        match = MARKER.match(self.marker.strip())
        return match["says"] if match else ""

    def with_port(self, port: int) -> str:
        """The block as typed, against a server on `port` instead of the documented 8000."""
        return self.text.replace(DOCUMENTED_PORT, f"http://127.0.0.1:{port}/")


def shell_blocks(page: Path) -> list[ShellBlock]:
    lines = page.read_text().splitlines()
    blocks, index = [], 0
    while index < len(lines):
        if SHELL_FENCE.match(lines[index]):
            end = index + 1
            while end < len(lines) and lines[end].strip() != "```":
                end += 1
            blocks.append(ShellBlock(page=str(page.relative_to(REPO)), line=index + 1,
                                     marker=lines[index - 1] if index else "",
                                     text="".join(line + "\n" for line in lines[index + 1:end])))
            index = end
        index += 1
    return blocks


def every_shell_block() -> list[ShellBlock]:
    return [block for page in pages() for block in shell_blocks(page)]


def marked_block(name: str) -> ShellBlock:
    """The one block, of README.md or docs/*.md, whose marker is named `name`."""
    found = [block for block in every_shell_block() if block.marker_name == name]
    assert len(found) == 1, f"expected one shell block marked {name!r}, found {[block.where for block in found]}"
    return found[0]
