"""The dispatch engine (DESIGN §4): waiting tasks live in the database; RQ carries short steps.

``dispatch(pool)`` claims the oldest queued tasks while the pool has free slots and enqueues their
``launch``; ``launch`` creates and starts the scan; ``poll`` follows it in short steps re-enqueued with
``enqueue_in``; ``finish`` exports, ingests and closes the task. ``recovery`` rebuilds anything Redis lost.
Modules: :mod:`.transitions` (the one way a status changes), :mod:`.dispatch`, :mod:`.chain`,
:mod:`.runner` (every step's lifecycle: lock, breaker, retry, failure, dead letter), and the steps' domain
work in :mod:`.launch`, :mod:`.monitor` (poll, finish, stop) and :mod:`.settle`; :mod:`.recovery`.
"""
