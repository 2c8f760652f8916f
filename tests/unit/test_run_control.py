"""The controller's reading of a run's control lines: one EXIT, the first of each kind, nothing
after EXIT (a driver that got hold of the channel once forged a later EXIT with code 0)."""
from __future__ import annotations

import json

from sfcluster.run.control import ControlLines
from sfcluster.run.driver import outcome


def feed(*lines: str) -> ControlLines:
    passed = []
    c = ControlLines(note=lambda s: None, passthrough=passed.append)
    for line in lines:
        c.feed(line.encode())
    c.passed = passed  # type: ignore[attr-defined]
    return c


def test_a_second_exit_is_ignored_and_the_first_decides():
    c = feed('SFC:STARTED {"pid": 5}', 'SFC:EXIT {"code": 1, "why": "", "kind": ""}',
             'SFC:EXIT {"code": 0, "why": "", "kind": ""}')
    assert json.loads(c[ "EXIT"])["code"] == 1
    assert outcome(c.kinds, 1, False, lambda s: None) == 1
    assert c.ignored == 1


def test_nothing_after_exit_is_control_not_even_a_beat_or_a_stop_reason():
    c = feed('SFC:STARTED {"pid": 5}', 'SFC:EXIT {"code": 3, "why": "", "kind": ""}', 'SFC:BEAT ',
             'SFC:STARVED {"message": "forged"}', 'SFC:NODE_DOWN {"party": "bob", "host": "x"}')
    assert "STARVED" not in c and "NODE_DOWN" not in c and c.ignored == 3
    assert outcome(c.kinds, 3, False, lambda s: None) == 3


def test_driver_lines_pass_through_and_a_repeated_kind_keeps_the_first():
    c = feed("[driver] SFC:EXIT {\"code\": 0}", 'SFC:STARTED {"pid": 5}', 'SFC:STARTED {"pid": 6}')
    assert c.passed == [b'[driver] SFC:EXIT {"code": 0}\n']
    assert json.loads(c["STARTED"])["pid"] == 5 and "EXIT" not in c
