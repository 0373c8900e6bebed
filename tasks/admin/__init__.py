"""The tasks app in the admin: scan tasks (``tasks``), their parsed results (``results``) and the readable
rendering of a task's results on its page (``results_display``)."""

from tasks.admin.results import FindingAdmin, ResultHostAdmin
from tasks.admin.tasks import ScanTaskAdmin, TaskEventInline

__all__ = ["FindingAdmin", "ResultHostAdmin", "ScanTaskAdmin", "TaskEventInline"]
