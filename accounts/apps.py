from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Accounts"

    def ready(self) -> None:
        from axes.signals import user_locked_out

        from .lockout import lockout_audit

        user_locked_out.connect(lockout_audit, dispatch_uid="accounts.lockout_audit")
