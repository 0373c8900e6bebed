"""Validation of pool settings shared by the admin form and the YAML loader."""

from __future__ import annotations

import ipaddress


def scope_entry_problem(entry: object) -> str | None:
    """Why ``entry`` is not a valid pool scope entry (CIDR, address, host name, ``*.domain``), or ``None``."""
    if not isinstance(entry, str) or not entry.strip():
        return f"{entry!r} is not a non-empty string (CIDR, address, host name or *.domain)"
    text = entry.strip()
    try:
        ipaddress.ip_network(text, strict=False)
        return None
    except ValueError:
        pass
    if "/" in text:
        return f"{text!r} is not a valid CIDR network (e.g. 10.20.0.0/16)"
    host = text[2:] if text.startswith("*.") else text
    labels = host.split(".")
    valid = all(
        label
        and len(label) <= 63
        and label[0] != "-"
        and label[-1] != "-"
        and all(ch.isalnum() or ch == "-" for ch in label)
        for label in labels
    )
    if not valid or len(host) > 253:
        return f"{text!r} is not a CIDR, an IP address, a host name or a *.domain pattern"
    return None
