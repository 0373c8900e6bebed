"""Authentication verdicts from the whole credential-plugin family (DESIGN §6), not from 19506 alone.

Each finding of the family becomes a *signal* with its evidence (plugin id, port, the relevant output
line). A host's signals (merged over every block of a repeated host) give its verdict and cause; the
hosts' verdicts give the task's. docs/results.md has the table.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from tasks.models.results import AuthCause
from tasks.models.states import AuthStatus, ScanType
from tasks.results.parser import Finding, ReportHostBlock

# Signal kinds.
SUCCESS = "success"
REJECTED = "rejected"
CONNECTIVITY = "connectivity"
PRIVILEGE = "privilege"
NO_CREDENTIALS = "no_credentials"
LOCAL_FAILED = "local_failed"
NOT_RUN = "not_run"
NOT_SUPPORTED = "not_supported"
DEAD = "dead"
LOCAL_SUCCESS = "local_success"  # success of the scanner's own local checks (scanning itself): no proof
SUCCESS_KINDS = frozenset({SUCCESS, LOCAL_SUCCESS})

SCAN_INFO = 19506
SUCCESS_PLUGINS = {117887: "patch assessment available", 141118: "valid credentials", 110095: "no credential issues"}
LOCAL_ENUM_PLUGINS = (97993, 12634)  # "Local checks have been enabled for this host."
REJECTED_PLUGIN = 104410
LOCAL_FAILED_PLUGIN = 21745
PRIVILEGE_PLUGINS = (110385, 102094)
NO_CREDENTIALS_PLUGIN = 110723
PATCH_NOT_AVAILABLE = 117886  # its reason says what it means: unsupported OS, or a failed/missing login
NOT_SUPPORTED_PLUGINS = (PATCH_NOT_AVAILABLE, 110695)
PING_PLUGIN = 10180
FAMILY = frozenset(
    {SCAN_INFO, *SUCCESS_PLUGINS, *LOCAL_ENUM_PLUGINS, REJECTED_PLUGIN, LOCAL_FAILED_PLUGIN, *PRIVILEGE_PLUGINS,
     NO_CREDENTIALS_PLUGIN, *NOT_SUPPORTED_PLUGINS, PING_PLUGIN}
)

CONNECTIVITY_RE = re.compile(
    r"socket|connection (?:refused|reset|timed out|closed)|timed out|timeout|could not connect|unable to connect|"
    r"failed to connect|no route to host|network is unreachable|host unreachable|not reachable",
    re.I,
)
# "Failed to authenticate using the supplied password" names the credentials even beside socket errors.
STRONG_REJECTED_RE = re.compile(
    r"failed to authenticate|authentication failed|invalid credential|login failed|unable to log ?in|"
    r"could not log ?in|not able to log ?in|failed to (?:parse|load)[^\n]*key",
    re.I,
)
REJECTED_RE = re.compile(
    r"failed to authenticate|authentication fail|unable to log ?in|login fail|invalid credential|permission denied|"
    r"access denied|credential sets? (?:succeeded|failed)|failed to (?:parse|load)[^\n]*key|passphrase|"
    r"not able to log ?in|could not log ?in",
    re.I,
)
PRIVILEGE_RE = re.compile(r"privilege|sudo|escalat|insufficient|not root", re.I)
CREDENTIALED_RE = re.compile(r"^\s*Credentialed\s+checks\s*:\s*(.*?)\s*$", re.M | re.I)
LOCAL_ENABLED_RE = re.compile(r"^.*local (?:security )?checks have been enabled.*$", re.M | re.I)
DEAD_RE = re.compile(r"considered as dead", re.I)
_NO_CREDENTIALS_RE = re.compile(r"no credentials", re.I)
_NOT_SUPPORTED_RE = re.compile(r"not supported|not available", re.I)
_UNSUPPORTED_OS_RE = re.compile(
    r"not (?:currently )?supported|unsupported|not a supported|no local checks? (?:are )?available", re.I
)
_NOT_PROVIDED_RE = re.compile(r"credentials? (?:were |was )?not provided|no credentials", re.I)
_NO_ANSWER_RE = re.compile(r"did not respond|not respond|no response|did not answer", re.I)
# The scanner running its checks on itself: 19506 "yes (on the localhost)", 141118 "commands on localhost",
# 117887 "Protocol : LOCAL", 110095 "execute commands locally".
LOCAL_RE = re.compile(r"\blocalhost\b|^\s*protocol\s*:\s*local\s*$|\bcommands locally\b", re.I | re.M)
SCANNER_IP_RE = re.compile(r"^\s*Scanner\s+IP\s*:\s*(\S+)\s*$", re.M | re.I)
SCAN_TYPE_RE = re.compile(r"^\s*Scan\s+type\s*:\s*(.*?)\s*$", re.M | re.I)
_MESSAGE_RE = re.compile(r"^\s*Message\s*:\s*(.*)$", re.I)
_MESSAGE_VALUE_RE = re.compile(r"^\s*Message\s*:\s*\S", re.I)

# Order in which failure causes explain a host (first present wins).
_FAILURE_ORDER = (
    (REJECTED, AuthCause.CREDENTIALS_REJECTED),
    (CONNECTIVITY, AuthCause.CONNECTIVITY),
    (LOCAL_FAILED, AuthCause.LOCAL_CHECKS_FAILED),
)
MAX_EVIDENCE = 8
MAX_LINE = 300


@dataclass(frozen=True)
class Signal:
    kind: str
    plugin_id: int | None
    port: int
    line: str

    def as_evidence(self) -> dict[str, object]:
        return {"plugin_id": self.plugin_id, "port": self.port, "line": self.line}

    def as_dict(self) -> dict[str, object]:
        return {"kind": self.kind, **self.as_evidence()}

    @classmethod
    def from_dict(cls, raw: dict) -> Signal:
        return cls(raw["kind"], raw.get("plugin_id"), int(raw.get("port") or 0), str(raw.get("line", "")))


@dataclass(frozen=True)
class HostVerdict:
    verdict: str
    cause: str
    evidence: list[dict] = field(default_factory=list)
    # For a ``local_only`` host: the verdict its local checks would give. A scan of only the scanner
    # itself keeps that verdict as the task's (there is no remote host to judge the credentials by).
    self_verdict: str = ""

    def as_dict(self) -> dict[str, object]:
        return {"verdict": self.verdict, "cause": self.cause, "evidence": self.evidence}


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_LINE else text[: MAX_LINE - 1] + "…"


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def relevant_line(text: str, pattern: re.Pattern[str] | None = None) -> str:
    """The output line that explains the plugin: a line matching ``pattern``, a ``Message :``, or the first."""
    lines = _lines(text)
    if not lines:
        return ""
    if pattern is not None:
        for line in lines:
            if pattern.search(line):
                message = _MESSAGE_RE.match(line)
                return _clip(message.group(1) if message and message.group(1).strip() else line)
    for index, line in enumerate(lines):
        match = _MESSAGE_RE.match(line)
        if match:
            value = match.group(1).strip() or (lines[index + 1] if index + 1 < len(lines) else "")
            if value:
                return _clip(value)
    return _clip(lines[0])


def _messages(text: str) -> list[str]:
    """The values of every ``Message :`` of a plugin's issue list (the value may start on the next line)."""
    lines = _lines(text)
    found = []
    for index, line in enumerate(lines):
        match = _MESSAGE_RE.match(line)
        if match:
            value = match.group(1).strip() or (lines[index + 1] if index + 1 < len(lines) else "")
            if value:
                found.append(value)
    return found


