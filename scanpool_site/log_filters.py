"""Logging filters (``LOGGING`` in settings.py).

RQ's worker logs four INFO lines per job: the job starting, then "Successfully completed … job in …", "Job OK"
and "result discarded / kept". A running scan is a poll job every few seconds, so at INFO the confirmations
flooded `make run`'s terminal and the workers' logs (three lines a poll per scan) and buried scanpool's own
lines. :class:`RqJobChatter` shows them only at ``SCANPOOL_LOG_LEVEL=DEBUG``, as DEBUG lines; the job's start,
its failures and every other RQ line are untouched.
"""

from __future__ import annotations

import logging

# RQ's message templates (rq/worker/base.py) of a job that ended well.
_DONE_TEMPLATES = frozenset({
    "Successfully completed %s job in %ss on worker %s",
    "Successfully completed job %s in %ss on worker %s",
    "Worker %s: job %s result discarded immediately",
    "Worker %s: job %s result is kept for %s seconds",
})
_JOB_OK_TEMPLATE = "Worker %s: %s: %s (%s)"  # also the template of the job's start line: told apart by 'Job OK'


def _is_job_done(record: logging.LogRecord) -> bool:
    if record.msg in _DONE_TEMPLATES:
        return True
    args = record.args if isinstance(record.args, tuple) else ()
    return record.msg == _JOB_OK_TEMPLATE and len(args) == 4 and "Job OK" in str(args[2])


class RqJobChatter(logging.Filter):
    """Demote RQ's per-job success lines from INFO to DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or not _is_job_done(record):
            return True
        if not logging.getLogger(record.name).isEnabledFor(logging.DEBUG):
            return False
        record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
        return True
