from tasks.models.api import ApiToken, TaskTarget
from tasks.models.metrics import MetricTotal
from tasks.models.policy import ApprovalRule, ClientPolicy, PolicyRefusal, RefusalReason
from tasks.models.results import AuthCause, Finding, ResultHost
from tasks.models.states import (
    ACTIVE_STATUSES,
    CREDENTIALED_SCAN_TYPES,
    REFETCH_MARK,
    TERMINAL_STATUSES,
    AuthStatus,
    ErrorKind,
    EventKind,
    IllegalTransition,
    ScanType,
    TaskStatus,
    check_transition,
)
from tasks.models.task import ScanTask, TaskEvent

__all__ = [
    "ACTIVE_STATUSES",
    "CREDENTIALED_SCAN_TYPES",
    "REFETCH_MARK",
    "TERMINAL_STATUSES",
    "ApiToken",
    "ApprovalRule",
    "AuthCause",
    "AuthStatus",
    "ClientPolicy",
    "ErrorKind",
    "EventKind",
    "Finding",
    "IllegalTransition",
    "MetricTotal",
    "PolicyRefusal",
    "RefusalReason",
    "ResultHost",
    "ScanTask",
    "ScanType",
    "TaskEvent",
    "TaskStatus",
    "TaskTarget",
    "check_transition",
]
