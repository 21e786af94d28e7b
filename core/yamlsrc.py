"""YAML loading that remembers where every key came from.

An installer fixing a config on a phone over SSH needs ``site.yaml:23`` and the
key, not a Python traceback.  We load YAML into plain dicts/lists and keep a
side table from the key path (``("buses", 0, "port")``) to its line/column, so
any later validation error can be pointed back at the file.

A config comes from a person, but a hostile or broken one must still end as a
``file:line: key: message`` problem, never a traceback or a hung validator, so
the document is bounded before it is built (``Limits``): its size in bytes,
how deep it nests, and how many values it becomes once aliases are expanded
(an alias cycle or a "billion laughs" bomb stops at the alias that crosses the
line).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

_MERGE_TAG = "tag:yaml.org,2002:merge"
_PLAIN_TAGS = ("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq")
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")

Path_ = tuple[str | int, ...]


@dataclass(frozen=True)
class Limits:
    """How big a config may be.  The largest shipped site file (config/community.yaml) is 6 KB, 6 levels deep, ~500 values."""

    max_bytes: int = 1024 * 1024  # read no further: a config is never this big
    max_depth: int = 64  # nesting levels, counted through aliases too
    max_values: int = 100_000  # values once every alias is expanded


LIMITS = Limits()


class ConfigError(Exception):
    """One or more problems in a config file; each names file, line and key."""

    def __init__(self, problems: list["Problem"]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


@dataclass(frozen=True)
class Problem:
    file: str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.key or '(top level)'}: {self.message}" if self.key else f"{where}: {self.message}"


def dotted(path: Path_) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


@dataclass
class Source:
    """A loaded YAML document plus the position of every key."""

    file: str
    data: Any
    marks: dict[Path_, int] = field(default_factory=dict)
    from_env: frozenset[Path_] = frozenset()  # keys whose value names a ${VAR} (a secret kept out of the file)

    def line_of(self, path: Path_) -> int | None:
        """Line of the deepest known prefix of ``path`` (1-based)."""
        p = tuple(path)
        while p:
            if p in self.marks:
                return self.marks[p]
            p = p[:-1]
        return self.marks.get((), None)

    def problem(self, path: Path_, message: str) -> Problem:
        return Problem(self.file, self.line_of(path), dotted(path), message)


def _build(node: Node, path: Path_, marks: dict[Path_, int], file: str, problems: list[Problem],
           env: set[Path_]) -> Any:
    if isinstance(node, (MappingNode, SequenceNode)) and node.tag not in _PLAIN_TAGS:
        problems.append(Problem(file, node.start_mark.line + 1, dotted(path),
                                f"unsupported YAML tag {node.tag!r} (remove it; plain values only)"))
        return None
    if isinstance(node, MappingNode):
        out: dict[str, Any] = {}
        merged: list[tuple[dict[str, Any], dict[Path_, int]]] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                # "<<: *anchor" (or a list of anchors): keys given here win,
                # the first source wins among sources; marks point at the anchor.
                sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
                for source in sources:
                    if not isinstance(source, MappingNode):
                        problems.append(Problem(file, source.start_mark.line + 1, dotted(path),
                                                "'<<' can only merge mappings (use <<: *anchor)"))
                        continue
                    source_marks: dict[Path_, int] = {}
                    merged.append((_build(source, path, source_marks, file, problems, env), source_marks))
                continue
            if not isinstance(key_node, ScalarNode):
                problems.append(Problem(file, key_node.start_mark.line + 1, dotted(path), "keys must be plain names"))
                continue
            key = key_node.value
            kpath = path + (key,)
            if key in out:
                problems.append(
                    Problem(file, key_node.start_mark.line + 1, dotted(kpath),
                            f"duplicate key (first given on line {marks[kpath]})")
                )
                continue
            marks[kpath] = key_node.start_mark.line + 1
            out[key] = _build(value_node, kpath, marks, file, problems, env)
        for data, source_marks in merged:
            for key, value in data.items():
                if key in out:
                    continue
                out[key] = value
                kpath = path + (key,)
                for p, line in source_marks.items():
                    if p[: len(kpath)] == kpath:
                        marks[p] = line
        return out
    if isinstance(node, SequenceNode):
        items = []
        for i, item in enumerate(node.value):
            marks[path + (i,)] = item.start_mark.line + 1
            items.append(_build(item, path + (i,), marks, file, problems, env))
        return items
    # Scalars: let PyYAML resolve the type (int, float, bool, null, str).
    try:
        value = _scalar_loader().construct_object(node, deep=True)
    except yaml.constructor.ConstructorError:
        problems.append(Problem(file, node.start_mark.line + 1, dotted(path),
                                f"unsupported YAML tag {node.tag!r} (remove it; plain values only)"))
        return None
    except Exception:  # e.g. "!!int abc"
        problems.append(Problem(file, node.start_mark.line + 1, dotted(path),
                                f"{node.value!r} is not a valid {node.tag.rsplit(':', 1)[-1]}"))
        return None
    if isinstance(value, str) and _ENV.search(value):
        env.add(path)
        value = _expand_env(value, path, node, file, problems)
    return value


def _scalar_loader() -> yaml.SafeLoader:
    # A fresh constructor each time: SafeLoader caches constructed nodes.
    return yaml.SafeLoader("")


def _expand_env(text: str, path: Path_, node: Node, file: str, problems: list[Problem]) -> str:
    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in os.environ:
            problems.append(
                Problem(file, node.start_mark.line + 1, dotted(path),
                        f"environment variable ${{{name}}} is not set")
            )
            return ""
        return os.environ[name]

    return _ENV.sub(sub, text)


class _ShapeError(Exception):
    """A document over one of the ``Limits``, at the line of the event that crossed it."""

    def __init__(self, line: int, path: Path_, message: str):
        super().__init__(message)
        self.line = line
        self.path = path
        self.message = message

    def problem(self, file: str) -> Problem:
        key = dotted(self.path[:6]) + ("…" if len(self.path) > 6 else "")
        return Problem(file, self.line, key, self.message)


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's composer with ``Limits``: it stops at the node or alias that crosses one.

    PyYAML composes recursively (5,000 nested brackets exhaust Python's stack)
    and makes an alias a shared node, so a cycle or a bomb only blows up later,
    when the tree is walked.  Here every node and every alias expansion is
    counted as it is composed, where its line and key are still known.
    """

    def __init__(self, stream: str, limits: Limits):
        super().__init__(stream)
        self.limits = limits
        self._path: list[str | int | None] = []  # None: a mapping key being composed
        self._open: set[str] = set()  # anchors whose node is being composed
        self._sizes: dict[str, tuple[int, int]] = {}  # anchor -> (values, levels below it)
        self._values = 0
        self._deepest = 0

    def compose_node(self, parent, index):
        if parent is None:
            return self._counted(parent, index)
        self._path.append(index.value if isinstance(index, ScalarNode) else index if isinstance(index, int) else None)
        try:
            if self.check_event(AliasEvent):
                self._expand(self.peek_event())
                return super().compose_node(parent, index)
            return self._counted(parent, index)
        finally:
            self._path.pop()

    def _counted(self, parent, index):
        event = self.peek_event()
        depth = len(self._path)
        if depth > self.limits.max_depth:
            raise self._error(event.start_mark, f"nested deeper than {self.limits.max_depth} levels; a config is never this deep")
        self._add_values(1, event.start_mark, "")
        anchor = getattr(event, "anchor", None)
        if anchor is None:
            self._deepest = max(self._deepest, depth)
            return super().compose_node(parent, index)
        before, outer = self._values, self._deepest
        self._deepest = depth
        self._open.add(anchor)
        try:
            node = super().compose_node(parent, index)
        finally:
            self._open.discard(anchor)
        self._sizes[anchor] = (self._values - before + 1, self._deepest - depth)
        self._deepest = max(outer, self._deepest)
        return node

    def _expand(self, event: AliasEvent) -> None:
        anchor = event.anchor
        if anchor in self._open:
            raise self._error(event.start_mark, f"alias *{anchor} is used inside its own anchor &{anchor} (a cycle); "
                                                "a config must be a tree")
        if anchor not in self._sizes:
            return  # an undefined alias: PyYAML says so
        values, levels = self._sizes[anchor]
        self._add_values(values, event.start_mark, f" (alias *{anchor} adds {values:,})")
        depth = len(self._path) + levels
        if depth > self.limits.max_depth:
            raise self._error(event.start_mark, f"alias *{anchor} nests deeper than {self.limits.max_depth} levels")
        self._deepest = max(self._deepest, depth)

    def _add_values(self, n: int, mark, why: str) -> None:
        self._values += n
        if self._values > self.limits.max_values:
            raise self._error(mark, f"more than {self.limits.max_values:,} values, counting each use of an alias{why}; "
                                    "a config is never this big (an alias repeated inside another is an alias bomb)")

    def _error(self, mark, message: str) -> _ShapeError:
        return _ShapeError(mark.line + 1, tuple(p for p in self._path if p is not None), message)


