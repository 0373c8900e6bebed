from django.apps import AppConfig


class TasksConfig(AppConfig):
    name = "tasks"
    verbose_name = "Scan tasks"

    def ready(self) -> None:
        from scanners.signals import breaker_changed, connection_confirmed, scanner_changed
        from tasks.engine.events import on_breaker_changed, on_connection_confirmed, on_scanner_changed

        breaker_changed.connect(on_breaker_changed, dispatch_uid="tasks.engine.events.on_breaker_changed")
        connection_confirmed.connect(on_connection_confirmed,
                                     dispatch_uid="tasks.engine.events.on_connection_confirmed")
        scanner_changed.connect(on_scanner_changed, dispatch_uid="tasks.engine.events.on_scanner_changed")

        from django.db.models.signals import pre_delete

        from pools.models import Pool
        from tasks.policies.pool_guard import refuse_pool_delete

        pre_delete.connect(refuse_pool_delete, sender=Pool, dispatch_uid="tasks.policies.pool_guard")

        # Registers a collector only: it touches the database when /metrics is scraped, never here.
        from tasks.observability.metrics import register

        register()
