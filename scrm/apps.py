from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class ScrmConfig(AppConfig):
    name = "scrm"
    verbose_name = _("Audit and platform")

    def ready(self) -> None:
        from django.contrib.auth import signals as auth_signals
        from django.db.models.signals import post_migrate

        from . import signals
        from .roles import sync_role_groups

        auth_signals.user_logged_in.connect(signals.on_login, dispatch_uid="scrm.audit_login")
        auth_signals.user_logged_out.connect(signals.on_logout, dispatch_uid="scrm.audit_logout")
        auth_signals.user_login_failed.connect(
            signals.on_login_failed, dispatch_uid="scrm.audit_login_failed"
        )

        # After every migrate (also of the test database), so permissions exist before groups get them.
        post_migrate.connect(sync_role_groups, sender=self, dispatch_uid="scrm.sync_role_groups")
        from . import export_tasks  # noqa: F401  -- registers the export task (autodiscovery finds tasks.py only)
