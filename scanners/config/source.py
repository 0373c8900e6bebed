"""Reading a scanner configuration file: YAML with line numbers, and ``${VAR}`` interpolation.

The YAML is composed (safe loader, no Python tags) into nodes, then walked into plain Python
values while recording the line of every key and value, so later checks can say *where* a
problem is. Anchors and aliases (``&name`` / ``*name``) are refused while composing: the schema
needs none, and they are how a few hundred bytes expand into gigabytes ("billion laughs") or
recurse forever. Only the secret fields (``SECRET_KEYS``) are interpolated from the environment,
so no other column (a description every viewer sees) can copy an environment variable; a
``${`` elsewhere is an error naming the field. Interpolated values never appear in messages.

- ``${VAR}``            the variable's value; unset → an error naming the variable and the line
- ``${VAR:-default}``   the value, or ``default`` when the variable is unset or empty
- ``$${``               a literal ``${`` (for a password that really contains it)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

PathT = tuple[str | int, ...]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a configuration file, located by line and key path."""

    message: str
    line: int | None = None
    path: str = ""

    def render(self, source: str) -> str:
        where = f"{source}:{self.line}" if self.line else source
        key = f" {self.path}:" if self.path else ""
        return f"{where}:{key} {self.message}"


class ConfigError(Exception):
    """The configuration cannot be used; ``problems`` lists every reason found (nothing was changed)."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(self.render())

    def render(self) -> str:
        return "\n".join(problem.render(self.source) for problem in self.problems)


def path_str(path: PathT) -> str:
    """``("pools", 0, "scanners", 1, "ulr")`` → ``pools[0].scanners[1].ulr``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


@dataclass
class Document:
    """Plain Python data of a YAML file plus the line (1-based) of every key path in it."""

    data: Any
    lines: dict[PathT, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    def line(self, path: PathT) -> int | None:
        # The nearest located ancestor: a missing key is reported at its parent mapping.
        for end in range(len(path), -1, -1):
            if path[:end] in self.lines:
                return self.lines[path[:end]]
        return None

    def problem(self, path: PathT, message: str) -> None:
        self.problems.append(Problem(message, self.line(path), path_str(path)))


# The fields whose values may come from the environment (and are never echoed in a message).
SECRET_KEYS = frozenset({"access_key", "secret_key", "username", "password"})
_NOT_HERE = (
    "'${{...}}' is expanded only in {fields}: write this value out (or $${{ for a literal '${{')"
).format(fields=", ".join(sorted(SECRET_KEYS)))


class _AliasRefused(Exception):
    def __init__(self, what: str, mark: yaml.Mark) -> None:
        super().__init__(what)
        self.what = what
        self.mark = mark


class _NoAliasLoader(yaml.SafeLoader):
    """The safe loader, refusing anchors and aliases before anything is composed from them."""

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node | None:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            raise _AliasRefused(f"alias '*{event.anchor}'", event.start_mark)
        if getattr(event, "anchor", None):
            raise _AliasRefused(f"anchor '&{event.anchor}'", event.start_mark)
        return super().compose_node(parent, index)  # type: ignore[no-untyped-call]


_REFERENCE = re.compile(r"\$\$\{|\$\{([^}]*)\}|\$\{")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def interpolate(text: str, env: Mapping[str, str], *, allowed: bool = True) -> tuple[str, list[str]]:
    """Expand ``${VAR}`` / ``${VAR:-default}`` in ``text``; returns the result and the problems found.

    ``allowed`` false (a non-secret field): only ``$${`` is unescaped; any reference is a problem."""
    problems: list[str] = []

    def replace(match: re.Match[str]) -> str:
        token = match.group(0)
        if token == "$${":
            return "${"
        if not allowed:
            if _NOT_HERE not in problems:
                problems.append(_NOT_HERE)
            return token
        inner = match.group(1)
        if inner is None:
            problems.append("unclosed '${': write ${NAME} or ${NAME:-default} (or $${ for a literal '${')")
            return token
        name, sep, default = inner.partition(":-")
        if not _NAME.match(name):
            problems.append(f"invalid variable reference '${{{inner}}}': names use letters, digits and '_'")
            return token
        value = env.get(name)
        if value is None or (sep and value == ""):
            if sep:
                return default
            problems.append(f"environment variable {name} is not set (set it, or write ${{{name}:-default}})")
            return token
        return value

    return _REFERENCE.sub(replace, text), problems


class _Walker:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.doc = Document(data=None)
        self._scalars = yaml.SafeLoader("")  # only its scalar constructors are used

    def walk(self, node: yaml.Node, path: PathT) -> Any:
        self.doc.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            result: dict[str, Any] = {}
            for key_node, value_node in node.value:
                key = self._scalars.construct_object(key_node) if isinstance(key_node, yaml.ScalarNode) else None
                if not isinstance(key, str):
                    self.doc.problems.append(
                        Problem(f"keys must be plain names, not {key!r}", key_node.start_mark.line + 1, path_str(path))
                    )
                    continue
                child = (*path, key)
                if key in result:
                    self.doc.problems.append(
                        Problem(
                            f"duplicate key (first given on line {self.doc.lines[child]})",
                            key_node.start_mark.line + 1,
                            path_str(child),
                        )
                    )
                    continue
                self.doc.lines[child] = key_node.start_mark.line + 1
                result[key] = self.walk(value_node, child)
            return result
        if isinstance(node, yaml.SequenceNode):
            return [self.walk(item, (*path, index)) for index, item in enumerate(node.value)]
        value = self._scalars.construct_object(node)
        if isinstance(value, str) and "$" in value:
            secret = bool(path) and path[-1] in SECRET_KEYS
            value, problems = interpolate(value, self.env, allowed=secret)
            for message in problems:
                self.doc.problems.append(Problem(message, node.start_mark.line + 1, path_str(path)))
        return value


def parse(text: str, source: str, env: Mapping[str, str]) -> Document:
    """Parse YAML ``text``; raises :class:`ConfigError` for malformed YAML (with line and column)."""
    loader = _NoAliasLoader(text)
    try:
        node = loader.get_single_node()
    except _AliasRefused as exc:
        line, column = exc.mark.line + 1, exc.mark.column + 1
        raise ConfigError(source, [Problem(
            f"YAML {exc.what} at line {line}, column {column}: anchors (&name) and aliases (*name) are not "
            "accepted (the schema needs none); write the values out in full", line,
        )]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        column = f", column {mark.column + 1}" if mark else ""
        detail = " ".join(part for part in (exc.context, exc.problem) if part)
        raise ConfigError(source, [Problem(f"invalid YAML{column}: {detail}", line)]) from exc
    except yaml.YAMLError as exc:
        raise ConfigError(source, [Problem(f"invalid YAML: {exc}")]) from exc
    finally:
        loader.dispose()
    if node is None:
        raise ConfigError(source, [Problem("the file is empty: expected a top-level 'pools:' list")])
    walker = _Walker(env)
    walker.doc.data = walker.walk(node, ())
    return walker.doc
