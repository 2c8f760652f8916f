"""A Runner that runs argv on this machine, as this user: a node that is a directory here.

The unit tests run the real node scripts through it (the controller's code unchanged, the node's
home in SFCLUSTER_NODE_HOME); `python` stands in for the node's interpreter, whose path in the
inventory (e.g. /opt/sf/bin/python) does not exist here. No sudo: a command that asks for it is a
test's mistake, not something to fake.
"""
from __future__ import annotations

import os
import shlex
import subprocess
import threading
from typing import Dict, Optional, Sequence

from sfcluster.remote.base import Input, OnData, Result


class LocalRunner:
    def __init__(self, name: str = "node", *, home: Optional[os.PathLike] = None, env: Optional[Dict[str, str]] = None,
                 python: Optional[str] = None, user: str = "me") -> None:
        """`home`: the node's home (SFCLUSTER_NODE_HOME); `env`: the whole environment instead;
        `python`: the interpreter that replaces argv[0] (the node's python) on every command. An
        `env` given is used as it is, not copied: a test may change the node's environment later."""
        self.name, self.user, self.python = name, user, python
        self.env = env if env is not None else dict(os.environ)
        if home is not None:
            self.env["SFCLUSTER_NODE_HOME"] = str(home)
        self.sent: list = []  # what each command got on stdin (bytes), in order

    def _argv(self, argv: Sequence[str]) -> list:
        argv = list(argv)
        return [self.python, *argv[1:]] if self.python else argv

    def _input(self, stdin: Input) -> Optional[bytes]:
        data = stdin.read() if hasattr(stdin, "read") else stdin
        data = data.encode() if isinstance(data, str) else data
        if data is not None:
            self.sent.append(data)
        return data

    def run(self, argv: Sequence[str], *, sudo: bool = False, timeout: Optional[float] = None,
            stdin: Input = None) -> Result:
        if sudo:
            raise AssertionError("LocalRunner runs as this user: no sudo")
        p = subprocess.run(self._argv(argv), input=self._input(stdin), capture_output=True, timeout=timeout, env=self.env)
        return Result(self.name, shlex.join(argv)[:200], p.returncode, p.stdout.decode(errors="replace"),
                      p.stderr.decode(errors="replace"))

    def stream(self, argv: Sequence[str], *, on_stdout: OnData = None, on_stderr: OnData = None,
               keep_stdin_open: bool = False, stop: Optional[threading.Event] = None,
               close_stdin: Optional[threading.Event] = None, stdin: Input = None, timeout: Optional[float] = None,
               idle_timeout: Optional[float] = None) -> int:
        """The whole command, then its output handed on (the callers read streams to the end)."""
        p = subprocess.run(self._argv(argv), input=self._input(stdin), capture_output=True, timeout=timeout, env=self.env)
        for sink, data in ((on_stdout, p.stdout), (on_stderr, p.stderr)):
            if sink and data:
                sink(data)
        return p.returncode

    def close(self) -> None:
        pass
