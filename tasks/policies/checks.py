"""The checks of a client's policy inside ``tasks.services.submit``.

Two phases:

* :func:`evaluate` — before any write: pool, scan type, target count and the target allow-list (a target
  must lie inside the pool's scope, checked by ``submit``, AND inside the policy's allow-list: the policy
  narrows, never widens), and whether the scan needs approval. Refusals are :class:`~tasks.errors.PolicyError`
  (403) naming the reason and the limit.
* :meth:`Decision.reserve` — inside ``submit``'s transaction, just before the task row is written: the
  policy row is locked (``SELECT … FOR UPDATE`` on PostgreSQL; on SQLite the transaction already holds the
  database's write lock, and the UPDATE of the row takes it in any mode), then the budgets are counted from
  the client's task rows in that same transaction. Concurrent submissions therefore queue on the lock and
  each sees the others' rows: a budget is never exceeded. Used-up budgets are
  :class:`~tasks.errors.BudgetExceeded` (429) saying when they refill.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db.models import Count, Q, QuerySet, Sum
from django.utils import timezone

from pools.models import Pool
from pools.scope import Target, out_of_scope
from tasks.capacity import retry_after_seconds
from tasks.engine.transitions import add_event
from tasks.errors import BudgetExceeded, PolicyError
from tasks.models import (
    ApiToken,
    ApprovalRule,
    ClientPolicy,
    EventKind,
    PolicyRefusal,
    RefusalReason,
    ScanTask,
    TaskEvent,
    TaskStatus,
)
from tasks.models.states import RETRYABLE_STATUSES

# The client's tasks that occupy its concurrency budget: these statuses, and a task that ended (cancelled, timed
# out) while its scan still holds its scanner slot: that scan runs until its stop is seen (tasks.engine.settle), so
# cancel-and-resubmit must not run one more scan at once than the policy allows.
IN_FLIGHT = (TaskStatus.PENDING_APPROVAL, TaskStatus.QUEUED, TaskStatus.RUNNING)


def in_flight(token_id: int) -> QuerySet[ScanTask]:
    return ScanTask.objects.filter(Q(status__in=IN_FLIGHT) | Q(slot_held=True), api_token_id=token_id)


def approvers(task: ScanTask) -> str:
    """Who must approve ``task``: the policy's named approvers, and always the permission that allows it."""
    who = "a user with the permission tasks.approve_scantask (admin > Scan tasks, or POST …/approve/)"
    policy = getattr(task.api_token, "policy", None) if task.api_token_id else None
    named = getattr(policy, "approvers", "") if policy is not None else ""
    return f"{named} — {who}" if named else who


def _listed(items: list[str], limit: int = 10) -> str:
    return ", ".join(items[:limit]) + (" …" if len(items) > limit else "")


def outside(targets: list[Target], entries: list[str]) -> list[str]:
    """The targets (text) not inside ``entries``. An empty list contains nothing (never "no restriction")."""
    if not entries:
        return [t.text for t in targets]
    return out_of_scope(targets, entries)


def day_start(now: datetime) -> datetime:
    """Budgets count per UTC day: its first instant."""
    return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def counted_today(token_id: int, now: datetime) -> QuerySet[ScanTask]:
    """The client's tasks of today that use its daily budgets: everything submitted today except what was
    cancelled (rejected, expired, withdrawn) before anything reached a scanner."""
    return ScanTask.objects.filter(api_token_id=token_id, created_at__gte=day_start(now)).exclude(
        status=TaskStatus.CANCELLED, started_at__isnull=True, scanner_scan_id__isnull=True)


@dataclass
class Usage:
    scans_today: int
    addresses_today: int
    in_flight: int
    refills_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {"scans_today": self.scans_today, "addresses_today": self.addresses_today,
                "in_flight": self.in_flight, "daily_budgets_refill_at": self.refills_at.isoformat()}


