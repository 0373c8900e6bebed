"""Checks before and around the XML parse: what is obviously not a plain ``.nessus`` export, and libxml2's errors.

:class:`NessusParseError` is the one error of the parser: the problem in words a user can act on, and the line
when known. A DTD is refused before libxml2 sees the file (``.nessus`` exports never have one).
"""

from __future__ import annotations

import re
from pathlib import Path

from lxml import etree

_PROLOG_BYTES = 65536


class NessusParseError(Exception):
    """The file is not a usable ``.nessus`` export: unreadable, malformed, truncated or hostile."""

    def __init__(self, message: str, *, line: int | None = None, path: str | Path | None = None) -> None:
        self.message = message
        self.line = line or None
        self.path = str(path) if path is not None else None
        where = f" (line {self.line})" if self.line else ""
        prefix = f"{self.path}: " if self.path else ""
        super().__init__(f"{prefix}{message}{where}")


def check_prolog(path: Path) -> None:
    """Fail fast, with a precise message, on what is obviously not a plain XML export."""
    try:
        with path.open("rb") as fh:
            head = fh.read(_PROLOG_BYTES)
    except OSError as exc:
        raise NessusParseError(f"cannot read the file: {exc.strerror or exc}", path=path) from exc
    if not head.strip() and len(head) < _PROLOG_BYTES:
        raise NessusParseError("the file is empty", path=path)
    if head.startswith(b"\x1f\x8b"):
        raise NessusParseError("the file is gzip-compressed: decompress it first", path=path)
    if head.startswith(b"PK\x03\x04"):
        raise NessusParseError("the file is a zip archive, not a .nessus export", path=path)
    body = head[3:] if head.startswith(b"\xef\xbb\xbf") else head
    # Walk the prolog (XML declaration, comments, processing instructions) up to the first element.
    pos = 0
    while True:
        while pos < len(body) and body[pos : pos + 1].isspace():
            pos += 1
        if body.startswith(b"<?", pos):
            end, closer = body.find(b"?>", pos), 2
        elif body.startswith(b"<!--", pos):
            end, closer = body.find(b"-->", pos), 3
        elif body.startswith(b"<!DOCTYPE", pos) or body.startswith(b"<!ENTITY", pos):
            line = body.count(b"\n", 0, pos) + 1
            raise NessusParseError(
                "the file declares a DTD (<!DOCTYPE …>); .nessus exports never do and DTDs are refused "
                "because they enable XML entity attacks (external entities, entity expansion)",
                line=line, path=path,
            )
        else:
            return
        if end < 0:
            return  # prolog longer than the window: libxml2 and the DTD check at the root take over
        pos = end + closer


def error_from_lxml(exc: etree.XMLSyntaxError, path: Path, last_line: int | None) -> NessusParseError:
    msg = (exc.msg or str(exc)).strip()
    msg = re.sub(r",\s*line \d+, column \d+$", "", msg)
    line = exc.lineno or last_line
    lowered = msg.lower()
    if "amplification" in lowered or ("entity" in lowered and "loop" in lowered):
        text = f"XML entity expansion refused (possible billion-laughs attack): {msg}"
    elif "premature end of data" in lowered or ("not found" in lowered and "endtag" in lowered.replace(" ", "")):
        text = f"the file is truncated or cut short: {msg}"
    elif msg == "no element found":
        text = (
            "malformed XML: the parser stopped at an undefined entity reference or the document is "
            "incomplete (no element found)"
        )
    elif "huge input lookup" in lowered or "xmlsax2characters" in lowered or "too long" in lowered:
        text = f"a value exceeds the parser's safety limit (10 MB per text node): {msg}"
    else:
        text = f"malformed XML: {msg}"
    return NessusParseError(text, line=line, path=path)


