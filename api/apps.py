from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class ApiConfig(AppConfig):
    name = "api"
    verbose_name = _("Integrations API")

    def ready(self) -> None:
        from members import consent

        from . import webhooks

        # "Consent withdrawn" reaches subscribed systems whichever path recorded it (API, guide, admin).
        if webhooks.on_consent_withdrawn not in consent.WITHDRAWAL_HANDLERS:
            consent.WITHDRAWAL_HANDLERS.append(webhooks.on_consent_withdrawn)
