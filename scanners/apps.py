from django.apps import AppConfig


class ScannersConfig(AppConfig):
    name = "scanners"
    verbose_name = "Scanners"

    def ready(self) -> None:
        from scanpool_site import checks  # noqa: F401  (registers scanpool's system checks)