def finding_text(finding: Finding) -> str:
    """plugin_output, or the description for old exports (Nessus 4 put 19506's text there)."""
    return finding.plugin_output or finding.text("description")


def classify(finding: Finding) -> list[Signal]:
    """The authentication signals one finding carries (none for plugins outside the family)."""
    pid = finding.plugin_id
    if pid not in FAMILY:
        return []
    text = finding_text(finding)
    port = finding.port

    def sig(kind: str, line: str) -> Signal:
        return Signal(kind, pid, port, line)

    if pid == SCAN_INFO:
        match = CREDENTIALED_RE.search(text)
        if not match:
            return []
        value = match.group(1).lower()
        line = _clip(match.group(0).strip())
        if value.startswith("yes"):
            return [sig(LOCAL_SUCCESS if LOCAL_RE.search(value) else SUCCESS, line)]
        return [sig(NOT_RUN, line)] if value else []
    if pid in SUCCESS_PLUGINS:
        kind = LOCAL_SUCCESS if LOCAL_RE.search(text) else SUCCESS
        return [sig(kind, relevant_line(text, LOCAL_RE if kind == LOCAL_SUCCESS else None) or finding.plugin_name)]
    if pid in LOCAL_ENUM_PLUGINS:
        match = LOCAL_ENABLED_RE.search(text)
        if not match:
            return []
        return [sig(LOCAL_SUCCESS if LOCAL_RE.search(text) else SUCCESS, _clip(match.group(0)))]
    if pid == REJECTED_PLUGIN:  # the first "Message :" of the failure details says why
        return [sig(REJECTED, relevant_line(text, _MESSAGE_VALUE_RE) or relevant_line(text, REJECTED_RE))]
    if pid == LOCAL_FAILED_PLUGIN:
        for kind, pattern in ((REJECTED, STRONG_REJECTED_RE), (CONNECTIVITY, CONNECTIVITY_RE), (REJECTED, REJECTED_RE),
                              (PRIVILEGE, PRIVILEGE_RE)):
            if pattern.search(text):
                return [sig(kind, relevant_line(text, pattern))]
        return [sig(LOCAL_FAILED, relevant_line(text))]
    if pid in PRIVILEGE_PLUGINS:
        return [sig(PRIVILEGE, relevant_line(text, PRIVILEGE_RE) or finding.plugin_name)]
    if pid == NO_CREDENTIALS_PLUGIN:
        return [sig(NO_CREDENTIALS, relevant_line(text, _NO_CREDENTIALS_RE))]
    if pid == PATCH_NOT_AVAILABLE:  # read the reason: only an unsupported OS makes it "not applicable"
        reasons = _messages(text) or _lines(text)
        for kind, pattern in ((NO_CREDENTIALS, _NOT_PROVIDED_RE), (REJECTED, STRONG_REJECTED_RE),
                              (CONNECTIVITY, _NO_ANSWER_RE), (CONNECTIVITY, CONNECTIVITY_RE),
                              (REJECTED, REJECTED_RE), (NOT_SUPPORTED, _UNSUPPORTED_OS_RE)):
            reason = next((line for line in reasons if pattern.search(line)), None)
            if reason is not None:
                return [sig(kind, _clip(reason))]
        return [sig(NOT_RUN, relevant_line(text, _NOT_SUPPORTED_RE) or finding.plugin_name)]
    if pid in NOT_SUPPORTED_PLUGINS:
        return [sig(NOT_SUPPORTED, relevant_line(text, _NOT_SUPPORTED_RE))]
    if pid == PING_PLUGIN and DEAD_RE.search(text):
        return [sig(DEAD, relevant_line(text, DEAD_RE))]
    return []


