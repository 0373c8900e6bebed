"""Write batches on a thread of their own while the caller parses the next ones.

Profiled (200 MB export on PostgreSQL, one thread): the client used ~5.2 s of CPU and the server ~4.7 s, and
the wall time was their sum: the server idled while the file was parsed, the client waited at the end of each
``COPY`` and commit while the server updated the findings' indexes. A writer thread with its own database
connection lets both work at once (psycopg and sqlite3 release the GIL while they wait or work in C).

What stays true:

* Memory is bounded: at most ``depth`` batches wait in the queue (plus the one being written and the one
  being built).
* Each batch is still its own short transaction, on the writer's connection (SQLite: the write lock is held
  per batch, and only the writer writes during the ingest).
* Any error ends the ingest: an error of the writer is raised in the caller, as the same exception, at its next
  ``put`` or at the end; an error of the caller (a bad file) stops the writer before the queued batches are
  written. Either way the thread has ended and its connection is closed when the ``with`` block exits, so the
  caller's clean-up never races a write still in flight.
* Inside a caller's transaction (``atomic``) or on an in-memory SQLite database, another connection could
  neither see nor join the caller's work: batches are then written inline, in the caller's thread.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Generic, TypeVar

from django.db import connection, connections

T = TypeVar("T")
_STOP = object()
_PUT_POLL_SECONDS = 0.5

__all__ = ["BatchWriter", "can_write_in_thread"]


def can_write_in_thread() -> bool:
    """Whether another connection of this process sees and commits to the same database as ``connection``."""
    if connection.in_atomic_block:
        return False  # the caller's transaction: its rows are invisible to another connection
    if connection.vendor == "sqlite":
        return not connection.is_in_memory_db()
    return connection.vendor == "postgresql"


class BatchWriter(Generic[T]):
    """``with BatchWriter(write, session, threaded=True) as writer: writer.put(batch)…``

    ``session()`` is entered once on the writing thread (connection tuning), ``write(batch)`` is called for each
    batch in order. With ``threaded=False`` both happen inline in the caller's thread.
    """

    def __init__(
        self,
        write: Callable[[T], None],
        session: Callable[[], AbstractContextManager[object]],
        *,
        threaded: bool,
        depth: int = 1,
    ) -> None:
        self._write = write
        self._session = session
        self.threaded = threaded
        self._queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._thread: threading.Thread | None = None
        self._inline: AbstractContextManager[object] | None = None
        self._error: BaseException | None = None
        self._abort = threading.Event()

    def __enter__(self) -> BatchWriter[T]:
        if self.threaded:
            self._thread = threading.Thread(target=self._run, name="results-writer", daemon=True)
            self._thread.start()
        else:
            self._inline = self._session()
            self._inline.__enter__()
        return self

    def put(self, batch: T) -> None:
        """Write ``batch`` (inline) or queue it (threaded; blocks while ``depth`` batches already wait)."""
        if not self.threaded:
            self._write(batch)
            return
        self._raise_writer_error()
        self._put(batch)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self.threaded:
            assert self._inline is not None
            self._inline.__exit__(exc_type, exc, tb)
            return
        if exc_type is not None:
            self._abort.set()  # the queued batches would be deleted anyway: do not write them
        self._put(_STOP)
        assert self._thread is not None
        self._thread.join()
        if exc_type is None:
            self._raise_writer_error()

    def _put(self, item: object) -> None:
        assert self._thread is not None
        while True:  # the writer drains the queue until _STOP whatever happens; never wait on a dead thread
            try:
                self._queue.put(item, timeout=_PUT_POLL_SECONDS)
                return
            except queue.Full:
                if not self._thread.is_alive():
                    return

    def _raise_writer_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        stopped = False
        try:
            with self._session():
                while not stopped:
                    batch = self._queue.get()
                    stopped = batch is _STOP
                    if stopped or self._abort.is_set():
                        continue
                    try:
                        self._write(batch)  # type: ignore[arg-type]
                    except BaseException as exc:  # handed to the caller's thread
                        self._error = exc
                        self._abort.set()
        except BaseException as exc:  # the session itself failed (connect, tuning, restore)
            if self._error is None:
                self._error = exc
            self._abort.set()
            while not stopped:  # keep draining: the caller may be blocked in put()
                stopped = self._queue.get() is _STOP
        finally:
            connections.close_all()  # this thread's connections only (they are per thread)