def retried_today(token_id: int, now: datetime) -> QuerySet[TaskEvent]:
    """The retries of the client's tasks made today: each is one more scan of the day (of the task's addresses).

    A retry is the task's transition from failed/timed out back to the queue (or to approval), which only
    ``tasks.services.retry`` makes. Not the ``retry`` events: the engine writes those too, for its own attempts
    ("launch attempt 2 failed; retrying", "back in the queue: …"), and a flaky scanner would spend the client's
    daily budget."""
    return TaskEvent.objects.filter(
        kind=EventKind.STATUS, from_status__in=RETRYABLE_STATUSES,
        to_status__in=(TaskStatus.QUEUED, TaskStatus.PENDING_APPROVAL),
        task__api_token_id=token_id, created_at__gte=day_start(now))


def usage(token_id: int, now: datetime | None = None) -> Usage:
    now = now or timezone.now()
    today = counted_today(token_id, now)
    retries = retried_today(token_id, now).aggregate(n=Count("id"), a=Sum("task__address_count"))
    return Usage(
        scans_today=today.count() + retries["n"],
        addresses_today=(today.aggregate(n=Sum("address_count"))["n"] or 0) + (retries["a"] or 0),
        in_flight=in_flight(token_id).count(),
        refills_at=day_start(now) + timedelta(days=1),
    )


@dataclass
class Decision:
    """What the policy says about one submission that passed :func:`evaluate`."""

    token: ApiToken
    policy: ClientPolicy
    addresses: int
    needs_approval: bool
    approval_reason: str = ""
    usage: dict[str, Any] = field(default_factory=dict)

    @property
    def client_name(self) -> str:
        return self.token.name

    def reserve(self, pool: Pool) -> None:
        """Lock the policy row and check the budgets against today's rows (call inside the submit transaction)."""
        now = timezone.now()
        policy = ClientPolicy.objects.select_for_update().get(pk=self.policy.pk)
        ClientPolicy.objects.filter(pk=policy.pk).update(last_submission_at=now)
        used = usage(self.token.pk, now)
        self.usage = used.as_dict()
        refill = int((used.refills_at - now).total_seconds()) + 1
        when = used.refills_at.isoformat()
        name = self.client_name
        if policy.max_scans_per_day is not None and used.scans_today + 1 > policy.max_scans_per_day:
            raise BudgetExceeded(
                "non_field_errors", f"client {name!r} has used its {policy.max_scans_per_day} scans for today; "
                f"the budget refills at {when}", reason=RefusalReason.SCANS_PER_DAY,
                limit=policy.max_scans_per_day, used=used.scans_today, retry_after=refill, refills_at=when)
        if policy.max_addresses_per_day is not None and \
                used.addresses_today + self.addresses > policy.max_addresses_per_day:
            left = max(0, policy.max_addresses_per_day - used.addresses_today)
            raise BudgetExceeded(
                "targets", f"this scan covers {self.addresses} addresses but client {name!r} has {left} of its "
                f"{policy.max_addresses_per_day} addresses left today; the budget refills at {when}",
                reason=RefusalReason.ADDRESSES_PER_DAY, limit=policy.max_addresses_per_day,
                used=used.addresses_today, retry_after=refill, refills_at=when)
        if policy.max_concurrent_scans is not None and used.in_flight >= policy.max_concurrent_scans:
            raise BudgetExceeded(
                "non_field_errors", f"client {name!r} already has {used.in_flight} scans pending approval, "
                f"queued, running or still stopping on a scanner (limit {policy.max_concurrent_scans}); "
                "one more fits when one of them ends",
                reason=RefusalReason.CONCURRENT, limit=policy.max_concurrent_scans, used=used.in_flight,
                retry_after=retry_after_seconds(pool), refills_at=None)


def policy_of(token: ApiToken) -> ClientPolicy | None:
    """The client's policy. A submission's token check in its transaction
    (:func:`tasks.submission_rules.check_token_still_valid`) says whether there is one (``policy_pk``): a client
    without a policy then costs no query here."""
    if getattr(token, "policy_pk", _UNKNOWN) is None:
        return None
    return ClientPolicy.objects.filter(token_id=token.pk).order_by().first()  # no join for Meta.ordering


