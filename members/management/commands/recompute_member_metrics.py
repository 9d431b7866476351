from django.core.management.base import BaseCommand
from django.utils.translation import gettext as _

from members.services import recompute_all_member_metrics
from scrm.audit import Actor


class Command(BaseCommand):
    help = "Recompute every member's metrics (first/last purchase, spend, lifecycle, RFM) from the orders."

    def handle(self, *args: object, **options: object) -> None:
        changed = recompute_all_member_metrics(actor=Actor.system("recompute_member_metrics"))
        self.stdout.write(_("%(count)d members changed.") % {"count": changed})
