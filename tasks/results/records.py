"""What the parser yields: one :class:`ReportHostBlock` per ``ReportHost``, one :class:`Finding` per ``ReportItem``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Finding:
    """One ReportItem: typed core fields, every attribute, every child element."""

    plugin_id: int
    severity: int
    port: int
    protocol: str
    svc_name: str
    plugin_name: str
    plugin_family: str
    attributes: dict[str, str]
    data: dict[str, str | list[str]]  # children by tag; repeated ones as lists; cm:compliance-x → compliance_x
    line: int | None = None

    def text(self, key: str) -> str:
        value = self.data.get(key, "")
        return "\n".join(value) if isinstance(value, list) else value

    @property
    def plugin_output(self) -> str:
        return self.text("plugin_output")

    @property
    def cves(self) -> list[str]:
        return [c.strip().upper() for c in self.data.get("cve", []) if c.strip()]

    @property
    def cvss2(self) -> float | None:
        return _float(self.text("cvss_base_score"))

    @property
    def cvss3(self) -> float | None:
        return _float(self.text("cvss3_base_score"))

    @property
    def cvss(self) -> float | None:
        """The real score used for filters: CVSS v3 base score, else v2."""
        v3 = self.cvss3
        return v3 if v3 is not None else self.cvss2

    @property
    def exploit_available(self) -> bool | None:
        value = self.text("exploit_available").strip().lower()
        return {"true": True, "false": False}.get(value)


@dataclass
class ReportHostBlock:
    """One ReportHost element. A host repeated in the file comes as several blocks with the same name."""

    name: str
    properties: dict[str, str | list[str]]
    findings: list[Finding]
    line: int | None = None


def _float(text: str) -> float | None:
    try:
        return float(text) if text.strip() else None
    except ValueError:
        return None


