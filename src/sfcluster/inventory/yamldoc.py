"""The inventory's YAML, read with bounds: a composer that stops a hostile or broken file early
(size, nodes, depth, alias cycles), and YamlDoc, the data with the line of every path and the
problems found so far, with the typed getters the schema (load.py) reads it through."""
from __future__ import annotations

import difflib
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

import yaml
from yaml.composer import ComposerError
from yaml.constructor import SafeConstructor
from yaml.reader import ReaderError

from sfcluster.errors import InventoryError, Problem

# YAML 1.1 reads these as booleans; no key of the inventory is a boolean, so they stay the words
# the user wrote (`firewall: off` must mean "off", not False).
_YAML11_BOOL_WORDS = {"yes", "no", "on", "off"}

# Limits that keep a hostile or broken file under a second of pure-Python YAML (~70 us a node,
# ~1.3 us a byte). A 100-party inventory with every key set is ~40 KB, ~3,500 nodes, 5 levels deep.
MAX_INVENTORY_BYTES = 256 * 1024   # checked before the file is read
MAX_YAML_NODES = 10_000            # keys and values, each alias counted as its whole expansion
MAX_YAML_DEPTH = 20                # nesting levels, through aliases too


_TOO_MANY_NODES = (f"more than {MAX_YAML_NODES} YAML nodes (keys and values, each alias counted as all it "
                   f"expands to); an inventory needs a few thousand: write values out instead of nesting aliases")
_TOO_DEEP = f"nested more than {MAX_YAML_DEPTH} levels deep; an inventory needs 5"


class _LimitExceeded(ComposerError):
    """A limit of this module was hit while composing: reported as is, not as a YAML syntax error."""


class _AliasNode(yaml.Node):
    """An alias where it is used: the anchored node (`value`) and the alias's own position."""

    id = "alias"

    def __init__(self, target: yaml.Node, anchor: str, start_mark: Any, end_mark: Any) -> None:
        super().__init__(target.tag, target, start_mark, end_mark)
        self.anchor = anchor


