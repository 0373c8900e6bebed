"""``.nessus`` (NessusClientData_v2) export of an emulated scan.

One ReportHost per reachable target with HostProperties, service findings of severities 0-4, plugin
19506 and the credential plugins of the scan's scenario. Unreachable targets are left out, like a real
Nessus does by default; with the scan setting ``display_unreachable_hosts = "yes"`` they appear with
only plugin 10180 ("considered as dead").
"""

from __future__ import annotations

import hashlib
import ipaddress
import time
from xml.sax.saxutils import escape, quoteattr

from scanners.emulator.auth_plugins import credential_plugins, credentialed_line
from scanners.emulator.plugins import LOCAL_FINDINGS, NETWORK_FINDINGS, Plugin, dead_host, scan_information
from scanners.emulator.scans import Run, Scan, is_unreachable

POLICY_TITLES = {"basic": "Basic Network Scan", "advanced": "Advanced Scan"}


def _digest(host: str) -> int:
    return int.from_bytes(hashlib.sha256(host.encode()).digest()[:4], "big")


def host_ip(host: str) -> str:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return f"198.51.100.{_digest(host) % 250 + 1}"  # TEST-NET-2: a stable address for a host name


def _stamp(epoch: float) -> str:
    return time.strftime("%a %b %d %H:%M:%S %Y", time.localtime(epoch))


def _tag(name: str, value: str) -> str:
    return f'<tag name={quoteattr(name)}>{escape(value)}</tag>\n'


def _item(p: Plugin) -> str:
    parts = [
        f"<ReportItem port=\"{p.port}\" svc_name={quoteattr(p.svc_name)} protocol={quoteattr(p.protocol)} "
        f"severity=\"{p.severity}\" pluginID=\"{p.id}\" pluginName={quoteattr(p.name)} "
        f"pluginFamily={quoteattr(p.family)}>\n"
    ]
    for key, value in p.extra.items():
        parts.append(f"<{key}>{escape(value)}</{key}>\n")
    if p.cvss3_base_score:
        parts.append(f"<cvss3_base_score>{p.cvss3_base_score}</cvss3_base_score>\n")
        parts.append(f"<cvss3_vector>{escape(p.cvss3_vector)}</cvss3_vector>\n")
    if p.cvss_base_score:
        parts.append(f"<cvss_base_score>{p.cvss_base_score}</cvss_base_score>\n")
        parts.append(f"<cvss_vector>{escape(p.cvss_vector)}</cvss_vector>\n")
    parts.extend(f"<cve>{escape(c)}</cve>\n" for c in p.cve)
    parts.append(f"<description>{escape(p.description)}</description>\n")
    parts.append(f"<fname>{escape(p.fname or 'emulated.nasl')}</fname>\n")
    parts.append("<plugin_modification_date>2024/04/30</plugin_modification_date>\n")
    parts.append(f"<plugin_name>{escape(p.name)}</plugin_name>\n")
    parts.append("<plugin_publication_date>2005/08/26</plugin_publication_date>\n")
    parts.append(f"<plugin_type>{p.plugin_type}</plugin_type>\n")
    parts.append(f"<risk_factor>{p.risk_factor}</risk_factor>\n")
    parts.append("<script_version>1.106</script_version>\n")
    if p.see_also:
        parts.append(f"<see_also>{escape(chr(10).join(p.see_also))}</see_also>\n")
    parts.append(f"<solution>{escape(p.solution)}</solution>\n")
    parts.append(f"<synopsis>{escape(p.synopsis)}</synopsis>\n")
    parts.extend(f"<xref>{escape(x)}</xref>\n" for x in p.xref)
    if p.output:
        parts.append(f"<plugin_output>{escape(p.output)}</plugin_output>\n")
    parts.append("</ReportItem>\n")
    return "".join(parts)


def host_findings(scan: Scan, host: str) -> list[Plugin]:
    """The plugins reported for ``host`` (deterministic per host name)."""
    digest = _digest(host)
    network = [p for i, p in enumerate(NETWORK_FINDINGS) if p.severity in (0, 3, 4) or (digest >> i) & 1 == 0]
    if not any(p.severity == 1 for p in network) or not any(p.severity == 2 for p in network):
        network = list(NETWORK_FINDINGS)
    plugins = list(network)
    plugins.extend(credential_plugins(scan.scenario, scan.ssh_user, scan.ssh_method, scan.elevate_with))
    if scan.scenario == "success":
        plugins.extend(LOCAL_FINDINGS)
    elif scan.scenario == "noprivs":
        plugins.extend(LOCAL_FINDINGS[:1])
    return plugins


def severity_counts(scan: Scan, host: str) -> list[int]:
    counts = [0, 0, 0, 0, 0]
    for p in host_findings(scan, host):
        counts[p.severity] += 1
    counts[0] += 1  # 19506
    return counts


