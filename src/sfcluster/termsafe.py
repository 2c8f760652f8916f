"""Text from a node reaches the operator's terminal as text, never as terminal control.

Lock info, output file names, a remote command's stderr and a driver's output are written by
whoever controls the head's Ray user (any driver, any Ray task). A terminal obeys what it is sent:
ESC starts CSI/OSC sequences that set the window title, clear the screen, move the cursor to
rewrite lines already shown, or (on some terminals) make it type back; the C1 controls
(0x80-0x9f) are CSI/OSC on their own for some terminals. Each of these, every other C0 control
but newline and tab, and DEL, becomes a visible escape (`\\x1b`). The CLI's consoles apply
`visible` to every string they render (cli/common.py); a driver's output passes through a
`StreamFilter`. What is kept on disk (driver.log, run.json) stays as the node sent it.
"""
from __future__ import annotations

import codecs
import re

# C0 but \t and \n, DEL, C1. \r too: it lets a line be overwritten in place.
CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# In a driver's output stream \r stays (progress bars redraw their line with it): it can only
# overwrite the driver's own current line, which the driver could have printed differently anyway.
STREAM_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def _escape(m: "re.Match[str]") -> str:
    return "\\x%02x" % ord(m.group())


def visible(text: str) -> str:
    """`text` with every control character but newline and tab written out as `\\xNN`."""
    return CONTROL.sub(_escape, text)


class StreamFilter:
    """A byte stream (a driver's stdout or stderr, chunk by chunk) made safe for a terminal:
    decoded as UTF-8 incrementally (a character split across two chunks stays whole), bytes that
    are not UTF-8 and control characters (but newline, tab and carriage return) as `\\xNN`."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="backslashreplace")

    def __call__(self, data: bytes) -> bytes:
        return STREAM_CONTROL.sub(_escape, self._decoder.decode(data)).encode("utf-8")

    def flush(self) -> bytes:
        """What an incomplete character at the very end of the stream left behind, as escapes."""
        return STREAM_CONTROL.sub(_escape, self._decoder.decode(b"", final=True)).encode("utf-8")


class SafeStream:
    """A callable that writes a byte stream (a driver's output, a past run's log) to a text
    stream's buffer (sys.stdout, sys.stderr) through a StreamFilter, on a terminal or not (a pipe
    may end at one: `| tee`). `close()` ends the stream (an incomplete character left, as escapes)."""

    def __init__(self, stream) -> None:  # noqa: ANN001 - a text stream with a .buffer
        self.stream, self.safe = stream, StreamFilter()

    def __call__(self, data: bytes) -> None:
        self.stream.buffer.write(self.safe(data))
        self.stream.buffer.flush()

    def close(self) -> None:
        self.stream.buffer.write(self.safe.flush())
        self.stream.buffer.flush()