class _Composer(yaml.SafeLoader):
    """PyYAML's composer that keeps each alias as an _AliasNode (so a cycle or an expansion is
    reported at the alias's line) and stops past MAX_YAML_NODES nodes or MAX_YAML_DEPTH levels
    (its recursion would otherwise end in a RecursionError)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0

    def compose_node(self, parent: Optional[yaml.Node], index: Any) -> yaml.Node:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            return _AliasNode(super().compose_node(parent, index), event.anchor, event.start_mark, event.end_mark)
        self._nodes += 1
        if self._nodes > MAX_YAML_NODES:
            raise _LimitExceeded(None, None, _TOO_MANY_NODES, event.start_mark)
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise _LimitExceeded(None, None, _TOO_DEEP, event.start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


class YamlDoc:
    """YAML data plus the line of every path, and the list of problems found so far."""

    def __init__(self, text: str, source: str) -> None:
        self.source = source
        self.controller_files = False            # parse_inventory(controller_files=): check them too
        self.lines: Dict[Tuple[str, ...], int] = {}
        self.problems: List[Problem] = []
        self._visited = 0                        # nodes converted, aliases expanded (MAX_YAML_NODES)
        self._open: Set[int] = set()             # ids of the collections on the current path (cycles)
        self._aliases: List[Tuple[str, ...]] = []  # paths of the aliases being expanded, outermost first
        self._too_deep: Set[Tuple[str, ...]] = set()  # where MAX_YAML_DEPTH was reported
        try:
            node = yaml.compose(text, Loader=_Composer)
        except ReaderError as e:  # a character YAML does not allow (NUL, ESC...)
            line = text.count("\n", 0, e.position) + 1
            raise InventoryError(source, [Problem("", line, f"not valid YAML: character U+{e.character:04X} is "
                                                            f"not allowed ({e.reason})")]) from e
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            what = getattr(e, "problem", e)
            message = what if isinstance(e, _LimitExceeded) else _yaml_message(e, text)
            raise InventoryError(source, [Problem("", mark.line + 1 if mark else None, message)]) from e
        self.data = self._convert(node, ()) if node is not None else None

    def _convert(self, node: yaml.Node, path: Tuple[str, ...]) -> Any:
        self.lines[path] = node.start_mark.line + 1
        if not isinstance(node, _AliasNode):
            return self._convert_node(node, path)
        if id(node.value) in self._open:
            self.error(path, f"alias *{node.anchor} is used inside the node it names, which would then contain "
                             f"itself forever: remove the alias")
            return None
        self._aliases.append(path)
        try:
            return self._convert_node(node.value, path)
        finally:
            self._aliases.pop()

    def _convert_node(self, node: yaml.Node, path: Tuple[str, ...]) -> Any:
        self._count(path)
        if len(path) >= MAX_YAML_DEPTH:  # only through aliases: the composer stops deeper text
            where = self._aliases[0] if self._aliases else path
            if where not in self._too_deep:  # once per alias, however many of its branches go too deep
                self._too_deep.add(where)
                self.error(where, _TOO_DEEP)
            return None
        if isinstance(node, yaml.MappingNode):
            out: Dict[str, Any] = {}
            self._open.add(id(node))
            try:
                for k, v in node.value:
                    self._count(path)
                    key_node = k.value if isinstance(k, _AliasNode) else k
                    if not isinstance(key_node, yaml.ScalarNode):
                        self.error(path, "a key must be a plain name, not a list or a mapping", k.start_mark.line + 1)
                        continue
                    key = str(key_node.value)
                    if key in out:
                        first = self.lines.get(path + (key,))
                        self.lines[path + (key,)] = k.start_mark.line + 1
                        self.error(path + (key,), f"duplicate key (first at line {first})")
                    self.lines[path + (key,)] = k.start_mark.line + 1
                    out[key] = self._convert(v, path + (key,))
                    self.lines[path + (key,)] = k.start_mark.line + 1
            finally:
                self._open.discard(id(node))
            return out
        if isinstance(node, yaml.SequenceNode):
            self._open.add(id(node))
            try:
                return [self._convert(v, path + (str(i),)) for i, v in enumerate(node.value)]
            finally:
                self._open.discard(id(node))
        if node.tag == "tag:yaml.org,2002:str":
            return node.value
        if node.tag == "tag:yaml.org,2002:bool" and node.value.lower() in _YAML11_BOOL_WORDS:
            return node.value
        try:
            return SafeConstructor().construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, TypeError) as e:
            self.error(path, f"cannot read a value tagged {node.tag!r}: {getattr(e, 'problem', None) or e}")
            return None

    def _count(self, path: Tuple[str, ...]) -> None:
        """Count one more node; past MAX_YAML_NODES stop at once, naming the outermost alias being expanded."""
        self._visited += 1
        if self._visited > MAX_YAML_NODES:
            where = self._aliases[0] if self._aliases else path
            raise InventoryError(self.source, self.problems + [
                Problem(".".join(where) or "<top>", self.line_of(where), _TOO_MANY_NODES)])

    def line_of(self, path: Tuple[str, ...]) -> Optional[int]:
        """The line of `path`; a key absent from the file gets the line of its nearest present parent."""
        for i in range(len(path), -1, -1):
            line = self.lines.get(path[:i])
            if line:
                return line
        return None

    def error(self, path: Tuple[str, ...], message: str, line: Optional[int] = None) -> None:
        """Reads as `a.b.c (line N): message`; N is the line of `path` unless given."""
        self.problems.append(Problem(".".join(path) or "<top>", line or self.line_of(path), message))

    # -- typed getters: report and return None on a bad value ---------------------------------
    def mapping(self, value: Any, path: Tuple[str, ...], allowed: set) -> Dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.error(path, f"expected a mapping, got {show(value)}")
            return {}
        for key in value:
            if key not in allowed:
                near = difflib.get_close_matches(str(key), sorted(allowed), n=1, cutoff=0.75)
                hint = f"did you mean '{near[0]}'? " if near else ""
                self.error(path + (key,), f"unknown key '{key}' ({hint}allowed: {', '.join(sorted(allowed))})")
        return value

    def integer(self, m: Dict[str, Any], key: str, path: Tuple[str, ...], default: Optional[int],
                lo: Optional[int] = None, hi: Optional[int] = None, what: str = "") -> Optional[int]:
        if key not in m or m[key] is None:
            return default
        v = m[key]
        p = path + (key,)
        if isinstance(v, bool) or not isinstance(v, int):
            self.error(p, f"expected an integer, got {show(v)}")
            return default
        if lo is not None and v < lo or hi is not None and v > hi:
            self.error(p, f"{what or 'value'} {v} out of range {lo}-{hi}")
            return default
        return v

    def port(self, m: Dict[str, Any], key: str, path: Tuple[str, ...], default: Optional[int]) -> Optional[int]:
        return self.integer(m, key, path, default, 1024, 65535, "port")

    def string(self, m: Dict[str, Any], key: str, path: Tuple[str, ...], default: Optional[str],
               check: Optional[Callable[[str], Optional[str]]] = None) -> Optional[str]:
        if key not in m or m[key] is None:
            return default
        v = m[key]
        if not isinstance(v, str) or not v:
            self.error(path + (key,), f"expected a non-empty string, got {show(v)}")
            return default
        if check:
            msg = check(v)
            if msg:
                self.error(path + (key,), msg)
                return default
        return v


def show(v: Any) -> str:
    if isinstance(v, str):
        return repr(v)
    return f"{type(v).__name__} {v!r}"


def too_big(size: int) -> Problem:
    return Problem("", None, f"the file is {size} bytes, an inventory is at most {MAX_INVENTORY_BYTES}: "
                             f"is it the right file?")


def _yaml_message(e: yaml.YAMLError, text: str) -> str:
    """PyYAML's syntax error in words a reader of the file can act on: the column, the text there,
    and for the usual slips what they most likely are (PyYAML's own words stay, in parentheses)."""
    mark, ctx = getattr(e, "problem_mark", None), getattr(e, "context_mark", None)
    problem, context = str(getattr(e, "problem", "") or e), str(getattr(e, "context", "") or "")
    likely = ""
    if "<stream end>" in problem:
        likely = "the file ends inside a {...} or [...]: one is not closed"
    elif "expected <block end>" in problem or ("could not find expected ':'" in problem):
        likely = "the indentation of this line does not match the lines above it (YAML counts the spaces)"
    elif "flow mapping" in context or "flow sequence" in context:
        opened = f" opened on line {ctx.line + 1}" if ctx is not None else ""
        likely = f"a {{...}} or [...]{opened} is not closed (or a ',' is missing) before this"
    elif "mapping values are not allowed" in problem:
        likely = "a ': ' inside a value: put the value in quotes"
    elif "found character '\\t'" in problem:
        likely = "a tab: YAML indents with spaces only"
    where = ""
    if mark is not None:
        lines = text.splitlines()
        excerpt = lines[mark.line].strip() if mark.line < len(lines) else ""
        where = f" at column {mark.column + 1}" + (f" (the line reads: {excerpt[:80]!r})" if excerpt else "")
    core = f"{likely} ({problem})" if likely else problem
    return f"not valid YAML{where}: {core}"
