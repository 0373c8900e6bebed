"""The byte stream the parser reads: one text value over 10 MB is cut, marked and reported, not refused.

libxml2 refuses a text node over 10,000,000 bytes (``huge_tree=False``, the safety limit kept on). Rather
than lose the whole export, the stream cuts such a value before libxml2 sees it, so memory stays bounded
and everything else of the export is kept.
"""

from __future__ import annotations

from typing import BinaryIO

# One text value longer than this is cut here (libxml2 itself refuses a text node over 10,000,000 bytes).
MAX_VALUE_BYTES = 9_999_000
TRUNCATION_MARK = "[scanpool: value truncated at 10 MB]"
_READ_SIZE = 1 << 20


class TruncatingStream:
    """A read-only byte stream that cuts any run of more than MAX_VALUE_BYTES bytes without a ``<``.

    In a well-formed export such a run is one text value (``<`` is always escaped inside text). The run
    is cut at a character and entity boundary, the rest of it up to the next ``<`` is dropped, and
    TRUNCATION_MARK is put in its place: memory stays bounded and everything else of the export is kept.
    """

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.run = 0  # bytes since the last "<"
        self.dropping = False
        self.truncations: list[tuple[int, int]] = []  # (byte offset of the value's end kept, bytes dropped)
        self.offset = 0

    def read(self, size: int = -1) -> bytes:
        while True:
            chunk = self.raw.read(min(size, _READ_SIZE) if size and size > 0 else _READ_SIZE)
            if not chunk:
                return b""
            start = self.offset
            self.offset += len(chunk)
            if self.dropping:
                lt = chunk.find(b"<")
                if lt < 0:
                    self.truncations[-1] = (self.truncations[-1][0], self.truncations[-1][1] + len(chunk))
                    continue  # still inside the oversized value: read on
                self.truncations[-1] = (self.truncations[-1][0], self.truncations[-1][1] + lt)
                self.dropping = False
                self.run = 0
                return TRUNCATION_MARK.encode() + self._scan(chunk[lt:], start + lt)
            return self._scan(chunk, start)

    def _scan(self, chunk: bytes, start: int) -> bytes:
        first = chunk.find(b"<")
        if first < 0:
            if self.run + len(chunk) <= MAX_VALUE_BYTES:
                self.run += len(chunk)
                return chunk
            return self._cut(chunk, MAX_VALUE_BYTES - self.run, start)
        if self.run + first > MAX_VALUE_BYTES:
            return self._cut(chunk, MAX_VALUE_BYTES - self.run, start)
        # Runs inside one chunk are shorter than MAX_VALUE_BYTES (chunks are ≤ 1 MiB, see _READ_SIZE).
        self.run = len(chunk) - 1 - chunk.rfind(b"<")
        return chunk

    def _cut(self, chunk: bytes, keep: int, start: int) -> bytes:
        keep = max(keep, 0)
        while keep > 0 and 0x80 <= chunk[keep] <= 0xBF:  # not in the middle of a UTF-8 character
            keep -= 1
        amp = chunk.rfind(b"&", max(keep - 12, 0), keep)
        if amp >= 0 and chunk.find(b";", amp, keep) < 0:  # not in the middle of an entity reference
            keep = amp
        rest = chunk[keep:]
        lt = rest.find(b"<")
        self.truncations.append((start + keep, len(rest) if lt < 0 else lt))
        if lt < 0:
            self.dropping = True
            return chunk[:keep] or self.read(len(chunk))
        self.run = 0
        tail = self._scan(rest[lt:], start + keep + lt)
        return chunk[:keep] + TRUNCATION_MARK.encode() + tail
