from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class ScrmConfig(AppConfig):
    name = "scrm"
    verbose_name = _("Audit and platform")

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from .roles import sync_role_groups

        # After every migrate (also of the test database), so permissions exist before groups get them.
        post_migrate.connect(sync_role_groups, sender=self, dispatch_uid="scrm.sync_role_groups")
