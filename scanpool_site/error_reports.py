"""Django's error pages and mails list the settings; ``REDIS_URL``, ``DATABASE_URL`` (and ``RQ_QUEUES``) carry
passwords under names Django's filter does not recognise as secret. This filter also redacts the password of
any URL-shaped setting value."""

from __future__ import annotations

from typing import Any

from django.views.debug import SafeExceptionReporterFilter

from scanpool_site.redis_url import has_password, redacted


class ScanpoolExceptionReporterFilter(SafeExceptionReporterFilter):
    def cleanse_setting(self, key: Any, value: Any) -> Any:
        cleansed = super().cleanse_setting(key, value)
        if isinstance(cleansed, str) and "://" in cleansed and has_password(cleansed):
            return redacted(cleansed)
        return cleansed
