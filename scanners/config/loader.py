"""Apply a scanner configuration to the database: plan (a diff), then upsert in one transaction.

The database is the live configuration: workers read pools and scanners from it at every
dispatch, so what this writes (like an admin edit) takes effect at the next dispatch.
Only configuration columns are written (``update_fields``), never the run-time ones that
workers maintain (slots in use, health, circuit breaker). Scanner updates go through
``scanners.services.update_scanner``, the admin's rule: a connection change (URL, TLS settings)
clears the stored secrets the entry does not give again, and is recorded as a scanner event.
Every scanner the file lists ends up with its connection confirmed for authenticated scans ("confirmed by
load_scanners <file>"): the operator running it has the shell and every secret (four eyes, docs/security.md);
an unconfirmed scanner the file lists unchanged is planned as an update of ``connection_confirmed``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from django.core.exceptions import ValidationError
from django.db import transaction

from pools import services as pool_services
from pools.models import Pool
from pools.services import record_scope_changes, snapshot
from scanners.config.schema import PoolSpec, ScannerConfig, ScannerSpec, validate
from scanners.config.source import ConfigError, Problem, parse
from scanners.models import Scanner
from scanners.services import (
    SECRET_FIELDS,
    confirm_connection,
    connection_changes,
    record_created,
    secrets_to_clear,
    update_scanner,
)

CREATE, UPDATE, UNCHANGED, DISABLE = "create", "update", "unchanged", "disable"
CONFIRMED = "connection_confirmed"  # a planned field: the load confirms an unconfirmed scanner's connection


@dataclass(frozen=True)
class Change:
    kind: str  # "pool" | "scanner"
    name: str
    action: str  # create | update | unchanged | disable
    fields: tuple[str, ...] = ()
    pool: str = ""

    def describe(self) -> str:
        what = f"{self.kind} {self.name}" + (f" (pool {self.pool})" if self.kind == "scanner" and self.pool else "")
        detail = f": {', '.join(self.fields)}" if self.fields else ""
        return f"{self.action:<9} {what}{detail}"


@dataclass
class Plan:
    changes: list[Change] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def count(self, action: str) -> int:
        return sum(1 for change in self.changes if change.action == action)

    @property
    def has_changes(self) -> bool:
        return any(change.action != UNCHANGED for change in self.changes)

    def summary(self) -> str:
        counts = ", ".join(f"{self.count(a)} {a}" for a in (CREATE, UPDATE, DISABLE, UNCHANGED))
        return f"{len(self.changes)} objects: {counts}"


def read_config(path: str | Path, env: Mapping[str, str] | None = None) -> ScannerConfig:
    """Read and validate a configuration file; :class:`ConfigError` names the file, line and key."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(source, [Problem(f"cannot read the file: {exc.strerror or exc}")]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(source, [Problem("the file is not UTF-8 text")]) from exc
    return parse_config(text, source, env)


def parse_config(text: str, source: str = "<config>", env: Mapping[str, str] | None = None) -> ScannerConfig:
    doc = parse(text, source, os.environ if env is None else env)
    return validate(doc, source)


def _diff(obj: object, wanted: Mapping[str, object]) -> list[str]:
    changed = []
    for name, value in wanted.items():
        current = getattr(obj, name)
        if isinstance(value, tuple):
            value = list(value)
        if (str(current) if name in ScannerSpec.SECRET_FIELDS else current) != value:
            changed.append(name)
    return changed


def _pool_values(spec: PoolSpec) -> dict[str, object]:
    return {name: (list(v) if isinstance(v := getattr(spec, name), tuple) else v) for name in PoolSpec.CONFIG_FIELDS}


def _scanner_values(spec: ScannerSpec) -> dict[str, object]:
    return {name: getattr(spec, name) for name in ScannerSpec.CONFIG_FIELDS}


def _prune_applies(prune: bool | frozenset[str], pool_name: str) -> bool:
    return prune is True or (isinstance(prune, frozenset) and pool_name in prune)