def parse_scan_info(text: str) -> dict[str, str]:
    """``Key : value`` lines of plugin 19506 as a dict with snake_case keys (``plugin_feed_version``…)."""
    info: dict[str, str] = {}
    for line in text.splitlines():
        if ":" not in line:
            continue
        key, _, value = line.partition(":")
        key = re.sub(r"[^a-z0-9]+", "_", key.strip().lower()).strip("_")
        if key and value.strip() and key not in info:
            info[key] = value.strip()
    return info


@dataclass
class HostAuthState:
    """Everything the verdict of one host needs; small, so one per host can stay in memory."""

    name: str
    ip: str = ""
    credentialed_property: bool | None = None
    signals: list[Signal] = field(default_factory=list)
    scanner_ip: str = ""  # 19506 "Scanner IP"
    scan_type_text: str = ""  # 19506 "Scan type" ("Normal", "Unix Agent"…)

    def add_block(self, block: ReportHostBlock) -> None:
        props = block.properties
        ip = props.get("host-ip")
        if isinstance(ip, str) and ip:
            self.ip = ip
        cred = props.get("Credentialed_Scan")
        if isinstance(cred, str) and cred.strip():
            self.credentialed_property = cred.strip().lower() == "true"
        for finding in block.findings:
            if finding.plugin_id == SCAN_INFO:
                text = finding_text(finding)
                scanner = SCANNER_IP_RE.search(text)
                if scanner:
                    self.scanner_ip = scanner.group(1)
                kind = SCAN_TYPE_RE.search(text)
                if kind:
                    self.scan_type_text = kind.group(1)
            for signal in classify(finding):
                self.add_signal(signal)

    @property
    def agent(self) -> bool:
        """An agent scan: the agent's local checks are real coverage of the host."""
        return "agent" in self.scan_type_text.lower()

    @property
    def is_scanner(self) -> bool:
        """The host is the scanner itself (its address is 19506's "Scanner IP")."""
        return bool(self.scanner_ip) and self.scanner_ip in {self.ip, self.name}

    def add_signal(self, signal: Signal) -> None:
        if signal not in self.signals:
            self.signals.append(signal)

    def kinds(self) -> set[str]:
        return {s.kind for s in self.signals}

    @property
    def answered(self) -> bool:
        """False for a host reported only as dead (plugin 10180 "considered as dead")."""
        return not (self.kinds() <= {DEAD, NOT_RUN} and DEAD in self.kinds())

    @property
    def shows_success(self) -> bool:
        return bool(SUCCESS_KINDS & self.kinds()) or bool(self.credentialed_property)


