"""The credential plugin family the emulator reports for each authentication scenario.

success  → 19506 "yes" + 141118 + 117887 + 110095 + 97993
rejected → 19506 "no"  + 104410 + 21745 ("Failed to authenticate …", no socket errors)
noprivs  → 19506 "yes" + 141118 + 110385 + 102094
none     → 19506 "no"  + 110723 (SSH found, no credentials provided)
untrusted→ 19506 "no"  and no credential plugins
"""

from __future__ import annotations

from scanners.emulator.plugins import Plugin

_VALID_DESC = (
    "Nessus was able to determine that valid credentials were provided for an authentication protocol on the "
    "remote target because it was able to authenticate directly to the target using that protocol."
)
_NO_ISSUES_DESC = (
    "Valid credentials were provided for an authentication protocol on the remote target and Nessus did not log "
    "any subsequent errors or failures for the authentication protocol."
)
_FAILED_DESC = (
    "Nessus was able to connect to the remote port and identify that the service supports an authentication "
    "protocol, but Nessus failed to authenticate to the remote service using the provided credentials."
)
_INSUFFICIENT_DESC = (
    "Nessus was able to log in to the remote host using the provided credentials, but the account did not "
    "have sufficient privileges for all planned checks."
)


def _login_block(user: str, method: str) -> str:
    return f"  User:     '{user}'\n  Port:     22\n  Proto:    SSH\n  Method:   {method}\n"


def credentialed_line(scenario: str, user: str) -> str:
    """The value of 19506's ``Credentialed checks :`` line."""
    if scenario in {"success", "noprivs"}:
        return f"yes, as '{user}' via ssh"
    return "no"


