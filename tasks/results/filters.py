"""Finding filters from query-string style parameters. Numbers compare as numbers.

``severity=>=3`` · ``severity=3,4`` · ``severity=high`` · ``host=10.0.0.1,web1`` · ``port=22,443`` · ``port=>=1024``
· ``plugin_id=19506`` · ``plugin_family=Settings`` · ``cve=CVE-2014-0160`` · ``cvss=>=7.5`` (v3 score, else v2)
· ``q=openssl`` (plugin name or output) · ``exploit_available=true``. Bad values raise
:class:`tasks.errors.SubmissionError` naming the filter and the fix.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping

from django.db.models import Q

from tasks.errors import SubmissionError
from tasks.results import lookups  # noqa: F401  (registers uicontains / uiexact)

FILTER_NAMES = ("severity", "host", "port", "plugin_id", "plugin_family", "cve", "cvss", "q", "exploit_available")
CONTROL_PARAMS = frozenset({"page", "page_size", "profile", "ordering", "format", "stream"})
SEVERITY_WORDS = {"info": 0, "none": 0, "low": 1, "medium": 2, "high": 3, "critical": 4}
_COMPARISON_RE = re.compile(r"^\s*(>=|<=|>|<|==|=)?\s*([^<>=\s][^<>=]*?)\s*$")
_LOOKUPS = {">=": "gte", "<=": "lte", ">": "gt", "<": "lt", "=": "exact", "==": "exact", None: "exact"}
_CVE_RE = re.compile(r"^CVE-\d{4}-\d{4,}$")
MAX_TEXT = 200
MAX_VALUES = 200  # values of one list filter


class FilterError(SubmissionError):
    code = "invalid_filter"


def _raw(params: Mapping[str, object], name: str) -> str | None:
    value = params.get(name)
    if value is None:
        return None
    if isinstance(value, list | tuple):
        value = ",".join(str(v) for v in value)
    text = str(value).strip()
    return text or None


def _parts(text: str, name: str) -> list[str]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if len(parts) > MAX_VALUES:  # each is a term of the query: SQLite refuses an OR deeper than 1000 (a 500)
        raise FilterError(name, f"{len(parts)} values: give at most {MAX_VALUES} (comma-separated)")
    return parts


def _numeric(
    name: str, text: str, convert: Callable[[str], float | int], *, low: float, high: float, hint: str,
    allow_list: bool = True,
) -> Q:
    """``>=x``, ``<x``…, ``x``, or (when allowed) a list ``x,y``; every value within [low, high]."""
    def number(raw: str) -> float | int:
        try:
            value = convert(raw)
        except ValueError:
            raise FilterError(name, f"{raw!r} is not a valid {name}: {hint}") from None
        if not low <= value <= high:
            raise FilterError(name, f"{raw!r} is out of range for {name}: {hint}")
        return value

    parts = _parts(text, name)
    if len(parts) > 1:
        if not allow_list:
            raise FilterError(name, f"{text!r}: {name} takes one comparison, not a list: {hint}")
        values = []
        for part in parts:
            if part[0] in "<>=":
                raise FilterError(name, f"{text!r}: use either a comparison or a list of values, not both: {hint}")
            values.append(number(part))
        return Q(**{f"{name}__in": values})
    match = _COMPARISON_RE.match(text)
    if not match:
        raise FilterError(name, f"{text!r} is not a valid {name} filter: {hint}")
    op, raw = match.groups()
    return Q(**{f"{name}__{_LOOKUPS[op]}": number(raw)})


def _int(raw: str) -> int:
    return int(raw, 10)


def _severity(raw: str) -> int:
    word = raw.strip().lower()
    if word in SEVERITY_WORDS:
        return SEVERITY_WORDS[word]
    return int(word, 10)


def _cvss(text: str) -> Q:
    hint = "use a score from 0 to 10 with an optional comparison, e.g. 'cvss=>=7.5'"
    match = _COMPARISON_RE.match(text)
    if not match or "," in text:
        raise FilterError("cvss", f"{text!r} is not a valid cvss filter: {hint}")
    op, raw = match.groups()
    try:
        value = float(raw)
    except ValueError:
        raise FilterError("cvss", f"{raw!r} is not a number: {hint}") from None
    if not 0 <= value <= 10:
        raise FilterError("cvss", f"{raw!r} is out of range: {hint}")
    lookup = _LOOKUPS[op]
    if lookup == "exact":  # scores are stored as floats: compare within half a tenth
        return Q(cvss__gte=value - 0.05, cvss__lt=value + 0.05)
    return Q(**{f"cvss__{lookup}": value})


def _any(items: list[Q]) -> Q:
    result = Q()
    for item in items:
        result = result | item if result else item
    return result


def parse_filters(params: Mapping[str, object]) -> Q:
    """A ``Q`` over :class:`tasks.models.Finding` for the given filters (AND of all of them)."""
    unknown = sorted(k for k in params if k not in FILTER_NAMES and k not in CONTROL_PARAMS)
    if unknown:
        raise FilterError(unknown[0], f"unknown filter {unknown[0]!r}: use one of {', '.join(FILTER_NAMES)}")
    clauses: list[Q] = []
    if (text := _raw(params, "severity")) is not None:
        clauses.append(_numeric("severity", text, _severity, low=0, high=4,
                                hint="use 0-4 or info/low/medium/high/critical, a comparison like '>=3', "
                                     "or a list like '3,4'"))
    if (text := _raw(params, "port")) is not None:
        clauses.append(_numeric("port", text, _int, low=0, high=65535,
                                hint="use a port number 0-65535, a comparison like '>=1024', or a list like '22,443'"))
    if (text := _raw(params, "plugin_id")) is not None:
        clauses.append(_numeric("plugin_id", text, _int, low=0, high=2**31 - 1,
                                hint="use a Nessus plugin id like '19506' or a list like '104410,21745'"))
    if (text := _raw(params, "cvss")) is not None:
        clauses.append(_cvss(text))
    if (text := _raw(params, "host")) is not None:
        names = _parts(text, "host")
        clauses.append(Q(host_name__in=names) | Q(host__ip__in=names) | Q(host__fqdn__in=names))
    if (text := _raw(params, "plugin_family")) is not None:
        clauses.append(_any([Q(plugin_family__uiexact=family) for family in _parts(text, "plugin_family")]))
    if (text := _raw(params, "cve")) is not None:
        cves = [c.upper() for c in _parts(text, "cve")]
        bad = [c for c in cves if not _CVE_RE.match(c)]
        if bad:
            raise FilterError(
                "cve", f"{bad[0]!r} is not a CVE id: use the form CVE-2014-0160 (comma separated for several)"
            )
        clauses.append(_any([Q(cve_index__contains=f" {cve} ") for cve in cves]))
    if (text := _raw(params, "q")) is not None:
        if len(text) > MAX_TEXT:
            raise FilterError("q", f"the search text is {len(text)} characters long: use at most {MAX_TEXT}")
        clauses.append(Q(plugin_name__uicontains=text) | Q(plugin_output__uicontains=text))
    if (text := _raw(params, "exploit_available")) is not None:
        flag = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}.get(text.lower())
        if flag is None:
            raise FilterError("exploit_available", f"{text!r} is not a boolean: use true or false")
        clauses.append(Q(exploit_available=flag))
    result = Q()
    for clause in clauses:
        result = operator.and_(result, clause)
    return result
