"""PEP 508 environment markers and `Requires-Dist` lines, evaluated for the NODES' interpreter.

Why our own: `pip download --python-version 3.10` run on a Python 3.11 controller (pip 23.2.1)
evaluates markers with the controller's interpreter, so `async-timeout; python_version < "3.11"`
(aiohttp's) is left out and provision fails on every node after streaming the wheelhouse.
`packaging` would do this, but it is not one of sfcluster's dependencies (pip's vendored copy is
pip's business). Versions compare by their release numbers and pre-release tag, which is all
the variables markers use (python_version, python_full_version, implementation_version) need."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, FrozenSet, List, Optional, Tuple

NAME = re.compile(r"^([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)\s*(?:\[([^\]]*)\])?\s*(.*)$")
TOKEN = re.compile(r"""\s*(?:(?P<str>'[^']*'|"[^"]*")|(?P<op>===|==|!=|<=|>=|~=|<|>|\(|\))"""
                   r"""|(?P<word>[A-Za-z_][A-Za-z0-9_.]*))""")
VERSION = re.compile(r"^v?(\d+(?:\.\d+)*)(?:[-_.]?(a|b|c|rc|alpha|beta|pre|preview)[-_.]?(\d*))?(.*)$", re.I)


class MarkerError(ValueError):
    """A marker this evaluator cannot read."""


def canonical(name: str) -> str:
    """PEP 503 normalized distribution name: `Async_Timeout` -> `async-timeout`."""
    return re.sub(r"[-_.]+", "-", name).lower()


def target_environment(python_version: str, machine: str = "x86_64") -> Dict[str, str]:
    """The marker variables of a CPython `python_version` (major.minor) on Linux `machine`.
    The patch level is unknown; `.0` stands for it (markers on it are rare)."""
    full = python_version + ".0"
    return {"python_version": python_version, "python_full_version": full, "implementation_version": full,
            "implementation_name": "cpython", "platform_python_implementation": "CPython", "os_name": "posix",
            "sys_platform": "linux", "platform_system": "Linux", "platform_machine": machine,
            "platform_release": "", "platform_version": ""}


def _version_key(v: str) -> Optional[Tuple]:
    m = VERSION.match(v.strip())
    if not m:
        return None
    release = tuple(int(x) for x in m.group(1).split("."))
    release += (0,) * (8 - len(release))
    pre = m.group(2)
    rank = {"a": 0, "alpha": 0, "b": 1, "beta": 1, "c": 2, "rc": 2, "pre": 2, "preview": 2}.get((pre or "").lower(), 3)
    return release, rank, int(m.group(3) or 0) if pre else 0, m.group(4)


