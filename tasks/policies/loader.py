"""Client policies as code: ``manage.py load_client_policies FILE [--dry-run]`` (docs/security.md).

```yaml
clients:
  - token: mcp-agent            # the API token's name ...
    user: agent                 # ... and its user (token names are unique per user)
    pools: [dmz]                # omitted = every pool ([] is refused: ambiguous)
    targets: ["192.0.2.0/25"]   # allow-list inside the pool's scope; omitted = the pool's scope alone ([] refused)
    scan_types: [untrusted]     # omitted = every type ([] refused)
    max_targets_per_scan: 16    # omitted or null = no limit (each max_*)
    max_scans_per_day: 20
    max_addresses_per_day: 4096
    max_concurrent_scans: 2
    approval: outside           # never (default) | always | outside
    pre_approved_targets: ["192.0.2.0/28"]   # omitted or [] = nothing pre-approved
    approvers: "secops on-call"
    notes: ""
```

Each entry creates or replaces the whole policy of its token (a key left out gets its default: no
restriction). A list key is an actual YAML list or left out: an empty string, a null (``targets:``), false, a
number, a mapping or a bare string is an error, and so is an empty list where it would mean "no restriction"
(pools, targets, scan_types) — it reads as "nothing", and a policy must never widen by a typo. Policies of
tokens the file does not list are left alone. The file is read with the same reader as the scanners YAML
(line numbers, anchors and aliases refused, no environment interpolation); every problem is reported with its
line and key, and nothing is changed unless the whole file is valid (one transaction).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from pools.models import Pool
from scanners.config.source import ConfigError, Document, Problem, parse
from tasks.models import ApiToken, ApprovalRule, ClientPolicy

LIST_KEYS = {"pools": "pools", "targets": "target_allow_list", "scan_types": "scan_types",
             "pre_approved_targets": "pre_approved_targets"}
LIMIT_KEYS = ("max_targets_per_scan", "max_scans_per_day", "max_addresses_per_day", "max_concurrent_scans")
TEXT_KEYS = ("approvers", "notes")
KEYS = ("token", "user", "approval", *LIST_KEYS, *LIMIT_KEYS, *TEXT_KEYS)


# key → (what its list holds, an example, what leaving the key out means). Only an actual YAML list, or the key
# left out, is a value: an empty string, a null, false, 0 or a mapping used to load as "no restriction".
LIST_RULES = {
    "pools": ("pool names", "[dmz]", "for every pool"),
    "targets": ("CIDRs, addresses, host names or *.domain patterns", '["192.0.2.0/28"]',
                "for no restriction (the pool's scope alone)"),
    "scan_types": ("scan types", "[untrusted]", "for every type"),
    "pre_approved_targets": ("CIDRs, addresses, host names or *.domain patterns", '["192.0.2.0/28"]',
                             "(or give []) when nothing is pre-approved"),
}
# An empty list where it would mean "no restriction" reads as "nothing": refused as ambiguous. (An empty
# pre_approved_targets means what it says: nothing is pre-approved, every scan waits with approval 'outside'.)
EMPTY_MEANS_EVERYTHING = {"pools": "every pool", "targets": "the pool's whole scope", "scan_types": "every type"}
_NONE = object()


def _kind(value: object) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return "an empty string" if not value.strip() else "a string"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def list_problem(key: str, value: object) -> str | None:
    """What is wrong with the YAML value of the list key ``key`` (present in the entry), or None."""
    what, example, absent = LIST_RULES[key]
    rule = f"{key} must be a list of {what}, e.g. {example}; leave the key out {absent}"
    if isinstance(value, list):
        wrong = next((v for v in value if not isinstance(v, str)), _NONE)
        if wrong is not _NONE:
            kind = "a number" if isinstance(wrong, int | float) and not isinstance(wrong, bool) else _kind(wrong)
            return f"{rule}; got a list with {kind}: every item is one quoted string"
        if not value and key in EMPTY_MEANS_EVERYTHING:
            return (f"{key}: [] is ambiguous: it would mean no restriction ({EMPTY_MEANS_EVERYTHING[key]}), not "
                    f"'nothing': leave the key out {absent}, or list what is allowed, e.g. {example}; to allow "
                    "nothing, revoke the token")
        return None
    got = _kind(value)
    if isinstance(value, str) and value.strip() and len(value) <= 200:
        got += f": write it as a list, {json.dumps([value.strip()], ensure_ascii=False)}"
    return f"{rule}; got {got}"


@dataclass
class Plan:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [f"create policy of {n}" for n in self.created] + [f"update policy of {n}" for n in self.updated]


@dataclass
class _Entry:
    path: tuple
    token: ApiToken
    values: dict[str, Any]
    pools: list[Pool]


def _entry(doc: Document, raw: Any, path: tuple, seen: dict[int, int]) -> _Entry | None:
    if not isinstance(raw, dict):
        doc.problem(path, "expected a mapping (token: …, user: …, and the policy's settings)")
        return None
    before = len(doc.problems)
    for key in raw:
        if key not in KEYS:
            doc.problem((*path, key), f"unknown key (allowed: {', '.join(KEYS)})")
    for key in ("token", "user"):
        if not isinstance(raw.get(key), str) or not raw.get(key, "").strip():
            doc.problem((*path, key) if key in raw else path, f"'{key}' is required: the API token's "
                        + ("name" if key == "token" else "user name"))
    values: dict[str, Any] = {}
    client = raw["token"].strip() if isinstance(raw.get("token"), str) else f"#{path[-1] + 1}"
    for key, attribute in LIST_KEYS.items():
        value = raw.get(key, [])
        problem = list_problem(key, value) if key in raw else None
        if problem:
            doc.problem((*path, key), f"client {client!r}: {problem}")
            continue
        values[attribute] = [v.strip() for v in value]
    for key in LIMIT_KEYS:
        value = raw.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            doc.problem((*path, key), f"expected a whole number ≥ 1 (or null for no limit), not {value!r}")
            continue
        values[key] = value
    approval = raw.get("approval", ApprovalRule.NEVER)
    if approval not in ApprovalRule.values:
        doc.problem((*path, "approval"), f"{approval!r} is not an approval rule; use {', '.join(ApprovalRule.values)}")
    values["approval"] = approval
    for key in TEXT_KEYS:
        value = raw.get(key, "")
        if not isinstance(value, str):
            doc.problem((*path, key), "expected a string")
        values[key] = value if isinstance(value, str) else ""
    if len(doc.problems) > before:
        return None
    token = ApiToken.objects.filter(name=raw["token"].strip(), user__username=raw["user"].strip()).first()
    if token is None:
        doc.problem((*path, "token"), f"no API token {raw['token']!r} of user {raw['user']!r}: create it first "
                    "(manage.py create_api_token USER --name NAME)")
        return None
    if token.pk in seen:
        doc.problem((*path, "token"), f"this token's policy is already given on line {seen[token.pk]}")
        return None
    seen[token.pk] = doc.line(path) or 0
    names = values.pop("pools")
    pools = list(Pool.objects.filter(name__in=names))
    missing = sorted(set(names) - {p.name for p in pools})
    if missing:
        doc.problem((*path, "pools"), f"no pool named {', '.join(missing)}")
        return None
    candidate = ClientPolicy(token=token, **values)
    keys = {attribute: key for key, attribute in LIST_KEYS.items()}
    problems: dict[str, list[str]] = {}
    # The columns' own limits (a number the integer column cannot hold, approvers longer than 200 characters):
    # named here, not a traceback from the database at the write.
    for check in (lambda: candidate.clean_fields(exclude=["token", *keys]), candidate.clean):
        try:
            check()
        except ValidationError as exc:
            for attribute, messages in exc.message_dict.items():
                problems.setdefault(attribute, []).extend(messages)
    for attribute, messages in problems.items():
        doc.problem((*path, keys.get(attribute, attribute)), "; ".join(messages))
    if problems:
        return None
    return _Entry(path, token, values, pools)


def load_policies(text: str, source: str = "<policies>", *, dry_run: bool = False) -> Plan:
    """Validate the whole file, then apply it in one transaction; raises ConfigError (nothing changed)."""
    doc = parse(text, source, {})
    data = doc.data
    if not isinstance(data, dict) or "clients" not in data:
        raise ConfigError(source, [Problem("expected a top-level 'clients:' list", 1)])
    for key in data:
        if key != "clients":
            doc.problem((key,), "unknown top-level key (this file holds 'clients:' only; pools and scanners are "
                        "loaded by load_scanners)")
    if not isinstance(data["clients"], list):
        doc.problem(("clients",), "expected a list of client policies")
        raise ConfigError(source, doc.problems)
    seen: dict[int, int] = {}
    entries = [_entry(doc, raw, ("clients", i), seen) for i, raw in enumerate(data["clients"])]
    if doc.problems:
        raise ConfigError(source, doc.problems)
    plan = Plan()
    with transaction.atomic():
        for entry in entries:
            assert entry is not None
            label = f"{entry.token.name} ({entry.token.user.get_username()})"
            policy, created = ClientPolicy.objects.update_or_create(token=entry.token, defaults=entry.values)
            policy.pools.set(entry.pools)
            (plan.created if created else plan.updated).append(label)
        if dry_run:
            transaction.set_rollback(True)
    return plan


def read_policies(path: str | Path, *, dry_run: bool = False) -> Plan:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), [Problem(f"cannot read the file: {exc}")]) from exc
    return load_policies(text, str(path), dry_run=dry_run)
