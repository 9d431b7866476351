from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.translation import gettext as _

from members.consent import VERIFY_BATCH_SIZE, check_consent_flags


class Command(BaseCommand):
    help = (
        "Replay the consent ledger for every member and check that the stored marketing flags equal it; "
        "lists the first mismatches and fails if any."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--batch-size", type=int, default=VERIFY_BATCH_SIZE)
        parser.add_argument("--show", type=int, default=20, help="How many mismatches to list.")

    def handle(self, *args: object, **options: object) -> None:
        check = check_consent_flags(batch_size=int(options["batch_size"]), keep=int(options["show"]))
        if not check.ok:
            lines = [
                _("member %(member)d: %(flag)s is %(stored)s, the ledger gives %(expected)s")
                % {"member": m.member_id, "flag": m.flag, "stored": m.stored, "expected": m.expected}
                for m in check.first_mismatches
            ]
            raise CommandError(
                _("%(bad)d of %(count)d members have consent flags that differ from the ledger:")
                % {"bad": check.members_mismatched, "count": check.members_checked}
                + "\n"
                + "\n".join(lines)
            )
        self.stdout.write(
            _("consent flags match the ledger for %(count)d members") % {"count": check.members_checked}
        )
