"""Revoking API tokens, for a routine rotation or after a leak.

A revoked token is refused at once (401), and a scan of it held for approval can no longer be approved. That is
all a *rotation* needs ("create a new token, switch the program, revoke the old one"): the old token's queued
scans are the program's legitimate work and still run. A *leaked* key is different: what an attacker queued with
it must not run, so :func:`revoke_tokens` with ``cancel_waiting`` also cancels the tokens' scans that have not
started — pending approval, or queued and not yet given a scanner — through :func:`tasks.services.cancel`
(``waiting_only``), so events, slots, dispatch, metrics and the cached queue positions stay right. A scan given a
scanner meanwhile, even between the read and its cancel, is left alone (the cancel's conditional UPDATE checks it)
and counted as still active, as are scans already launching or running: the operator cancels those explicitly.

Idempotent: revoking a revoked token changes nothing, and cancelling its waiting scans again cancels only what is
still waiting. A submission past authentication when its token is revoked re-reads the token inside its transaction,
its row locked (:func:`tasks.submission_rules.check_token_still_valid`): it is refused, or this cancel pass sees it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from django.db.models import Count, Q
from django.utils import timezone

from tasks import services
from tasks.errors import SubmissionError
from tasks.models import ApiToken, ScanTask, TaskStatus
from tasks.models.api import KEY_PREFIX
from tasks.models.states import CANCELLABLE_STATUSES

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Revocation:
    """What :func:`revoke_tokens` did. ``still_active``: the tokens' scans not ended afterwards, by stage
    (:data:`STAGES`; ``pending_approval`` ones can no longer be approved)."""

    token_ids: tuple[int, ...]
    revoked: int  # tokens revoked by this call (already revoked ones are not counted)
    cancelled: int  # scans cancelled by this call
    still_active: dict[str, int] = field(default_factory=dict)

    @property
    def active(self) -> int:
        return sum(self.still_active.values())


def token_label(token: ApiToken) -> str:
    """How a token is named to people: its name, its user and its key id (never the key)."""
    return f"{token.name!r} ({token.user.get_username()}, {KEY_PREFIX}_{token.prefix}_…)"


# The stages of a scan not ended yet, in the order a scan goes through them (the keys of Revocation.still_active).
STAGES = {
    "pending_approval": Q(status=TaskStatus.PENDING_APPROVAL),
    "queued": Q(status=TaskStatus.QUEUED, claimed_at__isnull=True),
    "launching": Q(status=TaskStatus.QUEUED, claimed_at__isnull=False),  # given a scanner, not running yet
    "running": Q(status=TaskStatus.RUNNING),
}


def active_scans_by_stage(token_ids: Iterable[int]) -> dict[str, int]:
    """The tokens' scans not ended, by stage (only the stages with any)."""
    counts = ScanTask.objects.filter(api_token_id__in=list(token_ids), status__in=CANCELLABLE_STATUSES).aggregate(
        **{stage: Count("pk", filter=where) for stage, where in STAGES.items()})
    return {stage: counts[stage] for stage in STAGES if counts[stage]}


def revoke_tokens(token_ids: Iterable[int], *, actor: str, cancel_waiting: bool = False) -> Revocation:
    """Revoke these tokens (those not revoked yet) and, with ``cancel_waiting``, cancel their scans that have not
    started; each cancel is an event in the scan's timeline naming the revocation and ``actor``."""
    ids = tuple(sorted({int(pk) for pk in token_ids}))
    revoked = ApiToken.objects.filter(pk__in=ids, revoked_at__isnull=True).update(revoked_at=timezone.now())
    cancelled = 0
    if cancel_waiting:
        labels = {t.pk: token_label(t) for t in ApiToken.objects.filter(pk__in=ids).select_related("user")}
        waiting = ScanTask.objects.filter(STAGES["pending_approval"] | STAGES["queued"], api_token_id__in=ids)
        for task_id, token_id in waiting.order_by("created_at", "id").values_list("pk", "api_token_id"):
            reason = f"API token {labels[token_id]} revoked, its waiting scans cancelled"
            try:
                services.cancel(task_id, actor=actor, reason=reason, waiting_only=True)
            except SubmissionError as exc:  # started, ended or deleted meanwhile: counted below if still active
                log.info("task %s of revoked token %s not cancelled: %s", task_id, labels[token_id], exc.message)
                continue
            cancelled += 1
    result = Revocation(token_ids=ids, revoked=revoked, cancelled=cancelled,
                        still_active=active_scans_by_stage(ids))
    log.info("%s revoked %d API token(s) of %d selected, cancelled %d waiting scan(s); %d still active",
             actor or "unknown", revoked, len(ids), cancelled, result.active)
    return result