def _host_properties(scan: Scan, host: str, start: float, end: float) -> str:
    credentialed = scan.scenario in {"success", "noprivs"}
    tags = [
        _tag("HOST_START_TIMESTAMP", str(int(start))),
        _tag("HOST_START", _stamp(start)),
        _tag("host-ip", host_ip(host)),
        _tag("os", "linux"),
        _tag("operating-system", "Linux Kernel 4.15.0-213-generic on Ubuntu 18.04"),
        _tag("operating-system-method", "LinuxDistribution" if credentialed else "SSH"),
        _tag("operating-system-conf", "100" if credentialed else "70"),
        _tag("system-type", "general-purpose"),
        _tag("cpe-0", "cpe:/o:canonical:ubuntu_linux:18.04"),
        _tag("cpe", "cpe:/o:linux:linux_kernel"),
        _tag("policy-used", POLICY_TITLES.get(scan.template_name, scan.template_name)),
        _tag("Credentialed_Scan", "true" if credentialed else "false"),
        _tag("LastAuthenticatedResults" if credentialed else "LastUnauthenticatedResults", str(int(end))),
    ]
    if host_ip(host) != host:
        tags.append(_tag("host-fqdn", host))
    else:
        tags.append(_tag("host-rdns", host))
    if credentialed:
        tags.append(_tag("local-checks-proto", "ssh"))
        tags.append(_tag("ssh-login-used", scan.ssh_user))
        tags.append(_tag("hostname", host.split(".")[0]))
    tags.append(_tag("HOST_END_TIMESTAMP", str(int(end))))
    tags.append(_tag("HOST_END", _stamp(end)))
    return "<HostProperties>\n" + "".join(tags) + "</HostProperties>\n"


def _policy(scan: Scan, run: Run | None) -> str:
    title = POLICY_TITLES.get(scan.template_name, scan.template_name)
    target = ",".join(run.alt_targets) if run and run.alt_targets else scan.text_targets
    prefs = [("TARGET", target), ("scan_name", scan.name), ("port_range", "default")]
    server = "".join(
        f"<preference><name>{escape(k)}</name><value>{escape(v)}</value></preference>\n" for k, v in prefs
    )
    plugin_prefs = ""
    if scan.ssh_user:  # secrets are never echoed: Nessus masks them in exports too
        items = [("SSH user name :", scan.ssh_user), ("SSH password (unsafe!) :", "********"),
                 ("Elevate privileges with :", scan.elevate_with or "Nothing")]
        plugin_prefs = "".join(
            "<item><pluginName>SSH settings</pluginName><pluginId>14273</pluginId>"
            f"<fullName>SSH settings[entry]:{escape(k)}</fullName><preferenceName>{escape(k)}</preferenceName>"
            f"<preferenceType>entry</preferenceType><selectedValue>{escape(v)}</selectedValue></item>\n"
            for k, v in items
        )
    return (
        f"<Policy>\n<policyName>{escape(title)}</policyName>\n<Preferences>\n<ServerPreferences>\n{server}"
        f"</ServerPreferences>\n<PluginsPreferences>\n{plugin_prefs}</PluginsPreferences>\n</Preferences>\n"
        "<FamilySelection>\n<FamilyItem><FamilyName>Settings</FamilyName><Status>enabled</Status></FamilyItem>\n"
        "</FamilySelection>\n</Policy>\n"
    )


def render(scan: Scan, run: Run | None = None) -> bytes:
    """The whole ``.nessus`` document for ``run`` of the scan (default: its current, last run)."""
    run = run or scan.current
    start = run.launched_at if run else scan.created_at
    end = run.ended_at if run and run.ended_at else time.time()
    out = ['<?xml version="1.0" ?>\n<NessusClientData_v2>\n', _policy(scan, run),
           f'<Report name={quoteattr(scan.name)} xmlns:cm="http://www.nessus.org/cm">\n']
    for index, host in enumerate(scan.run_targets(run)):
        if is_unreachable(host):
            if scan.display_unreachable:
                out.append(f"<ReportHost name={quoteattr(host)}>\n")
                out.append(_host_properties(scan, host, start, start + 1))
                out.append(_item(dead_host(host)))
                out.append("</ReportHost>\n")
            continue
        host_start = start + index * 0.5
        out.append(f"<ReportHost name={quoteattr(host)}>\n")
        out.append(_host_properties(scan, host, host_start, max(end, host_start + 1)))
        for plugin in host_findings(scan, host):
            out.append(_item(plugin))
        out.append(_item(scan_information(
            scan_name=scan.name, policy=POLICY_TITLES.get(scan.template_name, scan.template_name),
            credentialed=credentialed_line(scan.scenario, scan.ssh_user),
            start=time.strftime("%Y/%m/%d %H:%M %Z", time.localtime(host_start)),
            duration=max(1, int(end - host_start)),
        )))
        out.append("</ReportHost>\n")
    out.append("</Report>\n</NessusClientData_v2>\n")
    return "".join(out).encode("utf-8")