_UNKNOWN = object()


def evaluate(token: ApiToken | None, pool: Pool, targets: list[Target], scan_type: str) -> Decision | None:
    """Check what needs no budget; None when the client has no policy. Raises PolicyError."""
    if token is None:
        return None
    policy = policy_of(token)
    if policy is None:
        return None
    name = token.name
    allowed_pools = sorted(policy.pools.values_list("name", flat=True))
    if allowed_pools and pool.name not in allowed_pools:
        raise PolicyError("pool", f"client {name!r} may not submit to pool {pool.name!r}; its policy allows "
                          f"{_listed(allowed_pools)}", reason=RefusalReason.POOL, limit=allowed_pools)
    if policy.scan_types and scan_type not in policy.scan_types:
        raise PolicyError("scan_type", f"client {name!r} may not run {scan_type!r} scans; its policy allows "
                          f"{', '.join(policy.scan_types)}", reason=RefusalReason.SCAN_TYPE, limit=policy.scan_types)
    if policy.max_targets_per_scan is not None and len(targets) > policy.max_targets_per_scan:
        raise PolicyError("targets", f"{len(targets)} targets given; client {name!r} may give at most "
                          f"{policy.max_targets_per_scan} per scan: split the scan",
                          reason=RefusalReason.TOO_MANY_TARGETS, limit=policy.max_targets_per_scan)
    if policy.target_allow_list:
        refused = outside(targets, policy.target_allow_list)
        if refused:
            raise PolicyError(
                "targets", f"not allowed for client {name!r}: {_listed(refused)}; its policy allows "
                f"{_listed(policy.target_allow_list)} (inside the pool's scope)",
                reason=RefusalReason.TARGETS, limit=policy.target_allow_list)
    addresses = sum(t.size for t in targets)
    if policy.max_addresses_per_day is not None and addresses > policy.max_addresses_per_day:
        raise PolicyError(
            "targets", f"this scan covers {addresses} addresses, more than client {name!r} may scan in a whole day "
            f"({policy.max_addresses_per_day}): split it over several days or ask for a larger budget",
            reason=RefusalReason.ADDRESSES_PER_DAY, limit=policy.max_addresses_per_day)
    reason = ""
    if policy.approval == ApprovalRule.ALWAYS:
        reason = f"the policy of client {name!r} requires approval of every scan"
    elif policy.approval == ApprovalRule.OUTSIDE:
        not_pre_approved = outside(targets, policy.pre_approved_targets)
        if not_pre_approved:
            reason = f"targets outside the pre-approved list of client {name!r}: {_listed(not_pre_approved)}"
    return Decision(token=token, policy=policy, addresses=addresses, needs_approval=bool(reason),
                    approval_reason=reason)


def record_refusal(token: ApiToken | None, pool: str, exc: PolicyError) -> None:
    """One row per refusal (the audit trail and ``nessus_policy_refusals_total``)."""
    PolicyRefusal.objects.create(
        token=token, client=token.name if token else "", pool=(pool or "")[:64], reason=exc.reason,
        limit=str(exc.limit)[:200], message=exc.message[:2000])


def policy_event(task: ScanTask, decision: Decision) -> None:
    """The policy's decision on a submitted task, as a task event (inside the submit transaction)."""
    actor = f"policy of client {decision.client_name}"
    data = {"decision": "held for approval" if decision.needs_approval else "allowed",
            "addresses": decision.addresses, **decision.usage}
    if decision.needs_approval:
        message = f"held for approval: {decision.approval_reason}; to be approved by {approvers(task)}"
    else:
        message = f"allowed by the policy of client {decision.client_name}"
    add_event(task.id, message, kind=EventKind.POLICY, actor=actor, data=data)
