"""One pass over a parsed export: counts, per-host and task authentication verdicts, validation stats,
warnings and troubleshooting. Used by ``ingest`` (with the task's scan type) and by ``validate_nessus``
(with ``--scan-type`` or an inferred one). Memory: a small state per host, nothing per finding.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tasks.models.results import AuthCause
from tasks.models.states import AuthStatus, ScanType
from tasks.results.auth import (
    MAX_EVIDENCE,
    SCAN_INFO,
    HostAuthState,
    HostVerdict,
    finding_text,
    host_verdict,
    infer_scan_type,
    parse_scan_info,
    task_verdict,
)
from tasks.results.parser import NessusReader, ReportHostBlock
from tasks.results.policy import PolicyInfo
from tasks.results.troubleshooting import ADVICE, build_troubleshooting

SEVERITY_NAMES = {0: "info", 1: "low", 2: "medium", 3: "high", 4: "critical"}
FEED_MAX_AGE_DAYS = 30
MAX_NAMES_IN_MESSAGE = 5
_RANGE_RE = re.compile(r"/|^[\d.]+-[\d.]+$|^[0-9a-f:]+-[0-9a-f:]+$", re.I)  # CIDRs and address ranges


def severity_bucket(severity: int) -> int:
    return min(max(severity, 0), 4)


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:MAX_NAMES_IN_MESSAGE])
    return shown + (f" and {len(names) - MAX_NAMES_IN_MESSAGE} more" if len(names) > MAX_NAMES_IN_MESSAGE else "")


def feed_datetime(version: str) -> dt.datetime | None:
    """Plugin feed versions are ``YYYYMMDDHHMM``."""
    match = re.match(r"^(\d{12})", version.strip())
    if not match:
        return None
    try:
        return dt.datetime.strptime(match.group(1), "%Y%m%d%H%M").replace(tzinfo=dt.UTC)
    except ValueError:
        return None


def _host_start(props: dict) -> dt.datetime | None:
    stamp = props.get("HOST_START_TIMESTAMP")
    if isinstance(stamp, str) and stamp.strip().isdigit():
        return dt.datetime.fromtimestamp(int(stamp.strip()), tz=dt.UTC)
    text = props.get("HOST_START")
    if isinstance(text, str) and text.strip():
        try:
            return dt.datetime.strptime(" ".join(text.split()), "%a %b %d %H:%M:%S %Y").replace(tzinfo=dt.UTC)
        except ValueError:
            return None
    return None


def _scan_info_start(info: dict[str, str]) -> dt.datetime | None:
    match = re.match(r"(\d{4})/(\d{1,2})/(\d{1,2})\s+(\d{1,2}):(\d{2})", info.get("scan_start_date", ""))
    if not match:
        return None
    try:
        return dt.datetime(*map(int, match.groups()), tzinfo=dt.UTC)
    except ValueError:
        return None


@dataclass
class Analysis:
    scan_type: str
    scan_type_source: str
    hosts: int
    hosts_answered: int
    findings: int
    severity_counts: dict[str, int]
    host_verdicts: dict[str, HostVerdict]
    verdict: str
    validation: dict[str, object]
    warnings: list[str]
    troubleshooting: list[dict[str, object]]
    should_fail: bool
    failure_message: str
    scan_info: dict[str, str] = field(default_factory=dict)

    def host_verdicts_dict(self) -> dict[str, dict[str, object]]:
        return {name: v.as_dict() for name, v in self.host_verdicts.items()}


class ReportAnalyzer:
    """Feed it every ReportHost block (repeated hosts merge by name), then call :meth:`finish`."""

    def __init__(self, *, scan_type: str | None = None, scan_type_source: str = "", targets: list[str] | None = None):
        self.scan_type = scan_type
        self.scan_type_source = scan_type_source
        self.targets = list(targets or [])
        self.states: dict[str, HostAuthState] = {}
        self.aliases: set[str] = set()
        self.findings = 0
        self.severity = [0, 0, 0, 0, 0]
        self.scan_info: dict[str, str] = {}
        self.scan_start: dt.datetime | None = None
        self.agent_scan = False
        self.parse_warnings: list[str] = []

    def add(self, block: ReportHostBlock) -> HostAuthState:
        state = self.states.get(block.name)
        if state is None:
            state = self.states[block.name] = HostAuthState(block.name)
        state.add_block(block)
        self.aliases.add(block.name.lower())
        for key in ("host-ip", "host-fqdn", "netbios-name"):
            value = block.properties.get(key)
            if isinstance(value, str) and value.strip():
                self.aliases.add(value.strip().lower())
        started = _host_start(block.properties)
        if started and (self.scan_start is None or started < self.scan_start):
            self.scan_start = started
        for finding in block.findings:
            self.severity[severity_bucket(finding.severity)] += 1
            if finding.plugin_id == SCAN_INFO and not self.scan_info:
                self.scan_info = parse_scan_info(finding_text(finding))
        self.findings += len(block.findings)
        return state

    def verdict_for(self, state: HostAuthState) -> HostVerdict:
        return host_verdict(state, self.scan_type or ScanType.UNTRUSTED, agent=self.agent_scan)

    def resolve_scan_type(self, policy: PolicyInfo) -> None:
        if self.scan_type:
            return
        agent = policy.agent_scan or "agent" in self.scan_info.get("scan_type", "").lower()
        self.scan_type, reason = infer_scan_type(
            credential_kinds=policy.credentials.kinds,
            escalation=policy.credentials.escalation,
            agent_scan=agent,
            states=list(self.states.values()),
        )
        self.scan_type_source = f"inferred: {reason}"

    def finish(
        self, policy: PolicyInfo, *, now: dt.datetime | None = None, parse_warnings: list[str] | None = None
    ) -> Analysis:
        """Verdicts, stats and warnings; ``parse_warnings`` are the parser's repairs (clamped, truncated)."""
        self.parse_warnings = list(parse_warnings or [])
        self.agent_scan = self.agent_scan or policy.agent_scan
        self.resolve_scan_type(policy)
        if not self.targets:
            self.targets = policy.targets
        scan_type = str(self.scan_type)
        verdicts = {name: self.verdict_for(state) for name, state in self.states.items()}
        if scan_type != ScanType.UNTRUSTED and not self.agent_scan:
            verdicts = _without_credentials(verdicts, self.states, policy)
        answered = [name for name, state in self.states.items() if state.answered]
        # The scanner scanning itself proves nothing about the credentials: judge the remote hosts when
        # there are any; a scan of only the scanner itself is local_only (or failed/unknown, see below).
        remote = [name for name in answered if verdicts[name].verdict != AuthStatus.LOCAL_ONLY]
        local_only = [name for name in answered if verdicts[name].verdict == AuthStatus.LOCAL_ONLY]
        if remote:
            verdict = task_verdict([verdicts[name].verdict for name in remote], scan_type)
        else:  # only the scanner itself: its local checks' failure is a failure, their success no proof
            verdict = task_verdict([verdicts[name].self_verdict for name in local_only], scan_type)
            if verdict in (AuthStatus.SUCCESS, AuthStatus.PARTIAL):
                verdict = str(AuthStatus.LOCAL_ONLY)
        by_verdict = Counter(v.verdict for v in verdicts.values())
        causes = Counter(
            v.cause for v in verdicts.values() if v.verdict in (AuthStatus.FAILED, AuthStatus.PARTIAL) and v.cause
        )
        feed_version = self.scan_info.get("plugin_feed_version", "")
        feed_at = feed_datetime(feed_version)
        reference = self.scan_start or _scan_info_start(self.scan_info) or now or dt.datetime.now(tz=dt.UTC)
        feed_age = (reference - feed_at).days if feed_at else None
        missing = self._targets_without_results()
        validation: dict[str, object] = {
            "scan_type": scan_type,
            "scan_type_source": self.scan_type_source,
            "hosts_scanned": len(self.states),
            "hosts_answered": len(answered),
            "hosts_credentialed": by_verdict[AuthStatus.SUCCESS] + by_verdict[AuthStatus.PARTIAL],
            "hosts_by_verdict": dict(sorted(by_verdict.items())),
            "hosts_local_only": local_only,
            "failures_by_cause": dict(sorted(causes.items())),
            "credentials_in_policy": policy.credentials.supplied,
            "credential_kinds": list(policy.credentials.kinds),
            "policy_name": policy.policy_name,
            "nessus_version": self.scan_info.get("nessus_version", "").split(" ")[0],
            "plugin_feed_version": feed_version,
            "plugin_feed_date": feed_at.isoformat() if feed_at else None,
            "plugin_feed_age_days": feed_age,
            "scan_started": self.scan_start.isoformat() if self.scan_start else None,
            "targets_without_results": missing,
        }
        scanner_counts = {
            k: policy.server_preferences[k]
            for k in ("hostCredsSuccessCount", "hostCredsFailedCount", "hostCredsWithoutCount")
            if k in policy.server_preferences
        }
        if scanner_counts:
            validation["scanner_credential_counts"] = scanner_counts
        host_dicts = {name: v.as_dict() for name, v in verdicts.items()}
        troubleshooting = build_troubleshooting(host_dicts, scan_type) if scan_type != ScanType.UNTRUSTED else []
        warnings = [*self.parse_warnings, *self._warnings(scan_type, verdicts, answered, feed_version, feed_age,
                                                          missing)]
        if local_only and scan_type != ScanType.UNTRUSTED:
            warnings.append(
                f"{len(local_only)} host(s) are the scanner itself ({_names(local_only)}): its own local checks "
                "prove nothing about the supplied credentials"
                + (" and are not counted in the task's verdict." if remote else ".")
            )
        should_fail, message = self._failure(scan_type, verdict, verdicts, remote or answered)
        return Analysis(
            scan_type=scan_type,
            scan_type_source=self.scan_type_source,
            hosts=len(self.states),
            hosts_answered=len(answered),
            findings=self.findings,
            severity_counts={str(i): n for i, n in enumerate(self.severity)},
            host_verdicts=verdicts,
            verdict=verdict,
            validation=validation,
            warnings=warnings,
            troubleshooting=troubleshooting,
            should_fail=should_fail,
            failure_message=message,
            scan_info=self.scan_info,
        )

    def _targets_without_results(self) -> list[str]:
        """Plain addresses/host names of the targets that have no host in the results (ranges are skipped)."""
        return [t for t in self.targets if not _RANGE_RE.search(t) and t.lower() not in self.aliases]

    def _warnings(
        self,
        scan_type: str,
        verdicts: dict[str, HostVerdict],
        answered: list[str],
        feed_version: str,
        feed_age: int | None,
        missing: list[str],
    ) -> list[str]:
        warnings: list[str] = []
        if not answered:
            warnings.append(
                "No hosts answered: the results contain no live host"
                + (f" for the target(s) {_names(self.targets)}." if self.targets else ".")
            )
        else:
            alive = set(answered)
            dead = [name for name in verdicts if name not in alive]  # in the results, reported dead (10180)
            if dead:
                parts = ([f"{_names(missing)} (not in the results)"] if missing else []) + [
                    f"{_names(dead)} (reported dead)"]
                warnings.append(f"{len(missing) + len(dead)} target(s) did not answer: {', '.join(parts)}.")
            elif missing:
                warnings.append(
                    f"{len(missing)} target(s) did not answer and are not in the results: {_names(missing)}.")
        if feed_age is not None and feed_age > FEED_MAX_AGE_DAYS:
            warnings.append(
                f"Plugins older than {FEED_MAX_AGE_DAYS} days: the plugin feed {feed_version} was {feed_age} days old "
                "when the scan ran; update the scanner's plugins."
            )
        if scan_type == ScanType.UNTRUSTED or not answered:
            return warnings
        # the scanner itself (local_only) is not judged while there are remote hosts: it is not counted either
        judged = [n for n in answered if verdicts[n].verdict != AuthStatus.LOCAL_ONLY] or answered
        problem = [n for n in answered if verdicts[n].verdict in (AuthStatus.FAILED, AuthStatus.PARTIAL)]
        ok = [n for n in answered if verdicts[n].verdict == AuthStatus.SUCCESS]
        if problem and ok:
            by_cause: dict[str, list[str]] = {}
            for name in problem:
                by_cause.setdefault(verdicts[name].cause, []).append(name)
            detail = "; ".join(
                f"{str(ADVICE.get(cause, {}).get('title', cause)).lower()} on {_names(names)}"
                for cause, names in by_cause.items()
            )
            warnings.append(
                f"Authentication failed or was incomplete on {len(problem)} of {len(judged)} hosts: {detail}. "
                "See troubleshooting."
            )
        elif problem and all(verdicts[n].verdict == AuthStatus.PARTIAL for n in problem):
            warnings.append(f"Authentication was incomplete on {len(problem)} host(s): see troubleshooting.")
        unknown = [n for n in answered if verdicts[n].verdict == AuthStatus.UNKNOWN]
        if unknown:
            warnings.append(
                f"Authentication could not be verified on {len(unknown)} host(s) ({_names(unknown)}): the export "
                "carries no credential-plugin evidence."
            )
        return warnings

    def _failure(
        self, scan_type: str, verdict: str, verdicts: dict[str, HostVerdict], answered: list[str]
    ) -> tuple[bool, str]:
        if not answered:
            targets = f" ({_names(self.targets)})" if self.targets else ""
            return True, (
                f"No host answered: the scan finished but none of the targets{targets} appears in the results. "
                "Check that the targets are up and reachable from the scanner."
            )
        if scan_type != ScanType.UNTRUSTED and verdict == AuthStatus.FAILED:
            by_cause: dict[str, list[str]] = {}
            for name in answered:
                if verdicts[name].verdict == AuthStatus.FAILED:
                    by_cause.setdefault(verdicts[name].cause, []).append(name)
            detail = "; ".join(
                f"{str(ADVICE.get(cause, {}).get('title', cause)).lower()} on {_names(names)}"
                for cause, names in by_cause.items()
            )
            failed = sum(len(names) for names in by_cause.values())
            # unknown / not applicable hosts: nobody knows whether the credentials worked there
            other = [name for name in answered if verdicts[name].verdict != AuthStatus.FAILED]
            unjudged = f"; {len(other)} other host(s) could not be judged ({_names(other)})" if other else ""
            return True, (
                f"Authenticated scan failed: the credentials did not work on any of the {failed} host(s) "
                f"({detail}){unjudged}. See the troubleshooting section."
            )
        return False, ""


