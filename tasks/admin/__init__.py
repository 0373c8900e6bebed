"""The tasks app in the admin: scan tasks (``tasks``), their parsed results (``results``) and the readable
rendering of a task's results on its page (``results_display``), and the Pool page with its scanners and live
load (``pools``: it reads all three apps, so it is registered here)."""

from tasks.admin.policies import ClientPolicyAdmin, PolicyRefusalAdmin
from tasks.admin.pools import PoolAdmin
from tasks.admin.results import FindingAdmin, ResultHostAdmin
from tasks.admin.tasks import ScanTaskAdmin, TaskEventInline
from tasks.admin.tokens import ApiTokenAdmin

__all__ = [
    "ApiTokenAdmin",
    "ClientPolicyAdmin",
    "FindingAdmin",
    "PolicyRefusalAdmin",
    "PoolAdmin",
    "ResultHostAdmin",
    "ScanTaskAdmin",
    "TaskEventInline",
]