def _compose(text: str, limits: Limits) -> Node | None:
    loader = _BoundedLoader(text, limits)
    try:
        return loader.get_single_node()
    finally:
        loader.dispose()


def _read_text(file: str, limits: Limits) -> str:
    """The file's text, refusing one larger than ``limits.max_bytes`` before reading it all."""
    try:
        with open(file, "rb") as f:
            raw = f.read(limits.max_bytes + 1)
    except FileNotFoundError:
        raise ConfigError([Problem(file, None, "", "file not found")]) from None
    except OSError as exc:
        raise ConfigError([Problem(file, None, "", f"cannot read: {exc.strerror}")]) from None
    if len(raw) > limits.max_bytes:
        raise ConfigError([Problem(file, None, "", f"larger than {limits.max_bytes:,} bytes; a site config is a few KB "
                                                    "(is this the right file?)")])
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([Problem(file, None, "", f"not UTF-8 text ({exc.reason})")]) from None


def load_yaml(file: str | Path, limits: Limits = LIMITS) -> Source:
    """Parse a YAML file within ``limits``; syntax errors, duplicate keys and shape limits become ConfigError."""
    file = str(file)
    text = _read_text(file, limits)
    try:
        node = _compose(text, limits)
    except _ShapeError as exc:
        raise ConfigError([exc.problem(file)]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        if line is not None:
            # An error found at the end of the stream sits on the line after the
            # last one; point at the last line an editor actually shows.
            line = max(1, min(line, len(text.splitlines())))
        what = exc.problem or exc.context or "invalid YAML"
        if exc.problem and exc.context and exc.context_mark is not None:
            what += f" ({exc.context} started on line {exc.context_mark.line + 1})"
        raise ConfigError([Problem(file, line, "", f"YAML syntax error: {what}")]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([Problem(file, None, "", f"YAML error: {exc}")]) from None
    marks: dict[Path_, int] = {}
    problems: list[Problem] = []
    if node is None:
        raise ConfigError([Problem(file, None, "", "file is empty")])
    marks[()] = node.start_mark.line + 1
    env: set[Path_] = set()
    data = _build(node, (), marks, file, problems, env)
    if problems:
        # an anchor used twice would report its problems twice
        raise ConfigError(list(dict.fromkeys(problems)))
    return Source(file, data, marks, frozenset(env))
