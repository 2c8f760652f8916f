"""Runner on this machine (subprocess): same protocol as SSH, for the controller's own steps and tests."""
from __future__ import annotations

import getpass
import shutil
import subprocess
import threading
import time
from typing import Optional, Sequence

from sfcluster.errors import CommandTimeout
from sfcluster.remote.base import Input, OnData, Result, command_line


class LocalRunner:
    def __init__(self, name: str = "local") -> None:
        self.name = name
        self.user = getpass.getuser()

    def run(self, argv: Sequence[str], *, sudo: bool = False, timeout: Optional[float] = None,
            stdin: Input = None) -> Result:
        command = command_line(argv, sudo=sudo, user=self.user)
        start = time.monotonic()
        try:
            proc = subprocess.run(["/bin/sh", "-c", command], input=stdin.encode() if isinstance(stdin, str) else stdin,
                                  capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            raise CommandTimeout(self.name, command, f"`{command}` did not finish within {timeout} s") from e
        return Result(self.name, command, proc.returncode, proc.stdout.decode(errors="replace"),
                      proc.stderr.decode(errors="replace"), time.monotonic() - start)

    def stream(self, argv: Sequence[str], *, on_stdout: OnData = None, on_stderr: OnData = None,
               keep_stdin_open: bool = False, stop: Optional[threading.Event] = None,
               close_stdin: Optional[threading.Event] = None) -> int:
        proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert proc.stdout is not None
        for chunk in iter(lambda: proc.stdout.read1(65536), b""):  # type: ignore[union-attr]
            if on_stdout:
                on_stdout(chunk)
        return proc.wait()

    def put(self, local_path: str, remote_path: str, mode: int = 0o644) -> None:
        shutil.copyfile(local_path, remote_path)

    def get(self, remote_path: str, local_path: str) -> None:
        shutil.copyfile(remote_path, local_path)

    def close(self) -> None:
        pass
