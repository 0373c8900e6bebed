"""The tasks app in the admin: scan tasks (``tasks``), their parsed results (``results``) and the readable
rendering of a task's results on its page (``results_display``)."""

from tasks.admin.policies import ClientPolicyAdmin, PolicyRefusalAdmin
from tasks.admin.results import FindingAdmin, ResultHostAdmin
from tasks.admin.tasks import ScanTaskAdmin, TaskEventInline
from tasks.admin.tokens import ApiTokenAdmin

__all__ = [
    "ApiTokenAdmin",
    "ClientPolicyAdmin",
    "FindingAdmin",
    "PolicyRefusalAdmin",
    "ResultHostAdmin",
    "ScanTaskAdmin",
    "TaskEventInline",
]
