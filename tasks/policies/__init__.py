"""Client policies (issue #15): per-API-token limits checked by ``tasks.services.submit`` (:mod:`.checks`),
approval of held-back scans (:mod:`.approval`), loading policies from YAML (:mod:`.loader`) and their
metrics (:mod:`.metrics`). The models are in :mod:`tasks.models.policy`."""