def build_plan(config: ScannerConfig, *, prune: bool | frozenset[str] = False) -> Plan:
    """Compare ``config`` with the database. ``prune``: True (all), or the pool names whose unlisted scanners
    are disabled. Raises :class:`ConfigError` for conflicts with the database."""
    plan = Plan(warnings=list(config.warnings))
    pools = {pool.name: pool for pool in Pool.objects.all()}
    scanners = {scanner.name: scanner for scanner in Scanner.objects.select_related("pool")}
    problems: list[Problem] = []
    listed_scanners: set[str] = set()

    for spec in config.pools:
        pool = pools.get(spec.name)
        if pool is None:
            plan.changes.append(Change("pool", spec.name, CREATE))
        else:
            changed = _diff(pool, _pool_values(spec))
            plan.changes.append(Change("pool", spec.name, UPDATE if changed else UNCHANGED, tuple(changed)))
        for scanner_spec in spec.scanners:
            listed_scanners.add(scanner_spec.name)
            scanner = scanners.get(scanner_spec.name)
            if scanner is None:
                plan.changes.append(Change("scanner", scanner_spec.name, CREATE, pool=spec.name))
                continue
            if scanner.pool.name != spec.name:
                problems.append(
                    Problem(
                        f"scanner {scanner_spec.name!r} already belongs to pool {scanner.pool.name!r}, not "
                        f"{spec.name!r}: scanner names are unique across pools; rename it here, or move it "
                        "in the admin first",
                        scanner_spec.line,
                    )
                )
                continue
            values = _scanner_values(scanner_spec)
            changed = _diff(scanner, values)
            if not scanner.connection_confirmed:
                changed.append(CONFIRMED)
            connection = connection_changes(scanner, values)
            cleared = secrets_to_clear(scanner, connection, [name for name in SECRET_FIELDS if values[name]])
            if cleared:
                plan.warnings.append(
                    f"{config.source}:{scanner_spec.line}: scanner {scanner_spec.name!r}: its {', '.join(connection)} "
                    f"changes, so the stored {', '.join(cleared)} (not given in this entry) are cleared: stored "
                    "secrets are never sent to a new connection"
                )
            plan.changes.append(
                Change("scanner", scanner_spec.name, UPDATE if changed else UNCHANGED, tuple(changed), pool=spec.name)
            )
    if problems:
        raise ConfigError(config.source, problems)

    if prune:
        listed_pools = {spec.name for spec in config.pools}
        for name, pool in sorted(pools.items()):
            if name not in listed_pools and prune is True and pool.enabled:
                plan.changes.append(Change("pool", name, DISABLE, ("enabled",)))
        for name, scanner in sorted(scanners.items()):
            if name not in listed_scanners and scanner.enabled and _prune_applies(prune, scanner.pool.name):
                plan.changes.append(Change("scanner", name, DISABLE, ("enabled",), pool=scanner.pool.name))
    return plan


def _clean(obj: Pool | Scanner, source: str, line: int | None) -> None:
    """Model validation as the last line of defence (the schema checks the same rules first)."""
    try:
        obj.full_clean()
    except ValidationError as exc:
        messages = [f"{key}: {'; '.join(errors)}" for key, errors in exc.message_dict.items()]
        raise ConfigError(source, [Problem(message, line) for message in messages]) from exc


def _apply(config: ScannerConfig, plan: Plan) -> None:
    actions = {(change.kind, change.name): change for change in plan.changes}
    for spec in config.pools:
        change = actions[("pool", spec.name)]
        if change.action == CREATE:
            pool = Pool(name=spec.name, **_pool_values(spec))
            _clean(pool, config.source, spec.line)
            pool.save()
            pool_services.record_created(pool, actor=f"load_scanners {config.source}")
        else:
            pool = Pool.objects.get(name=spec.name)
            if change.action == UPDATE:
                before = snapshot(pool)
                for name in change.fields:
                    setattr(pool, name, _pool_values(spec)[name])
                pool.save(update_fields=[*change.fields, "updated_at"])
                record_scope_changes(pool, before, actor=f"load_scanners {config.source}")
        for scanner_spec in spec.scanners:
            change = actions[("scanner", scanner_spec.name)]
            values = _scanner_values(scanner_spec)
            actor = f"load_scanners {config.source}"
            if change.action == CREATE:
                scanner = Scanner(pool=pool, name=scanner_spec.name, **values)
                _clean(scanner, config.source, scanner_spec.line)
                scanner.save()
                record_created(scanner, actor)
                confirm_connection(scanner.pk, actor=actor)
            elif change.action == UPDATE:
                scanner_id = Scanner.objects.values_list("pk", flat=True).get(name=scanner_spec.name)
                given = [name for name in SECRET_FIELDS if values[name]]  # listed again in this entry
                try:
                    update_scanner(scanner_id, {name: values[name] for name in change.fields if name != CONFIRMED},
                                   given_secrets=given, actor=actor)  # fmt: skip
                except ValidationError as exc:
                    messages = [f"{key}: {'; '.join(errors)}" for key, errors in exc.message_dict.items()]
                    raise ConfigError(config.source, [Problem(m, scanner_spec.line) for m in messages]) from exc
                confirm_connection(scanner_id, actor=actor)  # the file's connection, given by the operator
    for change in plan.changes:
        if change.action == DISABLE:
            model = Pool if change.kind == "pool" else Scanner
            for obj in model.objects.filter(name=change.name):
                obj.enabled = False
                obj.save(update_fields=["enabled", "updated_at"])


def load_config(config: ScannerConfig, *, prune: bool | frozenset[str] = False, dry_run: bool = False) -> Plan:
    """Upsert ``config`` into the database in one transaction (or only plan it, with ``dry_run``)."""
    with transaction.atomic():
        plan = build_plan(config, prune=prune)
        if not dry_run:
            _apply(config, plan)
    return plan
