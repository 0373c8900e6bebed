from django.apps import AppConfig


class TasksConfig(AppConfig):
    name = "tasks"
    verbose_name = "Scan tasks"

    def ready(self) -> None:
        from scanners.signals import breaker_changed
        from tasks.engine.events import on_breaker_changed

        breaker_changed.connect(on_breaker_changed, dispatch_uid="tasks.engine.events.on_breaker_changed")
