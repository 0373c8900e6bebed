"""A worker stops promptly. RQ's worker listens for commands on a pub/sub channel in a thread that waits up to 60 s
per read; redis-py 8.2 made ``PubSubWorkerThread.stop()`` wait for that thread, so every worker's teardown could take
a minute (a deploy's stop, and every burst run of the tests). pyproject.toml keeps redis-py below 8.2; this test says
so if a later version (or RQ) brings the wait back. Real Redis."""

from __future__ import annotations

import time

from rq import SimpleWorker

from tasks.queues import SERIALIZER, get_connection


def test_a_worker_unsubscribes_and_stops_in_seconds_not_a_minute(redis_conn):
    worker = SimpleWorker(["stop-test"], connection=get_connection(), serializer=SERIALIZER)
    worker.subscribe()
    time.sleep(0.3)  # its listening thread is now waiting for a message
    started = time.monotonic()
    # RQ's Worker.unsubscribe, with the interleaving a loaded machine gives: the listening thread handles the
    # unsubscription before the worker asks it to stop (and then waits to be subscribed again, 60 s).
    worker.pubsub.unsubscribe()
    time.sleep(0.3)
    worker.pubsub_thread.stop()
    worker.pubsub_thread.join(timeout=1)
    worker.pubsub.close()
    assert time.monotonic() - started < 5, "the worker waited for its pub/sub thread's 60 s read to end"
