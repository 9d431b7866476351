"""``manage.py seed_demo``: a believable demo brand, then one login per role. Safe to run twice."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import translation
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from members.demo_data import (
    DEFAULT_MEMBERS,
    DEFAULT_ORDERS_PER_MEMBER,
    DEFAULT_SEED,
    DEMO_PASSWORD,
    TIERS,
    SeedResult,
    seed_demo,
)

COUNT_LABELS = (
    ("regions", gettext_lazy("Regions")),
    ("stores", gettext_lazy("Stores")),
    ("staff", gettext_lazy("Store staff (managers and guides)")),
    ("members", gettext_lazy("Members")),
    ("members_with_guide", gettext_lazy("Members with an exclusive guide")),
    ("orders", gettext_lazy("Orders")),
    ("member_orders", gettext_lazy("Orders by members")),
    ("order_lines", gettext_lazy("Order lines")),
    ("points_entries", gettext_lazy("Points entries")),
    ("consent_records", gettext_lazy("Consent records")),
    ("member_tags", gettext_lazy("Member tags")),
    ("identities", gettext_lazy("External identities")),
)


class Command(BaseCommand):
    @property
    def help(self) -> str:  # type: ignore[override]  # translated when asked: argparse needs a str
        return _(
            "Build a demo brand (regions, stores, staff, members, 12 months of orders, points, consent) "
            "and print one login per role. Running it again adds nothing."
        )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--members", type=int, default=DEFAULT_MEMBERS, help=_("Number of members."))
        parser.add_argument(
            "--seed",
            type=int,
            default=DEFAULT_SEED,
            help=_("Random seed; the same seed gives the same data."),
        )
        parser.add_argument(
            "--orders-per-member",
            type=float,
            default=DEFAULT_ORDERS_PER_MEMBER,
            help=_("Orders per member on average, non-member orders included."),
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["members"] < 1:
            raise CommandError(_("--members must be at least 1."))
        if options["orders_per_member"] < 0:
            raise CommandError(_("--orders-per-member cannot be negative."))
        result = seed_demo(
            members=options["members"],
            seed=options["seed"],
            orders_per_member=options["orders_per_member"],
        )
        if result.created:
            self.stdout.write(
                self.style.SUCCESS(_("Demo data created in %(seconds).1f s.") % {"seconds": result.seconds})
            )
        else:
            self.stdout.write(_("Demo data is already there; nothing was added."))
        if options["verbosity"] > 1 and result.steps:
            self.stdout.write(", ".join(f"{name} {seconds:.2f}s" for name, seconds in result.steps.items()))
        self._print_logins(result)
        self._print_counts(result)

    def _print_logins(self, result: SeedResult) -> None:
        rows = [(_("Role"), _("Role (English)"), _("Username"), _("Password"))]
        for role, username in result.logins:
            with translation.override("zh-hans"):
                chinese = str(role.label)
            with translation.override("en"):
                english = str(role.label)
            rows.append((chinese, english, username, DEMO_PASSWORD))
        self.stdout.write("")
        self.stdout.write(_("Demo logins (the same password for every demo account):"))
        self._table(rows)

    def _print_counts(self, result: SeedResult) -> None:
        rows = [(str(label), f"{result.counts.get(key, 0):,}") for key, label in COUNT_LABELS]
        tier_names = {code: name for code, name, *_rest in TIERS}
        rows += [
            (_("Members in tier %(tier)s") % {"tier": tier_names.get(key[5:], key[5:])}, f"{count:,}")
            for key, count in result.counts.items()
            if key.startswith("tier_")
        ]
        self.stdout.write("")
        self._table(rows, header=False)

    def _table(self, rows: list[tuple[str, ...]], *, header: bool = True) -> None:
        widths = [max(_display_width(row[i]) for row in rows) for i in range(len(rows[0]))]
        for number, row in enumerate(rows):
            cells = [
                cell + " " * (width - _display_width(cell)) for cell, width in zip(row, widths, strict=True)
            ]
            self.stdout.write("  " + "  ".join(cells).rstrip())
            if header and number == 0:
                self.stdout.write("  " + "  ".join("-" * width for width in widths))


def _display_width(text: str) -> int:
    """Columns a string takes in a terminal: CJK characters are two columns wide."""
    return sum(2 if ord(ch) > 0x2E7F else 1 for ch in text)