def _evidence(signals: list[Signal], first: tuple[str, ...]) -> list[dict]:
    """Evidence for the verdict first (in the order of ``first``), then the rest in file order."""
    rank = {kind: index for index, kind in enumerate(first)}
    ordered = sorted(signals, key=lambda s: rank.get(s.kind, len(rank)))
    return [s.as_evidence() for s in ordered[:MAX_EVIDENCE]]


def host_verdict(state: HostAuthState, scan_type: str, *, agent: bool = False) -> HostVerdict:
    """Verdict and cause of one host for a scan of ``scan_type``.

    A host whose only success is the scanner's own local checks (it scanned itself) is ``local_only``:
    that proves nothing about the supplied credentials. Agent scans (``agent`` or 19506 "Scan type :
    … Agent") are real local coverage and count as success.
    """
    if agent or state.agent or not state.answered:
        return _host_verdict(state, scan_type, local_counts=True)
    remote = SUCCESS in state.kinds() and not state.is_scanner
    local = LOCAL_SUCCESS in state.kinds() or (
        state.is_scanner and (SUCCESS in state.kinds() or bool(state.credentialed_property))
    )
    if remote or not local:
        return _host_verdict(state, scan_type, local_counts=False)
    as_self = _host_verdict(state, scan_type, local_counts=True)
    first = (LOCAL_SUCCESS, SUCCESS)
    evidence = _evidence(list(state.signals), first)
    if state.is_scanner:
        evidence = [{"plugin_id": SCAN_INFO, "port": 0, "line": f"Scanner IP : {state.scanner_ip}"}, *evidence]
    return HostVerdict(str(AuthStatus.LOCAL_ONLY), str(AuthCause.SCANNER_ITSELF), evidence[:MAX_EVIDENCE],
                       self_verdict=as_self.verdict)


