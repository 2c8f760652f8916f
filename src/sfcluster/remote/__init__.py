"""Transports: a Runner protocol (run/stream/put/get), SSH and local implementations, fan-out."""
from sfcluster.remote.base import Result, Runner, command_line
from sfcluster.remote.group import GroupResult, fan_out
from sfcluster.remote.ssh import SshRunner, SshTarget

__all__ = ["Result", "Runner", "command_line", "GroupResult", "fan_out", "SshRunner", "SshTarget"]
