"""REST API v1 (docs/api.md): thin DRF views over tasks.services, tasks.results.query and the pool views.

Scans, pools (whose status combines scanners and tasks) and everything else that needs all three
apps live here; pure scanner data is served by scanners.api.
"""
