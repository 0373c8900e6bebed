"""``Retry-After`` (RFC 9110 §10.2.3): how long a scanner, or a proxy in front of it, asked scanpool to wait.

A 429 or 503 answer may carry it as delay-seconds (``Retry-After: 120``) or as an HTTP-date
(``Retry-After: Wed, 21 Oct 2026 07:28:00 GMT``, also the obsolete RFC 850 and asctime forms). Anything else
— garbage, a negative or fractional number, an impossible date — is ignored: the caller falls back to its own
backoff. A date is measured against the answer's own ``Date`` header when it has one (the scanner's clock
against itself, so a skewed clock on either side does not stretch or shrink the wait), else against ours; a
date in the past means "now". Every wait is capped (``cap``, the caller passes ``SCANPOOL_BREAKER_COOLDOWN``):
a hostile or broken scanner cannot park a task for longer than one breaker cooldown per attempt.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

RETRY_AFTER_STATUSES = frozenset({429, 503})
_DELAY = re.compile(r"[0-9]+")
_MAX_LENGTH = 64  # longer than any HTTP-date: garbage


def parse_retry_after(value: str | None, *, cap: float, date: str | None = None,
                      now: datetime | None = None) -> float | None:
    """Seconds to wait from now (0 … ``cap``), or ``None`` when ``value`` is absent or not a valid Retry-After.

    ``date`` is the answer's ``Date`` header (the reference for an HTTP-date); ``now`` is for tests."""
    text = (value or "").strip()
    if not text or len(text) > _MAX_LENGTH:
        return None
    if _DELAY.fullmatch(text):
        return float(min(int(text), cap))
    until = None if text[0] in "+-" else _http_date(text)  # "-5", "+5": not delay-seconds, not a date
    if until is None:
        return None
    reference = _http_date(date or "") or now or datetime.now(UTC)
    return max(0.0, min((until - reference).total_seconds(), cap))


def retry_after_of(status: int, headers: Mapping[str, str], *, cap: float) -> float | None:
    """The wait a 429 or 503 answer asks for (``None`` for any other status, or without a valid header)."""
    if status not in RETRY_AFTER_STATUSES:
        return None
    return parse_retry_after(headers.get("Retry-After"), cap=cap, date=headers.get("Date"))


def _http_date(text: str) -> datetime | None:
    if not any(c.isalpha() for c in text):  # "1.5", "12:00": no month name, no date
        return None
    try:
        parsed = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)  # HTTP dates are GMT