_NOT_LOGGED_IN = {(AuthStatus.FAILED, AuthCause.LOCAL_CHECKS_NOT_RUN), (AuthStatus.UNKNOWN, AuthCause.NO_EVIDENCE)}
NO_CREDENTIALS_EVIDENCE = {
    "plugin_id": None, "port": 0,
    "line": "Scan policy: its SSH, SMB and Kerberos password and key fields are empty: no host credentials were "
            "supplied",
}


def _without_credentials(
    verdicts: dict[str, HostVerdict], states: dict[str, HostAuthState], policy: PolicyInfo
) -> dict[str, HostVerdict]:
    """"Credentialed checks : no" with no login attempt (or no evidence at all), in an export whose policy lists
    its credential fields empty: the cause is that no credentials were supplied, not a host without SSH/SMB
    nor a missing plugin family (agents excepted)."""
    if policy.credentials.supplied or not policy.credentials.fields_listed:
        return verdicts
    return {
        name: HostVerdict(str(AuthStatus.FAILED), str(AuthCause.NO_CREDENTIALS),
                          [NO_CREDENTIALS_EVIDENCE, *v.evidence][:MAX_EVIDENCE])
        if (v.verdict, v.cause) in _NOT_LOGGED_IN and not states[name].agent
        else v
        for name, v in verdicts.items()
    }


def analyze_file(path: str | Path, *, scan_type: str | None = None) -> tuple[Analysis, NessusReader]:
    """Parse and validate any export without touching the database (``manage.py validate_nessus``).

    ``scan_type`` None → inferred from the file (see :func:`tasks.results.auth.infer_scan_type`).
    Raises :class:`tasks.results.parser.NessusParseError`.
    """
    reader = NessusReader(path)
    analyzer = ReportAnalyzer(scan_type=scan_type, scan_type_source="argument" if scan_type else "")
    for block in reader:
        analyzer.add(block)
    return analyzer.finish(reader.policy, parse_warnings=reader.warnings), reader
