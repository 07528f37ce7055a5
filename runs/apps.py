from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _ensure_schedules(sender: AppConfig, **kwargs: object) -> None:
    from django.db import DEFAULT_DB_ALIAS

    if kwargs.get("using", DEFAULT_DB_ALIAS) != DEFAULT_DB_ALIAS:
        return
    from runs.schedules import ensure_schedules

    ensure_schedules()


class RunsConfig(AppConfig):
    name = "runs"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        post_migrate.connect(_ensure_schedules, sender=self, dispatch_uid="runs.ensure_schedules")
