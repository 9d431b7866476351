from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class LoyaltyConfig(AppConfig):
    name = "loyalty"
    verbose_name = _("Loyalty")

    def ready(self) -> None:
        # Orders earn points and move tiers in the same transaction that records them; members knows
        # nothing of loyalty (dependencies point one way), so loyalty registers itself.
        from members.services import ORDER_HOOKS

        from .services import order_hook

        if order_hook not in ORDER_HOOKS:
            ORDER_HOOKS.append(order_hook)
