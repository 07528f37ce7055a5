from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Registers the API-key scheme with drf-spectacular; importing is what registers it.
        from accounts import schema  # noqa: F401
