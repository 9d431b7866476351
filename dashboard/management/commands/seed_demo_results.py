from typing import Any

from django.core.management.base import BaseCommand
from django.utils.translation import gettext as _

from dashboard.demo import seed_campaign_results


class Command(BaseCommand):
    help = "Seed the finished demo campaign with a holdout and compute the dashboard (after seed_demo)."

    def handle(self, *args: Any, **options: Any) -> None:
        result = seed_campaign_results()
        if result.get("created", True):
            self.stdout.write(self.style.SUCCESS(_("Demo campaign results and dashboard figures computed.")))
        else:
            self.stdout.write(_("Demo campaign results already present; nothing changed."))
