from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.translation import gettext as _

from campaigns.journey_services import seed_festivals
from scrm.audit import Actor

# The lunar calendar library covers these years.
FIRST_YEAR, LAST_YEAR = 1901, 2099


class Command(BaseCommand):
    help = "Add the standard festivals (春节, 元宵, 妇女节, 618, 七夕, 中秋, 国庆, 双11, 双12, 圣诞)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("years", nargs="*", type=int, help="Years to seed (default: 2026 2027).")

    def handle(self, *args: object, **options: object) -> None:
        years = options["years"] or [2026, 2027]
        wrong = [year for year in years if not FIRST_YEAR <= year <= LAST_YEAR]
        if wrong:
            raise CommandError(
                _("Years must be between %(first)d and %(last)d.") % {"first": FIRST_YEAR, "last": LAST_YEAR}
            )
        created = seed_festivals(years, actor=Actor.system("seed_festivals"))
        self.stdout.write(_("%(count)d festival dates added.") % {"count": len(created)})
