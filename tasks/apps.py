from django.apps import AppConfig


class TasksConfig(AppConfig):
    name = "tasks"
    verbose_name = "Scan tasks"

    def ready(self) -> None:
        from scanners.signals import breaker_changed
        from tasks.engine.events import on_breaker_changed

        breaker_changed.connect(on_breaker_changed, dispatch_uid="tasks.engine.events.on_breaker_changed")

        # Registers a collector only: it touches the database when /metrics is scraped, never here.
        from tasks.observability.metrics import register

        register()
