"""remote/transfer.py: the run dir a node answers is checked before it goes anywhere (issue 17, item 14)."""
from __future__ import annotations

import pytest

from sfcluster.errors import SfclusterError
from sfcluster.remote.base import Result
from sfcluster.remote.transfer import checked_dir, push


class Answers:
    """A node whose ship.sh prints `line` (what a hostile node, or a shell that adds to it, could)."""
    name = "bob"

    def __init__(self, line: str):
        self.line = line

    def run(self, argv, stdin=None, timeout=None):
        return Result("bob", "ship", 0, self.line + "\n", "")


GOOD = "/home/sfops/.sfcluster/c/runs/r1"


def test_the_nodes_own_run_dir_is_taken_as_it_is():
    assert push(Answers(f"DIR {GOOD}"), "c", "runs/r1", b"") == GOOD


@pytest.mark.parametrize("bad", [
    GOOD + ":/tmp/evil",                           # a second PYTHONPATH entry, another user's dir
    "/tmp/evil:" + GOOD,
    "home/sfops/.sfcluster/c/runs/r1",             # relative: resolved against the worker's cwd
    "/home/sfops/.sfcluster/c/runs/r1/../../../../tmp/x/.sfcluster/c/runs/r1",
    "/tmp/.sfcluster/c/runs/r2",                   # not the run that was shipped
    "/home/sfops/.sfcluster/other/runs/r1",        # not this cluster's
    "//host/.sfcluster/c/runs/r1",
    "/home/sf\x1b]0;owned\x07ops/.sfcluster/c/runs/r1",
    "/home/sf\nops/.sfcluster/c/runs/r1",
])
def test_a_run_dir_that_is_not_a_plain_path_of_this_run_is_refused_naming_the_node(bad):
    with pytest.raises(SfclusterError) as ei:
        push(Answers(f"DIR {bad}"), "c", "runs/r1", b"")
    assert str(ei.value).startswith("[bob] ")
    with pytest.raises(SfclusterError) as ei:
        checked_dir("bob", "c", "runs/r1", bad)
    assert str(ei.value).startswith("[bob] answered") and "run dir" in str(ei.value)
