"""manage.py rotate_secrets — re-encrypt every stored secret with the newest SCANPOOL_SECRET_KEYS key."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from scanpool_site.crypto import SecretDecryptionError
from scanpool_site.rotation import rotate_secrets


class Command(BaseCommand):
    help = (
        "Re-encrypt scanner credentials and scan credentials with the first key of SCANPOOL_SECRET_KEYS. "
        "Rotate keys by prepending a new key, running this, then removing the old key."
    )

    def handle(self, *args: object, **options: object) -> None:
        try:
            counts = rotate_secrets()
        except SecretDecryptionError as exc:
            raise CommandError(f"{exc} (nothing was changed)") from exc
        for column, count in counts.items():
            self.stdout.write(f"{column}: {count} re-encrypted")
        self.stdout.write(self.style.SUCCESS(f"{sum(counts.values())} secrets now use the newest key"))
