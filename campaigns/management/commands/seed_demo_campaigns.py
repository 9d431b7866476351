from typing import Any

from django.core.management.base import BaseCommand
from django.utils.translation import gettext as _

from campaigns.demo import seed_demo_campaigns


class Command(BaseCommand):
    help = "Seed demo segments, scripts, a journey and a running campaign with tasks (after seed_demo)."

    def handle(self, *args: Any, **options: Any) -> None:
        result = seed_demo_campaigns()
        if result.created:
            self.stdout.write(
                self.style.SUCCESS(_("Demo campaigns created: %(tasks)d tasks.") % {"tasks": result.tasks})
            )
        else:
            self.stdout.write(_("Demo campaigns already present; nothing changed."))