def _compare(left: str, op: str, right: str) -> bool:
    if op == "in":
        return left in right
    if op == "not in":
        return left not in right
    if op in ("==", "!=") and right.endswith(".*"):
        same = (left + ".").startswith(right[:-1])
        return same if op == "==" else not same
    a, b = _version_key(left), _version_key(right)
    if a is None or b is None or op == "===":
        if op in ("==", "==="):
            return left == right
        if op == "!=":
            return left != right
        raise MarkerError(f"cannot compare {left!r} {op} {right!r}")
    if op == "~=":
        parts = right.split(".")
        prefix = _version_key(".".join(parts[:-1])) if len(parts) > 1 else None
        return a >= b and prefix is not None and a[0][:len(parts) - 1] == prefix[0][:len(parts) - 1]
    return {"==": a == b, "!=": a != b, "<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]


class _Parser:
    def __init__(self, text: str, env: Dict[str, str]) -> None:
        self.tokens: List[Tuple[str, str]] = []
        pos = 0
        while pos < len(text):
            if text[pos:].strip() == "":
                break
            m = TOKEN.match(text, pos)
            if not m:
                raise MarkerError(f"cannot read the marker {text!r} at {text[pos:]!r}")
            kind = m.lastgroup or ""
            self.tokens.append((kind, m.group(kind)))
            pos = m.end()
        self.i, self.env, self.text = 0, env, text

    def peek(self) -> Tuple[str, str]:
        return self.tokens[self.i] if self.i < len(self.tokens) else ("end", "")

    def take(self) -> Tuple[str, str]:
        tok = self.peek()
        self.i += 1
        return tok

    def expr(self) -> bool:
        value = self.conjunction()
        while self.peek() == ("word", "or"):
            self.take()
            value = self.conjunction() or value
        return value

    def conjunction(self) -> bool:
        value = self.atom()
        while self.peek() == ("word", "and"):
            self.take()
            value = self.atom() and value
        return value

    def atom(self) -> bool:
        if self.peek() == ("op", "("):
            self.take()
            value = self.expr()
            if self.take() != ("op", ")"):
                raise MarkerError(f"unbalanced parentheses in {self.text!r}")
            return value
        left = self.value()
        kind, op = self.take()
        if (kind, op) == ("word", "not") and self.peek() == ("word", "in"):
            self.take()
            op = "not in"
        elif not (kind == "op" or (kind, op) == ("word", "in")):
            raise MarkerError(f"expected an operator in {self.text!r}, got {op!r}")
        right = self.value()
        return _compare(left, op, right)

    def value(self) -> str:
        kind, text = self.take()
        if kind == "str":
            return text[1:-1]
        if kind == "word" and text in self.env:
            return self.env[text]
        raise MarkerError(f"unknown marker variable {text!r} in {self.text!r}")


def evaluate(marker: str, env: Dict[str, str], extras: FrozenSet[str] = frozenset()) -> bool:
    """True when `marker` holds in `env` for one of the requested `extras` (none: extra == "")."""
    for extra in sorted(extras) or [""]:
        parser = _Parser(marker, dict(env, extra=canonical(extra) if extra else ""))
        # the string an `extra` is compared with is a name: normalized, as PEP 685 says
        parser.tokens = [(k, "'%s'" % canonical(v[1:-1]) if k == "str" and _beside_extra(parser.tokens, i) else v)
                         for i, (k, v) in enumerate(parser.tokens)]
        result = parser.expr()
        if parser.peek()[0] != "end":
            raise MarkerError(f"cannot read the marker {marker!r} past {parser.peek()[1]!r}")
        if result:
            return True
    return False


def check(marker: str) -> None:
    """Raise MarkerError unless `marker` reads as a marker (whatever it evaluates to)."""
    evaluate(marker, target_environment("3.10"))


def _beside_extra(tokens: List[Tuple[str, str]], i: int) -> bool:
    extra = ("word", "extra")
    return (i >= 2 and tokens[i - 2] == extra) or (i + 2 < len(tokens) and tokens[i + 2] == extra)


@dataclass(frozen=True)
class Requirement:
    """One `Requires-Dist` line: name, extras, version specifier and marker (as written)."""

    name: str
    extras: FrozenSet[str]
    specifier: str
    marker: Optional[str]

    @property
    def key(self) -> str:
        return canonical(self.name)

    def for_pip(self) -> str:
        """The requirement without its marker: what `pip download` is asked for."""
        extras = f"[{','.join(sorted(self.extras))}]" if self.extras else ""
        return f"{self.name}{extras}{self.specifier}"


def parse_requirement(line: str) -> Requirement:
    """`name [extras] (specifier) ; marker`, as METADATA writes it."""
    text, _, marker = line.partition(";")
    m = NAME.match(text.strip())
    if not m:
        raise MarkerError(f"cannot read the requirement {line!r}")
    extras = frozenset(canonical(e.strip()) for e in (m.group(2) or "").split(",") if e.strip())
    spec = m.group(3).strip()
    if spec.startswith("(") and spec.endswith(")"):
        spec = spec[1:-1].strip()
    if spec.startswith("@"):
        raise MarkerError(f"{line!r} is a direct URL reference: a wheelhouse cannot hold it")
    return Requirement(m.group(1), extras, spec.replace(" ", ""), marker.strip() or None)


def requires_dist(metadata: str) -> List[Requirement]:
    """The `Requires-Dist` lines of a wheel's METADATA (its header part)."""
    out = []
    for line in metadata.split("\n\n", 1)[0].splitlines():
        if line.lower().startswith("requires-dist:"):
            out.append(parse_requirement(line.split(":", 1)[1].strip()))
    return out
