"""The one line of targets a scanner receives (Nessus' ``settings.text_targets``), and its last check: split the way
the scanner splits it, each piece is a valid target the pool's scope allows (a target must not carry another one
past the submit checks)."""

from __future__ import annotations

import re
from collections.abc import Iterable

from pools.scope import Scope, TargetError, parse_target

_SCANNER_SEPARATORS_RE = re.compile(r"[,;\s]+")


def text_targets(targets: Iterable[str]) -> str:
    """The one line of targets a scanner receives (Nessus' ``settings.text_targets``)."""
    return ",".join(t.strip() for t in targets if t and t.strip())


def check_text_targets(text: str, scope: Scope) -> list[str]:
    """Re-check the final ``text_targets`` string sent to a scanner, split the way the scanner splits it.

    Returns one problem per piece that is not a valid target or is refused by ``scope`` (empty: all good).
    This is the last line of defence against a target that carries another one past the submit checks.
    """
    problems: list[str] = []
    pieces = [piece for piece in _SCANNER_SEPARATORS_RE.split(text) if piece]
    if not pieces:
        return ["no targets"]
    for piece in pieces:
        try:
            target = parse_target(piece)
        except TargetError as exc:
            problems.append(str(exc))
            continue
        why = scope.refusal(target)
        if why is not None:
            problems.append(f"{target.text}: {why}")
    return problems
