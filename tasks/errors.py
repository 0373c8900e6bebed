"""The one error type of the submission service (DESIGN §9), with subclasses per HTTP meaning.

Every error carries the offending ``field`` (or ``"non_field_errors"``), a ``message`` that says
what to fix, a stable machine ``code`` and the HTTP ``status_code`` the API maps it to.
"""

from __future__ import annotations


class SubmissionError(Exception):
    status_code = 400
    code = "invalid"

    def __init__(self, field: str, message: str, *, code: str | None = None) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        if code:
            self.code = code

    def as_dict(self) -> dict[str, object]:
        return {"code": self.code, "field": self.field, "message": self.message}


class TokenRevoked(SubmissionError):
    """The API token of the request was revoked after the request was authenticated, before its scan was created."""

    status_code = 401
    code = "authentication_failed"


class ScopeError(SubmissionError):
    """A target lies outside the pool's allow-list."""

    status_code = 403
    code = "out_of_scope"


class NotFoundError(SubmissionError):
    """The named pool or scanner does not exist."""

    status_code = 404
    code = "not_found"


class IdempotencyConflict(SubmissionError):
    """The idempotency key was already used for a different request."""

    status_code = 409
    code = "idempotency_conflict"


class PoolFull(SubmissionError):
    """Backpressure: the pool's queue holds ``max_queued`` tasks already."""

    status_code = 429
    code = "pool_full"

    def __init__(self, field: str, message: str, *, retry_after: int = 60) -> None:
        super().__init__(field, message)
        self.retry_after = retry_after

    def as_dict(self) -> dict[str, object]:
        return {**super().as_dict(), "retry_after": self.retry_after}


class TaskStateError(SubmissionError):
    """The operation does not apply to the task in its current status (cancel a finished task…)."""

    status_code = 409
    code = "invalid_state"


class PolicyError(SubmissionError):
    """The client's policy does not allow this scan (pool, target, scan type, target count).

    ``reason`` is a :class:`tasks.models.RefusalReason` value, ``limit`` what the policy allows."""

    status_code = 403
    code = "policy_refused"

    def __init__(self, field: str, message: str, *, reason: str, limit: object) -> None:
        super().__init__(field, message)
        self.reason = reason
        self.limit = limit

    def as_dict(self) -> dict[str, object]:
        return {**super().as_dict(), "reason": self.reason, "limit": self.limit}


class BudgetExceeded(PolicyError):
    """A budget of the client's policy is used up; ``retry_after`` seconds until it refills (``refills_at``)."""

    status_code = 429
    code = "budget_exceeded"

    def __init__(self, field: str, message: str, *, reason: str, limit: object, used: int, retry_after: int,
                 refills_at: str | None) -> None:
        super().__init__(field, message, reason=reason, limit=limit)
        self.used = used
        self.retry_after = max(1, int(retry_after))
        self.refills_at = refills_at

    def as_dict(self) -> dict[str, object]:
        return {**super().as_dict(), "used": self.used, "retry_after": self.retry_after, "refills_at": self.refills_at}


class ApprovalRefused(SubmissionError):
    """This approver may not approve this task (four eyes: not the submitter's own scan)."""

    status_code = 403
    code = "approval_refused"
