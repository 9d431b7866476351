from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class CampaignsConfig(AppConfig):
    name = "campaigns"
    verbose_name = _("Campaigns")

    def ready(self) -> None:
        from members.consent import WITHDRAWAL_HANDLERS
        from members.services import JOIN_HOOKS, MERGED_HOOKS, ORDER_HOOKS

        from .dispatch import cancel_tasks_of_merged_member, cancel_tasks_on_withdrawal
        from .services import on_member_joined, on_orders_paid

        # Event campaigns: the paths that record joins and orders open their runs.
        if on_member_joined not in JOIN_HOOKS:
            JOIN_HOOKS.append(on_member_joined)
        if on_orders_paid not in ORDER_HOOKS:
            ORDER_HOOKS.append(on_orders_paid)
        if cancel_tasks_of_merged_member not in MERGED_HOOKS:
            MERGED_HOOKS.append(cancel_tasks_of_merged_member)

        # A consent withdrawal cancels the member's open tasks on that channel, in its transaction.
        if cancel_tasks_on_withdrawal not in WITHDRAWAL_HANDLERS:
            WITHDRAWAL_HANDLERS.append(cancel_tasks_on_withdrawal)