def credential_plugins(scenario: str, user: str, method: str, elevate: str) -> list[Plugin]:
    if scenario == "success":
        return [
            Plugin(141118, "Target Credential Status by Authentication Protocol - Valid Credentials Provided",
                   "Settings", 0, "Valid credentials were provided for an available authentication protocol.",
                   _VALID_DESC, fname="valid_credentials.nasl", plugin_type="summary", port=22, svc_name="ssh",
                   output="\nNessus was able to log in to the remote host via the following :\n\n"
                          + _login_block(user, method)),
            Plugin(117887, "OS Security Patch Assessment Available", "Settings", 0,
                   "Nessus was able to log in to the remote host using the provided credentials and enumerate OS "
                   "security patch levels.",
                   "Nessus was able to determine OS security patch levels by logging into the remote host and "
                   "running commands to determine the version of the operating system and its components.",
                   fname="local_checks_enabled.nasl", plugin_type="summary", xref=("IAVB:0001-B-0516",),
                   output=f"\nOS Security Patch Assessment is available.\n\nAccount  : {user}\nProtocol : SSH\n"),
            Plugin(110095, "Target Credential Issues by Authentication Protocol - No Issues Found", "Settings", 0,
                   "Nessus was able to log in to the remote host using the provided credentials. No issues were "
                   "reported with access, privilege, or intermittent failure.", _NO_ISSUES_DESC,
                   fname="authenticated_hosts.nasl", plugin_type="summary", port=22, svc_name="ssh",
                   xref=("IAVB:0001-B-0520",),
                   output="\nNessus was able to log into the remote host with no privilege or access\n"
                          "problems via the following :\n\n" + _login_block(user, method)),
            Plugin(97993, "OS Identification and Installed Software Enumeration over SSH v2 (Using New SSH Library)",
                   "Misc.", 0, "Information about the remote host can be disclosed via an authenticated session.",
                   "Nessus was able to login to the remote host using SSH or local commands and extract the list "
                   "of installed packages.", fname="ssh_get_info2.nasl", port=22, svc_name="ssh",
                   output=f"\nIt was possible to log into the remote host via SSH using '{method}' authentication.\n\n"
                          "The output of \"uname -a\" is :\nLinux target 4.15.0-213-generic #224-Ubuntu SMP x86_64 "
                          "GNU/Linux\n\nLocal checks have been enabled for this host.\nThe remote Debian system is :"
                          "\nbuster/sid\n\nThis is a Ubuntu system\n\nOS Security Patch Assessment is available for "
                          "this host.\n"),
        ]
    if scenario == "rejected":
        return [
            Plugin(104410, "Target Credential Status by Authentication Protocol - Failure for Provided Credentials",
                   "Settings", 0, "Nessus was unable to log into the detected authentication protocol, using the "
                   "provided credentials, in order to perform credentialed checks.", _FAILED_DESC,
                   "Address the reported problem(s) so that credentialed checks can be executed.",
                   fname="host_credentials_failed.nasl", plugin_type="summary", port=22, svc_name="ssh",
                   xref=("IAVB:0001-B-0503",),
                   output="\nNessus was unable to log into the following host for which\ncredentials have been "
                          f"provided :\n\n  Protocol        : SSH\n  Port            : 22\n  Failure details :\n\n"
                          f"  - User : {user}\n\n    - Plugin      : ssh_get_info2.nasl\n      Plugin ID   : 97993\n"
                          "      Message     : Failed to authenticate using the supplied credentials.\n"),
            Plugin(21745, "OS Security Patch Assessment Failed", "Settings", 0,
                   "Errors prevented OS Security Patch Assessment.",
                   "OS Security Patch Assessment is not available for this host because either the credentials "
                   "supplied in the scan policy did not allow Nessus to log into it or some other problem occurred.",
                   "Fix the problem(s) so that OS Security Patch Assessment is possible.",
                   fname="hostlevel_check_failed.nasl", xref=("IAVB:0001-B-0501",),
                   output="\nThe following service errors were logged :\n\n  - Plugin      : ssh_get_info2.nasl\n"
                          "    Plugin ID   : 97993\n    Plugin Name : OS Identification and Installed Software "
                          "Enumeration over SSH v2 (Using New SSH Library)\n    Protocol    : SSH\n    Message     : "
                          "\nFailed to authenticate using the supplied credentials.\n"),
        ]
    if scenario == "noprivs":
        escalation = elevate if elevate != "Nothing" else "sudo"
        return [
            Plugin(141118, "Target Credential Status by Authentication Protocol - Valid Credentials Provided",
                   "Settings", 0, "Valid credentials were provided for an available authentication protocol.",
                   _VALID_DESC, fname="valid_credentials.nasl", plugin_type="summary", port=22, svc_name="ssh",
                   output="\nNessus was able to log in to the remote host via the following :\n\n"
                          + _login_block(user, method)),
            Plugin(110385, "Target Credential Issues by Authentication Protocol - Insufficient Privilege", "Settings",
                   0, "Nessus was able to log in to the remote host using the provided credentials. However, the "
                   "credentials did not have sufficient privileges for all planned checks.", _INSUFFICIENT_DESC,
                   "Ensure the account has the privileges needed for all checks, or configure privilege escalation.",
                   fname="host_credentials_insufficient_privilege.nasl", plugin_type="summary", port=22,
                   svc_name="ssh", xref=("IAVB:0001-B-0505",),
                   output="\nNessus was able to log into the remote host, however this credential\ndid not have "
                          "sufficient privileges for all planned checks :\n\n" + _login_block(user, method)
                          + "\nSee the output of the following plugin for details :\n\n  Plugin ID   : 102094\n"
                          "  Plugin Name : SSH Commands Require Privilege Escalation\n"),
            Plugin(102094, "SSH Commands Require Privilege Escalation", "Settings", 0,
                   "This plugin reports the SSH commands that failed with a response indicating that privilege "
                   "escalation is required to run them.",
                   "Some SSH commands failed because the account lacks privileges or privilege escalation failed.",
                   fname="ssh_check_privilege_escalation.nasl", plugin_type="summary", port=22, svc_name="ssh",
                   output=f"\nLogin account : {user}\nCommands failed due to privilege escalation failure :\n\n"
                          f"- Escalation account : root\n  Escalation method  : {escalation}\n  Plugins :\n"
                          "  - Plugin Filename : ssh_get_info2.nasl\n    Plugin ID       : 97993\n"
                          "    Commands :\n      - dmidecode\n"),
        ]
    if scenario == "none":
        return [
            Plugin(110723, "Target Credential Status by Authentication Protocol - No Credentials Provided",
                   "Settings", 0, "Nessus was able to find common ports used for local checks, however, no "
                   "credentials were provided in the scan policy.",
                   "Nessus was not able to successfully authenticate directly to the remote target on an available "
                   "authentication protocol because no credentials were provided for that protocol.",
                   "n/a", fname="no_local_checks_credentials.nasl", plugin_type="summary", port=22, svc_name="ssh",
                   xref=("IAVB:0001-B-0504",),
                   output="\nSSH was detected on port 22 but no credentials were provided.\n"
                          "SSH local checks were not enabled.\n"),
        ]
    return []
