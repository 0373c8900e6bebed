"""The size bound of a get_scan_results answer.

An answer carries its rows twice (structured content, and the same JSON as text for clients that read only
text), and an agent reads all of it: so the rows of one answer are at most :data:`ROWS_BUDGET` bytes of compact
JSON. A page whose rows exceed it is served smaller, in a way that still pages consistently: with the offset
``o = (page - 1) * page_size`` of the page asked for, the served page size ``K`` is the largest one that fits and
divides ``o``, so rows ``[o, o + K)`` are page ``o / K + 1`` of size ``K``, and going on with ``page_size=K`` visits
every row exactly once. (Those rows are the first ``K`` of the page fetched: no second API call.)

A single row larger than the budget is served alone with its longest texts cut, each cut marked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from tasks.mcp.errors import compact_json

ROWS_BUDGET = 200_000  # bytes (UTF-8) of the rows of one answer, as compact JSON
MIN_TEXT = 64  # a cut text keeps at least this many characters
CUT_MARK = ("… [cut by scanpool's MCP server: {left} of {size} characters left out to keep the answer under "
            "{budget} bytes; the scan's .nessus export (results.nessus in the API) has the whole text]")
LIST_CUT_MARK = "… [cut by scanpool's MCP server: {left} more items left out]"


def json_size(value: Any) -> int:
    return len(compact_json(value).encode())


@dataclass
class Fitted:
    rows: list[Any]
    page: int
    page_size: int
    reduced: dict[str, Any] | None = None
    truncated: dict[str, Any] | None = None

    def pages(self, total: int) -> int:
        return math.ceil(total / self.page_size) if total else 0


def fit_page(rows: list[Any], page: int, page_size: int, budget: int = ROWS_BUDGET) -> Fitted:
    """The part of one fetched page (``page`` of ``page_size``) that fits ``budget``, as a page of its own."""
    used, fit = 2, 0  # "[]"
    for row in rows:
        size = json_size(row) + (1 if fit else 0)  # the comma
        if used + size > budget:
            break
        used += size
        fit += 1
    if fit == len(rows):
        return Fitted(rows, page, page_size)
    offset = (page - 1) * page_size
    served = max(fit, 1)
    while offset % served:
        served -= 1
    kept = rows[:served]
    fitted = Fitted(kept, offset // served + 1, served)
    if fit == 0:
        kept[0], cut = truncate_row(rows[0], budget)
        fitted.truncated = {
            "rows": 1, "fields": cut,
            "reason": f"this row alone exceeds the answer limit of {budget} bytes: its longest texts are cut, "
                      "each cut marked \"[cut by scanpool's MCP server …]\"; the scan's .nessus export has them whole"}
    if served < page_size:
        fitted.reduced = {
            "asked": page_size, "served": served,
            "reason": f"{page_size} rows of this page exceed the answer limit of {budget} bytes of rows: this answer "
                      f"holds rows {offset + 1}-{offset + len(kept)} as page {fitted.page} of page_size {served}; "
                      f"go on with page={fitted.page + 1}, page_size={served} (or ask a smaller profile)"}
    return fitted


def truncate_row(row: Any, budget: int) -> tuple[Any, list[str]]:
    """``row`` with its longest texts (then longest lists) cut until it fits ``budget``; and the cut paths."""
    texts = sorted({len(s) for s in _leaves(row, str)}, reverse=True)
    lists = sorted({len(v) for v in _leaves(row, list)}, reverse=True)
    text_cap = min(texts[0], budget) if texts else 0
    list_cap = lists[0] if lists else 0
    cut: Any = row
    paths: list[str] = []
    while json_size(cut) > budget:
        if text_cap > MIN_TEXT:
            text_cap = max(MIN_TEXT, text_cap // 2)
        elif list_cap > 1:
            list_cap //= 2
        else:  # nothing left to cut: keep the row's identifiers only
            items = row.items() if isinstance(row, dict) else []
            return {k: v for k, v in items if not isinstance(v, str | list | dict)}, ["*"]
        paths = []
        cut = _cut(row, text_cap, list_cap, budget, "", paths)
    return cut, list(dict.fromkeys(paths))[:20]


def _leaves(value: Any, kind: type) -> list[Any]:
    if isinstance(value, kind):
        found = [value]
    else:
        found = []
    if isinstance(value, dict):
        for v in value.values():
            found += _leaves(v, kind)
    elif isinstance(value, list):
        for v in value:
            found += _leaves(v, kind)
    return found


def _cut(value: Any, text_cap: int, list_cap: int, budget: int, path: str, paths: list[str]) -> Any:
    if isinstance(value, str):
        if len(value) <= text_cap:
            return value
        paths.append(path)
        return value[:text_cap] + CUT_MARK.format(left=len(value) - text_cap, size=len(value), budget=budget)
    if isinstance(value, dict):
        return {k: _cut(v, text_cap, list_cap, budget, f"{path}.{k}" if path else str(k), paths)
                for k, v in value.items()}
    if isinstance(value, list):
        items = [_cut(v, text_cap, list_cap, budget, f"{path}[{i}]", paths) for i, v in enumerate(value[:list_cap])]
        if len(value) > list_cap:
            paths.append(path)
            items.append(LIST_CUT_MARK.format(left=len(value) - list_cap))
        return items
    return value
