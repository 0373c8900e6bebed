"""The plugins the emulator reports: real Nessus plugin ids, names, families and output shapes.

Texts are short paraphrases written for the emulator; the plugin ids and the lines parsers rely on
(e.g. 19506's ``Credentialed checks : yes``) follow real exports (see ``../shared/fixtures/nessus/``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Plugin:
    id: int
    name: str
    family: str
    severity: int
    synopsis: str
    description: str
    solution: str = "n/a"
    fname: str = ""
    plugin_type: str = "remote"
    port: int = 0
    svc_name: str = "general"
    protocol: str = "tcp"
    cvss_base_score: str = ""
    cvss_vector: str = ""
    cvss3_base_score: str = ""
    cvss3_vector: str = ""
    cve: tuple[str, ...] = ()
    xref: tuple[str, ...] = ()
    see_also: tuple[str, ...] = ()
    output: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def risk_factor(self) -> str:
        return ("None", "Low", "Medium", "High", "Critical")[self.severity]


# -------------------------------------------------------------------- service findings (network checks)

NETWORK_FINDINGS: tuple[Plugin, ...] = (
    Plugin(11219, "Nessus SYN scanner", "Port scanners", 0, "It is possible to determine which TCP ports are open.",
           "This plugin is a SYN 'half-open' port scanner.", "Protect your target with an IP filter.",
           "nessus_syn_scanner.nbin", port=22, svc_name="ssh", output="Port 22/tcp was found to be open"),
    Plugin(11219, "Nessus SYN scanner", "Port scanners", 0, "It is possible to determine which TCP ports are open.",
           "This plugin is a SYN 'half-open' port scanner.", "Protect your target with an IP filter.",
           "nessus_syn_scanner.nbin", port=443, svc_name="www", output="Port 443/tcp was found to be open"),
    Plugin(22964, "Service Detection", "Service detection", 0, "The remote service could be identified.",
           "Nessus was able to identify the remote service by its banner or by looking at the error message it "
           "sends when it receives an HTTP request.", fname="find_service.nasl", port=443, svc_name="www",
           output="A web server is running on this port through TLSv1.2."),
    Plugin(10881, "SSH Protocol Versions Supported", "General", 0,
           "A SSH server is running on the remote host.",
           "This plugin determines the versions of the SSH protocol supported by the remote SSH daemon.",
           fname="ssh_proto_version.nasl", port=22, svc_name="ssh",
           output="The remote SSH daemon supports the following versions of the\nSSH protocol :\n\n"
                  "  - 1.99\n  - 2.0\n"),
    Plugin(10107, "HTTP Server Type and Version", "Web Servers", 0,
           "A web server is running on the remote host.",
           "This plugin attempts to determine the type and the version of the remote web server.",
           fname="http_version.nasl", port=443, svc_name="www", xref=("IAVT:0001-T-0931",),
           output="The remote web server type is :\n\nnginx/1.18.0 (Ubuntu)"),
    Plugin(70658, "SSH Server CBC Mode Ciphers Enabled", "Misc.", 1,
           "The SSH server is configured to use Cipher Block Chaining.",
           "The SSH server is configured to support Cipher Block Chaining (CBC) encryption, which may allow an "
           "attacker to recover the plaintext message from the ciphertext.",
           "Contact the vendor or consult product documentation to disable CBC mode cipher encryption, and "
           "enable CTR or GCM cipher mode encryption.", "ssh_cbc_supported_ciphers.nasl", port=22, svc_name="ssh",
           cvss_base_score="2.6", cvss_vector="CVSS2#AV:N/AC:H/Au:N/C:P/I:N/A:N", cvss3_base_score="3.7",
           cvss3_vector="CVSS:3.0/AV:N/AC:H/PR:N/UI:N/S:U/C:L/I:N/A:N", cve=("CVE-2008-5161",),
           xref=("CERT:958563", "CWE:200"),
           output="\nThe following client-to-server Cipher Block Chaining (CBC) algorithms\nare supported : \n\n"
                  "  aes128-cbc\n  aes256-cbc\n"),
    Plugin(90317, "SSH Weak Algorithms Supported", "Misc.", 2,
           "The remote SSH server is configured to allow weak encryption algorithms or no algorithm at all.",
           "Nessus has detected that the remote SSH server is configured to use the Arcfour stream cipher or no "
           "cipher at all. RFC 4253 advises against using Arcfour due to an issue with weak keys.",
           "Contact the vendor or consult product documentation to remove the weak ciphers.",
           "ssh_weak_algos_supported.nasl", port=22, svc_name="ssh", cvss_base_score="4.3",
           cvss_vector="CVSS2#AV:N/AC:M/Au:N/C:P/I:N/A:N", see_also=("https://tools.ietf.org/html/rfc4253#section-6.3",),
           output="\nThe following weak server-to-client encryption algorithms are supported : \n\n  arcfour\n"),
    Plugin(51192, "SSL Certificate Cannot Be Trusted", "General", 2,
           "The SSL certificate for this service cannot be trusted.",
           "The server's X.509 certificate cannot be trusted: its chain does not end in a known public "
           "certificate authority, or it has expired, or its signature could not be verified.",
           "Purchase or generate a proper SSL certificate for this service.", "ssl_certificate_chain.nasl",
           port=443, svc_name="www", cvss_base_score="6.4", cvss_vector="CVSS2#AV:N/AC:L/Au:N/C:P/I:P/A:N",
           cvss3_base_score="6.5", cvss3_vector="CVSS:3.0/AV:N/AC:L/PR:N/UI:N/S:U/C:L/I:L/A:N",
           see_also=("https://www.itu.int/rec/T-REC-X.509/en", "https://en.wikipedia.org/wiki/X.509"),
           output="\nThe following certificate was at the top of the certificate\nchain sent by the remote host, but "
                  "it is signed by an unknown\ncertificate authority :\n\n|-Subject : CN=localhost\n"),
    Plugin(104743, "TLS Version 1.0 Protocol Detection", "Service detection", 2,
           "The remote service encrypts traffic using an older version of TLS.",
           "The remote service accepts connections encrypted using TLS 1.0, which has a number of cryptographic "
           "design flaws.", "Enable support for TLS 1.2 and 1.3, and disable support for TLS 1.0.",
           "tls10_detection.nasl", port=443, svc_name="www", cvss_base_score="6.1",
           cvss_vector="CVSS2#AV:N/AC:H/Au:N/C:C/I:P/A:N", cvss3_base_score="6.5",
           cvss3_vector="CVSS:3.0/AV:N/AC:L/PR:N/UI:N/S:U/C:L/I:L/A:N",
           see_also=("https://tools.ietf.org/html/draft-ietf-tls-oldversions-deprecate-00",),
           output="TLSv1 is enabled and the server supports at least one cipher."),
    Plugin(42873, "SSL Medium Strength Cipher Suites Supported (SWEET32)", "General", 3,
           "The remote service supports the use of medium strength SSL ciphers.",
           "The remote host supports the use of SSL ciphers that offer medium strength encryption, which Nessus "
           "regards as those with key lengths of at least 64 bits and less than 112 bits, or that use 3DES.",
           "Reconfigure the affected application if possible to avoid use of medium strength ciphers.",
           "ssl_medium_supported_ciphers.nasl", port=443, svc_name="www", cvss_base_score="5.0",
           cvss_vector="CVSS2#AV:N/AC:L/Au:N/C:P/I:N/A:N", cvss3_base_score="7.5",
           cvss3_vector="CVSS:3.0/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:N/A:N", cve=("CVE-2016-2183",),
           see_also=("https://sweet32.info",),
           output="\n  Medium Strength Ciphers (> 64-bit and < 112-bit key, or 3DES)\n\n"
                  "    DES-CBC3-SHA                 Kx=RSA         Au=RSA      Enc=3DES-CBC(168)        Mac=SHA1\n"),
    Plugin(156014, "Apache Log4Shell RCE detection via callback correlation (Direct Check HTTP)", "Web Servers", 4,
           "The remote web server is affected by a remote code execution vulnerability.",
           "The remote web server is running a version of Apache Log4j that is affected by a remote code "
           "execution vulnerability (JNDI lookup of attacker-controlled data).",
           "Upgrade to Apache Log4j version 2.17.1 or later.", "apache_log4j_jdni_ldap_generic.nbin", port=443,
           svc_name="www", cvss_base_score="10.0", cvss_vector="CVSS2#AV:N/AC:L/Au:N/C:C/I:C/A:C",
           cvss3_base_score="10.0", cvss3_vector="CVSS:3.0/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H",
           cve=("CVE-2021-44228",), xref=("CISA-KNOWN-EXPLOITED:2021/12/24", "IAVA:2021-A-0573"),
           see_also=("https://logging.apache.org/log4j/2.x/security.html",),
           output="\nNessus was able to exploit the issue using the following request :\n\nGET / HTTP/1.1\n"),
)

# ------------------------------------------------------------------ findings of successful local checks

LOCAL_FINDINGS: tuple[Plugin, ...] = (
    Plugin(33850, "Unix Operating System Unsupported Version Detection", "General", 4,
           "The operating system running on the remote host is no longer supported.",
           "According to its self-reported version number, the Unix operating system running on the remote host "
           "is no longer supported and receives no security patches.",
           "Upgrade to a version of the Unix operating system that is currently supported.",
           "unsupported_operating_system.nasl", plugin_type="combined", cvss_base_score="10.0",
           cvss_vector="CVSS2#AV:N/AC:L/Au:N/C:C/I:C/A:C", cvss3_base_score="10.0",
           cvss3_vector="CVSS:3.0/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H", xref=("IAVA:0001-A-0502",),
           output="\nUbuntu 18.04 support ended on 2023-05-31 (standard support).\n"),
    Plugin(157288, "Ubuntu 18.04 LTS : OpenSSL vulnerabilities (USN-5488-1)", "Ubuntu Local Security Checks", 3,
           "The remote Ubuntu host is missing one or more security-related patches.",
           "The remote Ubuntu host has a package installed that is affected by multiple vulnerabilities as "
           "referenced in the USN advisory.", "Update the affected packages.", "ubuntu_USN-5488-1.nasl",
           plugin_type="local", cvss_base_score="10.0", cvss_vector="CVSS2#AV:N/AC:L/Au:N/C:C/I:C/A:C",
           cvss3_base_score="9.8", cvss3_vector="CVSS:3.0/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
           cve=("CVE-2022-1292", "CVE-2022-2068"), xref=("USN:5488-1",),
           see_also=("https://ubuntu.com/security/notices/USN-5488-1",),
           output="\n  - Installed package : libssl1.1_1.1.1-1ubuntu2.1~18.04.15\n"
                  "  - Fixed package     : libssl1.1_1.1.1-1ubuntu2.1~18.04.20\n"),
)

# -------------------------------------------------------------------------- always-present info plugins

_SCAN_INFO_DESCRIPTION = (
    "This plugin displays, for each tested host, information about the scan itself : the version of the "
    "plugin set, the scanner edition and version, the port scanners and range used, whether credentialed "
    "checks were possible, the date and duration of the scan."
)


def plugin_feed_version() -> str:
    """A feed published today at midnight UTC, like a scanner that updates its plugins daily."""
    return time.strftime("%Y%m%d0000", time.gmtime())


def scan_information(*, scan_name: str, policy: str, credentialed: str, start: str, duration: int) -> Plugin:
    """Plugin 19506 "Nessus Scan Information" with its ``Credentialed checks`` line."""
    output = (
        "Information about this scan : \n\n"
        f"Nessus version : 10.7.1\nNessus build : 20013\nPlugin feed version : {plugin_feed_version()}\n"
        "Scanner edition used : Nessus\nScanner OS : LINUX\nScanner distribution : ubuntu1404-x86-64\n"
        f"Scan type : Normal\nScan name : {scan_name}\nScan policy used : {policy}\n"
        "Scanner IP : 127.0.0.1\nPort scanner(s) : nessus_syn_scanner \nPort range : default\n"
        "Ping RTT : 1.234 ms\nThorough tests : no\nExperimental tests : no\nParanoia level : 1\n"
        "Report verbosity : 1\nSafe checks : yes\nOptimize the test : yes\n"
        f"Credentialed checks : {credentialed}\n"
        "Patch management checks : None\nDisplay superseded patches : yes (supersedence plugin launched)\n"
        "CGI scanning : disabled\nWeb application tests : disabled\nMax hosts : 30\nMax checks : 4\n"
        f"Recv timeout : 5\nBackports : None\nAllow post-scan editing : Yes\nScan Start Date : {start}\n"
        f"Scan duration : {duration} sec\n"
    )
    return Plugin(19506, "Nessus Scan Information", "Settings", 0,
                  "This plugin displays information about the Nessus scan.", _SCAN_INFO_DESCRIPTION,
                  fname="scan_info.nasl", plugin_type="summary", output=output, extra={"always_run": "1"})


def dead_host(host: str) -> Plugin:
    return Plugin(10180, "Ping the remote host", "Port scanners", 0,
                  "It was possible to identify the status of the remote host (alive or dead).",
                  "Nessus was able to determine if the remote host is alive using one or more ping types.",
                  fname="ping_host.nasl", output=f"The remote host ({host}) is considered as dead - not scanning\n")
