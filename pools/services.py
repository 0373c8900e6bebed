"""Pool changes that matter for security (what a pool may scan) are recorded as :class:`PoolEvent` rows, by
the admin and by ``load_scanners`` alike: who changed the scope or ``allow_any_target``, from what to what."""

from __future__ import annotations

from collections.abc import Iterable

from pools.models import Pool, PoolEvent

AUDITED_FIELDS = ("scope", "allow_any_target")


def record_scope_changes(pool: Pool, before: dict[str, object], *, actor: str) -> list[PoolEvent]:
    """One event per audited field whose value differs between ``before`` and ``pool`` (already saved)."""
    events = []
    for name in AUDITED_FIELDS:
        if name not in before:
            continue
        old, new = before[name], getattr(pool, name)
        if old == new:
            continue
        if name == "allow_any_target":
            message = ("allow_any_target set: every target not protected is allowed" if new else
                       "allow_any_target cleared: only the scope's targets are allowed")
        else:
            message = f"scope changed: {_entries(old)} → {_entries(new)}"
        events.append(PoolEvent.objects.create(pool=pool, actor=actor[:150], message=message,
                                               data={"field": name, "old": old, "new": new}))
    return events


def record_created(pool: Pool, *, actor: str) -> PoolEvent:
    """The first event of a pool: what it may scan from the start."""
    what = "any target not protected" if pool.allow_any_target else (_entries(pool.scope) if pool.scope else
                                                                     "nothing (empty scope)")
    return PoolEvent.objects.create(pool=pool, actor=actor[:150], message=f"created; may scan {what}",
                                    data={"scope": pool.scope, "allow_any_target": pool.allow_any_target})


def snapshot(pool: Pool) -> dict[str, object]:
    """The audited fields as they are now (take it before changing the pool)."""
    return {name: _copy(getattr(pool, name)) for name in AUDITED_FIELDS}


def _copy(value: object) -> object:
    return list(value) if isinstance(value, list | tuple) else value


def _entries(value: object) -> str:
    items = list(value) if isinstance(value, Iterable) and not isinstance(value, str) else [value]
    return "[" + ", ".join(str(i) for i in items) + "]"
