"""YAML loading that remembers where every key came from.

An installer fixing a config on a phone over SSH needs ``site.yaml:23`` and the
key, not a Python traceback.  We load YAML into plain dicts/lists and keep a
side table from the key path (``("buses", 0, "port")``) to its line/column, so
any later validation error can be pointed back at the file.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

_MERGE_TAG = "tag:yaml.org,2002:merge"
_PLAIN_TAGS = ("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq")
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")

Path_ = tuple[str | int, ...]


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


def _build(node: Node, path: Path_, marks: dict[Path_, int], file: str, problems: list[Problem]) -> Any:
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
                    merged.append((_build(source, path, source_marks, file, problems), source_marks))
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
            out[key] = _build(value_node, kpath, marks, file, problems)
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
            items.append(_build(item, path + (i,), marks, file, problems))
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
    if isinstance(value, str):
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


def load_yaml(file: str | Path) -> Source:
    """Parse a YAML file; syntax errors and duplicate keys become ConfigError."""
    file = str(file)
    try:
        text = Path(file).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([Problem(file, None, "", "file not found")]) from None
    except OSError as exc:
        raise ConfigError([Problem(file, None, "", f"cannot read: {exc.strerror}")]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([Problem(file, None, "", f"not UTF-8 text ({exc.reason})")]) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
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
    data = _build(node, (), marks, file, problems)
    if problems:
        # an anchor used twice would report its problems twice
        raise ConfigError(list(dict.fromkeys(problems)))
    return Source(file, data, marks)
