"""What a ``.nessus`` export's ``<Policy>`` says: name, server preferences, whether host credentials were set."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from lxml import etree


@dataclass
class CredentialInfo:
    """What the exported policy says about host credentials (values are masked in exports: presence only)."""

    supplied: bool = False
    kinds: list[str] = field(default_factory=list)  # ssh_password, ssh_key, smb_password, …
    escalation: str = ""  # sudo, su, … when a single method is selected
    # The policy lists the SSH/SMB/Kerberos password or key fields (empty or not): when none is filled, the
    # export itself shows that no host credentials were supplied. Agent scans list none.
    fields_listed: bool = False


@dataclass
class PolicyInfo:
    policy_name: str = ""
    server_preferences: dict[str, str] = field(default_factory=dict)  # without the (huge) plugin_set
    plugin_set_size: int = 0
    credentials: CredentialInfo = field(default_factory=CredentialInfo)

    @property
    def targets(self) -> list[str]:
        raw = self.server_preferences.get("TARGET", "")
        return [t.strip() for t in re.split(r"[,\s]+", raw) if t.strip()]

    @property
    def agent_scan(self) -> bool:
        return bool(self.server_preferences.get("agent_targets"))


_CREDENTIAL_FIELDS = (
    # (plugin preference section, field name pattern, kind)
    ("SSH settings", re.compile(r"^(Additional )?SSH password( \(unsafe!\))?( \(\d+\))?\s*:?$", re.I), "ssh_password"),
    ("SSH settings", re.compile(r"^SSH private key to use\s*:?$", re.I), "ssh_key"),
    ("Login configurations", re.compile(r"^(Additional )?SMB password( \(\d+\))?\s*:?$", re.I), "smb_password"),
    ("Kerberos configuration", re.compile(r"password\s*:?$", re.I), "kerberos_password"),
)
# Radio buttons and checkboxes list choices, not values ("SMB password type : Password;LM Hash").
_CHOICE_TYPES = frozenset({"radio", "checkbox"})


def convert_policy(el: etree._Element) -> PolicyInfo:
    """Read a finished <Policy> element (credential values are masked in exports: only presence counts)."""
    info = PolicyInfo(policy_name=(el.findtext("policyName") or "").strip())
    for pref in el.iterfind("Preferences/ServerPreferences/preference"):
        name = (pref.findtext("name") or "").strip()
        value = pref.findtext("value") or ""
        if not name:
            continue
        if name == "plugin_set":
            info.plugin_set_size = len([p for p in value.split(";") if p.strip()])
            continue
        info.server_preferences[name] = value
    kinds: list[str] = []
    for item in el.iterfind("Preferences/PluginsPreferences/item"):
        section = (item.findtext("pluginName") or "").strip()
        full = " ".join((item.findtext("fullName") or "").split())
        value = (item.findtext("selectedValue") or "").strip()
        kind_of_field = (item.findtext("preferenceType") or "").strip()
        field_name = full.split("]:", 1)[1].strip() if "]:" in full else full
        if section == "SSH settings" and field_name.lower().startswith("elevate privileges with"):
            if value and ";" not in value and value.lower() != "nothing":
                info.credentials.escalation = value
            continue
        if kind_of_field in _CHOICE_TYPES:
            continue
        for sec, pattern, kind in _CREDENTIAL_FIELDS:
            if section.startswith(sec) and pattern.search(field_name):
                info.credentials.fields_listed = True
                if value and kind not in kinds:
                    kinds.append(kind)
    info.credentials.kinds = kinds
    info.credentials.supplied = bool(kinds)
    return info


