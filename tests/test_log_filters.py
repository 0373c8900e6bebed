"""RQ's per-job success lines ("Successfully completed …", "Job OK", "result discarded/kept") are DEBUG lines:
at INFO a running scan added three of them to the worker's log (and `make run`'s terminal) every poll."""

from __future__ import annotations

import io
import logging

import pytest
from rq import SimpleWorker

from tasks.queues import SERIALIZER, get_connection, queue_for


def run_one_job(level: str, tmp_path) -> str:
    """The log of a real RQ worker running one job at ``level``, through the logger settings.LOGGING configured."""
    logger = logging.getLogger("rq.worker")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    old_level = logger.level
    logger.addHandler(handler)
    try:
        queue = queue_for("scanpool-log-test", get_connection())
        queue.enqueue("tests.foreign_jobs.write_marker", str(tmp_path / "marker"), job_id="log-test-job")
        SimpleWorker([queue], connection=get_connection(), serializer=SERIALIZER).work(burst=True,
                                                                                        logging_level=level)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    return stream.getvalue()


@pytest.mark.usefixtures("redis_conn")
def test_rq_job_success_lines_only_at_debug(tmp_path):
    info = run_one_job("INFO", tmp_path)
    assert "scanpool-log-test: tests.foreign_jobs.write_marker" in info  # the job's start stays visible
    for chatter in ("Successfully completed", "Job OK", "result is kept"):
        assert chatter not in info, info
    assert "started with PID" in info  # other RQ lines untouched

    debug = run_one_job("DEBUG", tmp_path)
    assert "DEBUG Successfully completed" in debug and "INFO Successfully completed" not in debug, debug
    assert "Job OK" in debug and "result is kept" in debug
