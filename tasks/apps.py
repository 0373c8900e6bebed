from django.apps import AppConfig


class TasksConfig(AppConfig):
    name = "tasks"
    verbose_name = "Scan tasks"

    def ready(self) -> None:
        # Registers a collector only: it touches the database when /metrics is scraped, never here.
        from tasks.observability.metrics import register

        register()
