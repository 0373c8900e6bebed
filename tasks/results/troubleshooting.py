"""Troubleshooting for authentication problems: the likely cause per evidence, and what to do next."""

from __future__ import annotations

from collections.abc import Mapping

from tasks.models.results import AuthCause
from tasks.models.states import AuthStatus, ScanType

MAX_HOSTS_LISTED = 20

ADVICE: dict[str, dict[str, object]] = {
    AuthCause.CREDENTIALS_REJECTED: {
        "title": "Credentials rejected",
        "likely_cause": "The scanner reached the host's login service (SSH/SMB) but the supplied username, "
        "password or private key was not accepted.",
        "next_steps": [
            "Check the username and password (or private key and its passphrase) from the scanner's network: "
            "`ssh -v <user>@<host>`.",
            "If the evidence mentions the key ('Failed to parse the given key', 'passphrase'), supply the key in "
            "OpenSSH/PEM format with the right passphrase.",
            "Check that the account is not locked or expired and that sshd allows the method "
            "(PasswordAuthentication / PubkeyAuthentication, AllowUsers).",
            "Resubmit the scan with corrected credentials.",
        ],
    },
    AuthCause.CONNECTIVITY: {
        "title": "Could not connect to the login service",
        "likely_cause": "Socket errors or timeouts while connecting: the login port is filtered, closed, or "
        "the host dropped the connection — the credentials were never tried.",
        "next_steps": [
            "Check that the SSH (22) or SMB (445) port is open from the scanner to the host (firewall, "
            "security groups, host firewall).",
            "If SSH listens on another port, set it in the scan credentials.",
            "Check for rate limiting (fail2ban, MaxStartups) and retry with fewer parallel checks.",
        ],
    },
    AuthCause.INSUFFICIENT_PRIVILEGE: {
        "title": "Logged in without enough privilege",
        "likely_cause": "The login worked, but the account could not run every command the checks need, so "
        "some checks were skipped.",
        "next_steps": [
            "Use the authenticated_privileged scan type with privilege escalation (sudo, su, su+sudo, pbrun, dzdo).",
            "Check the escalation account and password, and that sudoers allows the account without a TTY.",
            "Or scan with an account that has root/administrator rights.",
        ],
    },
    AuthCause.NO_CREDENTIALS: {
        "title": "No credentials provided",
        "likely_cause": "The host offers a login service (SSH or SMB) but the scan carried no credentials for "
        "that protocol.",
        "next_steps": [
            "Submit the scan as authenticated with credentials for the protocol the host offers (SSH for "
            "Unix-like hosts, SMB for Windows).",
        ],
    },
    AuthCause.LOCAL_CHECKS_FAILED: {
        "title": "Local checks failed",
        "likely_cause": "Nessus logged in or tried to, but could not complete OS security patch assessment "
        "(plugin 21745 without a clearer reason).",
        "next_steps": [
            "Read the evidence line: it is the error the scanner logged.",
            "Check the account's shell and that basic commands (uname, rpm/dpkg) run for it.",
        ],
    },
    AuthCause.LOCAL_CHECKS_NOT_RUN: {
        "title": "Credentialed checks did not run",
        "likely_cause": "The scanner reports 'Credentialed checks : no' and logged no login attempt: the host "
        "probably exposes no SSH/SMB service to the scanner, the port is filtered, or none of the supplied "
        "credentials is for the service it offers (e.g. only SSH credentials for a Windows host).",
        "next_steps": [
            "Check that the host runs SSH (or SMB for Windows) and that the port is reachable from the scanner.",
            "Check that the scan carries credentials for that protocol (SMB for Windows, SSH for Unix-like hosts).",
            "Check that the target address is the host you meant (DNS, NAT).",
        ],
    },
    AuthCause.NO_EVIDENCE: {
        "title": "No authentication evidence",
        "likely_cause": "The export carries none of the credential plugins (19506 with a 'Credentialed checks' "
        "line, 141118, 117887, 104410, 21745…), so whether the login worked cannot be told.",
        "next_steps": [
            "Make sure the scan policy enables the 'Settings' plugin family (plugins 19506, 104410, 141118…).",
        ],
    },
}


# An authenticated_privileged scan already asked for escalation: it is the escalation that fell short.
ESCALATION_FAILED = {
    "title": "Logged in without enough privilege",
    "likely_cause": "The login worked and the scan already asked for privilege escalation, but the account "
    "still lacked privilege for some checks: the escalation failed or the escalated account is not privileged "
    "enough, so some checks were skipped.",
    "next_steps": [
        "Check the escalation method, escalation account and escalation password given with the scan.",
        "Check that sudoers (or the su/pbrun/dzdo policy) lets the account run every command as root without a TTY "
        "(the evidence names the commands or the protocol).",
        "Or scan with an account that has root/administrator rights.",
    ],
}


def build_troubleshooting(
    host_verdicts: Mapping[str, Mapping[str, object]], scan_type: str = ""
) -> list[dict[str, object]]:
    """One entry per problem cause among failed/partial/unknown hosts, most hosts first."""
    groups: dict[str, list[str]] = {}
    first_evidence: dict[str, object] = {}
    for name, verdict in host_verdicts.items():
        if verdict["verdict"] not in (AuthStatus.FAILED, AuthStatus.PARTIAL, AuthStatus.UNKNOWN):
            continue
        cause = str(verdict["cause"])
        if cause not in ADVICE:
            continue
        groups.setdefault(cause, []).append(name)
        evidence = verdict.get("evidence") or []
        if cause not in first_evidence and evidence:
            first_evidence[cause] = evidence[0]  # type: ignore[index]
    entries = []
    for cause, hosts in sorted(groups.items(), key=lambda item: (-len(item[1]), item[0])):
        advice = ADVICE[cause]
        if cause == AuthCause.INSUFFICIENT_PRIVILEGE and scan_type == ScanType.AUTHENTICATED_PRIVILEGED:
            advice = ESCALATION_FAILED
        entries.append(
            {
                "cause": cause,
                "title": advice["title"],
                "host_count": len(hosts),
                "hosts": hosts[:MAX_HOSTS_LISTED],
                "evidence": first_evidence.get(cause),
                "likely_cause": advice["likely_cause"],
                "next_steps": list(advice["next_steps"]),  # type: ignore[call-overload]
            }
        )
    return entries
