"""Every shell block of README.md and docs/*.md says, on the line before it, whether a test runs it.

A reader types these blocks; one that no test runs drifts from the service
unnoticed. So each carries a marker (tests/doc_blocks.py): its name and the
test that runs it as typed, or `not run by the tests:` and why (a real GitHub
token, an image registry, sudo, a production host, settings to fill in),
naming where the same thing is tested instead. A block without one fails
here with its page and line; so does a marker whose claim is false (a test
that does not exist or never names the block, a file that is not there).
"""

import re

import pytest

from tests.doc_blocks import NOT_RUN, REPO, every_shell_block

HOW_TO_MARK = (
    "Put a marker on the line just before each shell block: "
    "<!-- NAME: tests/test_….py runs the next block … --> when a test runs it as typed (the test finds it with "
    "tests.doc_blocks.marked_block(NAME)), or <!-- not run by the tests: WHY; where it is tested instead -->."
)
# Files a marker may name: tests, the CI script, the Docker files.
NAMED_FILE = re.compile(r"(?:tests|docker|\.ci)/[\w./-]*\w")

BLOCKS = every_shell_block()


def test_the_pages_have_shell_blocks_to_check():
    assert {block.page for block in BLOCKS} >= {"README.md", "docs/api.md", "docs/security.md"}


def test_every_shell_block_has_a_marker_on_the_line_just_before_it():
    unmarked = [f"{block.where}: the line before the block is {block.marker!r}, not a marker"
                for block in BLOCKS if block.marker_name is None]
    assert not unmarked, "\n".join(unmarked) + "\n" + HOW_TO_MARK


@pytest.mark.parametrize("block", [block for block in BLOCKS if block.marker_name not in (None, NOT_RUN)],
                         ids=lambda block: block.marker_name)
def test_a_block_marked_as_run_names_a_test_that_runs_it(block):
    tests = [name for name in NAMED_FILE.findall(block.marker_says) if name.startswith("tests/")]
    assert tests, f"{block.where}: the marker names no test file: {block.marker}"
    for name in tests:
        assert (REPO / name).is_file(), f"{block.where}: {name} does not exist"
        assert block.marker_name in (REPO / name).read_text(), (
            f"{block.where}: {name} never names the block {block.marker_name!r}, so it cannot run it")


@pytest.mark.parametrize("block", [block for block in BLOCKS if block.marker_name == NOT_RUN],
                         ids=lambda block: block.where)
def test_a_block_not_run_says_why_and_names_only_files_that_exist(block):
    assert len(block.marker_says.split()) >= 3, f"{block.where}: say why no test runs the block: {block.marker}"
    missing = [name for name in NAMED_FILE.findall(block.marker_says) if not (REPO / name).exists()]
    assert not missing, f"{block.where}: the marker names files that do not exist: {missing}"


def test_each_run_marker_names_one_block():
    names = [block.marker_name for block in BLOCKS if block.marker_name not in (None, NOT_RUN)]
    assert sorted(names) == sorted(set(names)), f"marker names used twice: {names}"
