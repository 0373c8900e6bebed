"""Client policies as code: ``manage.py load_client_policies FILE [--dry-run]`` (docs/security.md).

```yaml
clients:
  - token: mcp-agent            # the API token's name ...
    user: agent                 # ... and its user (token names are unique per user)
    pools: [dmz]                # omitted or [] = every pool
    targets: ["192.0.2.0/25"]   # allow-list inside the pool's scope; omitted or [] = the pool's scope alone
    scan_types: [untrusted]     # omitted or [] = every type
    max_targets_per_scan: 16    # omitted or null = no limit (each max_*)
    max_scans_per_day: 20
    max_addresses_per_day: 4096
    max_concurrent_scans: 2
    approval: outside           # never (default) | always | outside
    pre_approved_targets: ["192.0.2.0/28"]
    approvers: "secops on-call"
    notes: ""
```

Each entry creates or replaces the whole policy of its token (a key left out gets its default: no
restriction). Policies of tokens the file does not list are left alone. The file is read with the same
reader as the scanners YAML (line numbers, anchors and aliases refused, no environment interpolation);
every problem is reported with its line and key, and nothing is changed unless the whole file is valid
(one transaction).
"""

from __future__ import annotations

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
    for key, attribute in LIST_KEYS.items():
        value = raw.get(key) or []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            doc.problem((*path, key), "expected a list of strings")
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
    try:
        candidate.clean()
    except ValidationError as exc:
        keys = {attribute: key for key, attribute in LIST_KEYS.items()}
        for attribute, messages in exc.message_dict.items():
            doc.problem((*path, keys.get(attribute, attribute)), "; ".join(messages))
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
