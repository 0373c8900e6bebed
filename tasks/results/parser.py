"""Streaming, hardened parser for Nessus ``.nessus`` (NessusClientData_v2) exports.

One ``ReportHost`` at a time: lxml ``iterparse`` with entity resolution, DTD loading and network access
off and libxml2's size limits on (``huge_tree=False``). Each ``ReportItem`` is converted and freed as
soon as it ends, each ``ReportHost`` as soon as it has been yielded, so memory depends on the largest
host, not on the file. Any DTD is refused (a ``.nessus`` export never has one): that closes external
entities (XXE) and entity expansion (billion laughs) before they can do anything.

Errors are :class:`NessusParseError` with the problem and the line when known. Hosts are yielded
while the file is read, so a truncated file raises *after* the hosts before the cut: consumers that
must be all-or-nothing (``tasks.results.ingest``) work inside a transaction.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from lxml import etree

from tasks.results.policy import PolicyInfo, convert_policy
from tasks.results.records import Finding, ReportHostBlock
from tasks.results.stream import MAX_VALUE_BYTES, TRUNCATION_MARK, TruncatingStream
from tasks.results.xmlcheck import NessusParseError, check_prolog, error_from_lxml

__all__ = ["MAX_VALUE_BYTES", "TRUNCATION_MARK", "Finding", "NessusParseError", "NessusReader", "ReportHostBlock",
           "iter_hosts"]

CM_NAMESPACE = "http://www.nessus.org/cm"

# Children that may repeat in a ReportItem: always lists, even with one value.
LIST_CHILDREN = frozenset({"cve", "bid", "xref", "see_also", "cwe", "cpe", "osvdb", "iava", "iavb", "iavt", "cert",
                           "edb-id", "msft", "mskb", "rhsa", "usn", "cisa-known-exploited"})
# Attributes of ReportItem that are numbers.
_INT_ATTRIBUTES = ("pluginID", "severity", "port")
MAX_WARNING_EXAMPLES = 5
_TAGS = ("NessusClientData_v2", "Policy", "ReportHost", "HostProperties", "ReportItem")


def _child_key(tag: str) -> str:
    if tag[0] != "{":
        return tag
    namespace, local = tag[1:].split("}", 1)
    if namespace == CM_NAMESPACE:
        return local.replace("-", "_")  # cm:compliance-check-name → compliance_check_name
    return local


def _element_text(el: etree._Element) -> str:
    if len(el):
        return "".join(el.itertext())
    return el.text or ""


def _convert_item(el: etree._Element, path: Path) -> Finding:
    attributes = dict(el.attrib)
    numbers: dict[str, int] = {}
    for name in _INT_ATTRIBUTES:
        raw = attributes.get(name)
        if raw is None or raw.strip() == "":
            if name == "port":
                numbers[name] = 0
                continue
            raise NessusParseError(f"ReportItem without a {name} attribute", line=el.sourceline, path=path)
        try:
            numbers[name] = int(raw)
        except ValueError:
            raise NessusParseError(
                f"ReportItem attribute {name}={raw!r} is not an integer", line=el.sourceline, path=path
            ) from None
    data: dict[str, str | list[str]] = {}
    for child in el:
        key = child.tag
        if key.__class__ is not str:
            continue  # comments, processing instructions
        if key[0] == "{":
            key = _child_key(key)
        text = child.text or "" if not len(child) else "".join(child.itertext())
        if key in LIST_CHILDREN:
            if key == "see_also":
                values = [line.strip() for line in text.splitlines() if line.strip()]
            else:
                values = [text.strip()]
            existing = data.get(key)
            if existing is None:
                data[key] = values
            else:
                existing.extend(values)  # type: ignore[union-attr]
        elif key in data:
            existing = data[key]
            if isinstance(existing, list):
                existing.append(text)
            else:
                data[key] = [existing, text]
        else:
            data[key] = text
    return Finding(
        plugin_id=numbers["pluginID"],
        severity=numbers["severity"],
        port=numbers["port"],
        protocol=attributes.get("protocol", ""),
        svc_name=attributes.get("svc_name", ""),
        plugin_name=attributes.get("pluginName", "") or str(data.get("plugin_name", "")),
        plugin_family=attributes.get("pluginFamily", ""),
        attributes=attributes,
        data=data,
        line=el.sourceline,
    )


def _convert_properties(el: etree._Element) -> dict[str, str | list[str]]:
    props: dict[str, str | list[str]] = {}
    for tag in el:
        if not isinstance(tag.tag, str):
            continue
        name = tag.get("name") or _child_key(tag.tag)
        value = _element_text(tag)
        if name in props:
            existing = props[name]
            props[name] = [*existing, value] if isinstance(existing, list) else [existing, value]
        else:
            props[name] = value
    return props


class NessusReader:
    """Iterate the ReportHost blocks of a ``.nessus`` file; ``policy`` is filled once the Policy is read.

    >>> reader = NessusReader(path)
    >>> for host in reader: ...
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.policy = PolicyInfo()
        self.report_name = ""
        self.hosts_seen = 0
        self.findings_seen = 0
        self.warnings: list[str] = []  # what was repaired: severities clamped, values truncated
        self._clamped: list[str] = []
        self._clamped_count = 0
        self._truncated: list[str] = []
        self._stream: TruncatingStream | None = None

    def __iter__(self) -> Iterator[ReportHostBlock]:
        path = self.path
        check_prolog(path)
        try:
            # A file object, not the name: libxml2 would read a name as a URI (``%20``, ``file:``…).
            stream = path.open("rb")
        except OSError as exc:
            raise NessusParseError(f"cannot read the file: {exc.strerror or exc}", path=path) from None
        with stream:
            self._stream = TruncatingStream(stream)
            yield from self._parse(self._stream)
        self.warnings = self._repair_warnings()

    def _repair_warnings(self) -> list[str]:
        warnings = []
        if self._clamped_count:
            more = self._clamped_count - len(self._clamped)
            warnings.append(
                f"Severity outside 0-4 in {self._clamped_count} finding(s), clamped to 0-4 (the raw value stays in "
                f"the finding's attributes): {'; '.join(self._clamped)}" + (f"; and {more} more." if more else ".")
            )
        count = len(self._stream.truncations) if self._stream else 0
        if count:
            more = count - len(self._truncated)
            warnings.append(
                f"{count} text value(s) over 10 MB truncated to 10 MB and marked '{TRUNCATION_MARK}'; everything "
                f"else was kept: {'; '.join(self._truncated) or 'outside any finding'}"
                + (f"; and {more} more." if more > 0 else ".")
            )
        return warnings

    def _repair(self, finding: Finding, host: str) -> None:
        """Clamp a severity outside 0-4 once, here, so every counter and filter sees the same value."""
        if not 0 <= finding.severity <= 4:
            raw = finding.severity
            finding.severity = min(max(raw, 0), 4)
            self._clamped_count += 1
            if len(self._clamped) < MAX_WARNING_EXAMPLES:
                self._clamped.append(f"raw {raw} → {finding.severity} (plugin {finding.plugin_id} on {host or '?'}, "
                                     f"line {finding.line})")
        stream = self._stream
        if stream is not None and stream.truncations and len(self._truncated) < min(len(stream.truncations),
                                                                                     MAX_WARNING_EXAMPLES):
            fields = [k for k, v in finding.data.items()
                      if TRUNCATION_MARK in (v if isinstance(v, str) else "".join(v))]
            if fields:
                self._truncated.append(f"{', '.join(fields)} of plugin {finding.plugin_id} on {host or '?'}")

    def _parse(self, stream: BinaryIO) -> Iterator[ReportHostBlock]:
        path = self.path
        context = etree.iterparse(
            stream,
            events=("end",),  # end events only: half the iterparse callbacks of start+end (profiled)
            tag=_TAGS,
            resolve_entities=False,
            no_network=True,
            load_dtd=False,
            huge_tree=False,
            remove_comments=True,
            remove_pis=True,
        )
        root_checked = False
        last_line: int | None = None
        properties: dict[str, str | list[str]] = {}
        findings: list[Finding] = []
        try:
            for _event, el in context:
                if not root_checked:
                    self._check_root(el)
                    root_checked = True
                tag = el.tag
                last_line = el.sourceline or last_line
                if tag == "ReportItem":
                    finding = _convert_item(el, path)
                    if finding.severity.__class__ is not int or not 0 <= finding.severity <= 4 or (
                            self._stream is not None and self._stream.truncations):
                        self._repair(finding, _host_name(el))
                    findings.append(finding)
                    self.findings_seen += 1
                    _free(el)
                elif tag == "HostProperties":
                    properties.update(_convert_properties(el))
                    _free(el)
                elif tag == "ReportHost":
                    name = (el.get("name") or "").strip()
                    if not name:
                        raise NessusParseError("ReportHost without a name attribute", line=el.sourceline, path=path)
                    parent = el.getparent()
                    if parent is not None and not self.report_name:
                        self.report_name = parent.get("name", "")
                    self.hosts_seen += 1
                    block = ReportHostBlock(name=name, properties=properties, findings=findings, line=el.sourceline)
                    properties, findings = {}, []
                    _free(el)
                    yield block
                elif tag == "Policy":
                    self.policy = convert_policy(el)
                    _free(el)
        except etree.XMLSyntaxError as exc:
            raise error_from_lxml(exc, path, last_line) from None
        except OSError as exc:
            raise NessusParseError(f"cannot read the file: {exc.strerror or exc}", path=path) from None
        if not root_checked:
            root = getattr(context, "root", None)
            tag = root.tag if root is not None else "?"
            raise NessusParseError(
                f"not a Nessus v2 export: the root element is <{tag}>, expected <NessusClientData_v2> "
                "(export the scan in the .nessus format)", path=path,
            )

    def _check_root(self, el: etree._Element) -> None:
        tree = el.getroottree()
        docinfo = tree.docinfo
        if docinfo.internalDTD is not None or docinfo.externalDTD is not None or docinfo.system_url:
            raise NessusParseError(
                "the file declares a DTD (<!DOCTYPE …>); .nessus exports never do and DTDs are refused "
                "because they enable XML entity attacks (external entities, entity expansion)", path=self.path,
            )
        root = tree.getroot()
        if root.tag != "NessusClientData_v2":
            raise NessusParseError(
                f"not a Nessus v2 export: the root element is <{root.tag}>, expected <NessusClientData_v2> "
                "(export the scan in the .nessus format)", line=root.sourceline, path=self.path,
            )


def _host_name(item: etree._Element) -> str:
    parent = item.getparent()
    return (parent.get("name") or "").strip() if parent is not None else ""


def _free(el: etree._Element) -> None:
    """Drop a finished element (and its text) from the tree so memory stays flat."""
    el.clear(keep_tail=False)
    parent = el.getparent()
    if parent is not None:
        parent.remove(el)


def iter_hosts(path: str | Path) -> Iterator[ReportHostBlock]:
    """Shorthand for ``iter(NessusReader(path))``."""
    return iter(NessusReader(path))