def _host_verdict(state: HostAuthState, scan_type: str, *, local_counts: bool) -> HostVerdict:
    kinds = state.kinds()
    signals = list(state.signals)
    if local_counts and LOCAL_SUCCESS in kinds:
        kinds = (kinds - {LOCAL_SUCCESS}) | {SUCCESS}
        signals = [Signal(SUCCESS, s.plugin_id, s.port, s.line) if s.kind == LOCAL_SUCCESS else s for s in signals]
    property_success = bool(state.credentialed_property) and (local_counts or not state.is_scanner)
    if property_success and SUCCESS not in kinds:
        signals.append(Signal(SUCCESS, None, 0, "HostProperties Credentialed_Scan: true"))
    success = SUCCESS in kinds or property_success
    failure = next(((kind, cause) for kind, cause in _FAILURE_ORDER if kind in kinds), None)

    def verdict(status: str, cause: str, *first: str) -> HostVerdict:
        return HostVerdict(str(status), str(cause), _evidence(signals, first))

    if not state.answered:
        return verdict(AuthStatus.NOT_APPLICABLE, AuthCause.HOST_UNREACHABLE, DEAD)
    if scan_type == ScanType.UNTRUSTED:
        if success:  # e.g. the scanner scanning itself runs local checks without credentials
            return verdict(AuthStatus.SUCCESS, AuthCause.NONE, SUCCESS)
        if NO_CREDENTIALS in kinds:
            return verdict(AuthStatus.NOT_APPLICABLE, AuthCause.NO_CREDENTIALS, NO_CREDENTIALS)
        return verdict(AuthStatus.NOT_APPLICABLE, AuthCause.UNTRUSTED_SCAN, NOT_RUN)
    if success and failure:
        return verdict(AuthStatus.PARTIAL, failure[1], failure[0], SUCCESS)
    if PRIVILEGE in kinds:
        return verdict(AuthStatus.PARTIAL, AuthCause.INSUFFICIENT_PRIVILEGE, PRIVILEGE, SUCCESS)
    if success:
        return verdict(AuthStatus.SUCCESS, AuthCause.NONE, SUCCESS)
    if failure:
        return verdict(AuthStatus.FAILED, failure[1], failure[0])
    if NO_CREDENTIALS in kinds:
        return verdict(AuthStatus.FAILED, AuthCause.NO_CREDENTIALS, NO_CREDENTIALS)
    if NOT_SUPPORTED in kinds:
        return verdict(AuthStatus.NOT_APPLICABLE, AuthCause.NOT_SUPPORTED, NOT_SUPPORTED)
    if NOT_RUN in kinds:
        return verdict(AuthStatus.FAILED, AuthCause.LOCAL_CHECKS_NOT_RUN, NOT_RUN)
    return verdict(AuthStatus.UNKNOWN, AuthCause.NO_EVIDENCE)


def task_verdict(host_verdicts: list[str], scan_type: str) -> str:
    """The task's verdict from its hosts' verdicts.

    Untrusted scans: ``not_applicable``. Otherwise, over hosts whose verdict is not ``not_applicable``:
    all success → success; none success/partial and at least one failed → failed; none known → unknown;
    anything else → partial. No such host → not_applicable if some host was, else unknown.
    """
    if scan_type == ScanType.UNTRUSTED:
        return str(AuthStatus.NOT_APPLICABLE)
    counts = Counter(host_verdicts)
    relevant = sum(n for v, n in counts.items() if v != AuthStatus.NOT_APPLICABLE)
    if relevant == 0:
        return str(AuthStatus.NOT_APPLICABLE if counts[AuthStatus.NOT_APPLICABLE] else AuthStatus.UNKNOWN)
    if counts[AuthStatus.SUCCESS] == relevant:
        return str(AuthStatus.SUCCESS)
    if counts[AuthStatus.SUCCESS] == 0 and counts[AuthStatus.PARTIAL] == 0:
        return str(AuthStatus.FAILED if counts[AuthStatus.FAILED] else AuthStatus.UNKNOWN)
    return str(AuthStatus.PARTIAL)


def infer_scan_type(
    *, credential_kinds: list[str], escalation: str, agent_scan: bool, states: list[HostAuthState]
) -> tuple[str, str]:
    """Guess the scan type of an export that comes without one (``validate_nessus`` without ``--scan-type``)."""
    if credential_kinds:
        kind = ScanType.AUTHENTICATED_PRIVILEGED if escalation else ScanType.AUTHENTICATED
        return str(kind), f"the policy carries host credentials ({', '.join(credential_kinds)})"
    if agent_scan:
        return str(ScanType.AUTHENTICATED), "agent scan (agents run local checks without credentials)"
    answered = [s for s in states if s.answered]
    if answered and all(s.shows_success for s in answered):
        return str(ScanType.AUTHENTICATED), "every host reports credentialed checks"
    return str(ScanType.UNTRUSTED), "the policy carries no host credentials"
