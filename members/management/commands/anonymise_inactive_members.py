from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.utils.translation import gettext as _

from members.privacy import RETENTION_BATCH_SIZE, anonymise_inactive_members
from scrm.audit import Actor


class Command(BaseCommand):
    help = (
        "Anonymise members inactive (no joining, no purchase) for longer than "
        "SCRM_RETENTION_INACTIVE_DAYS, as an erasure would. Safe to run again."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="Only count the members concerned.")
        parser.add_argument("--batch-size", type=int, default=RETENTION_BATCH_SIZE)

    def handle(self, *args: Any, **options: Any) -> None:
        count = anonymise_inactive_members(
            actor=Actor.system("anonymise_inactive_members"),
            batch_size=options["batch_size"],
            dry_run=options["dry_run"],
        )
        params = {"count": count, "days": settings.SCRM_RETENTION_INACTIVE_DAYS}
        if options["dry_run"]:
            message = _("%(count)d members inactive for over %(days)d days would be anonymised.")
        else:
            message = _("%(count)d members inactive for over %(days)d days anonymised.")
        self.stdout.write(message % params)
