"""``manage.py import_file RESOURCE FILE [--dry-run] [--user USERNAME]``: the admin's import, scripted.

Same code path as the admin job (scrm.imports.run_import), run synchronously. The last line printed
is one JSON object: ``{"resource", "dry_run", "new", "updated", "unchanged", "invalid", "total",
"error_workbook"}``; the error workbook (invalid rows with an error column) is written next to the
file. Exits non-zero when the file is refused or no row could be imported.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.translation import gettext as _

from scrm.audit import Actor
from scrm.imports import FileRefused, ImportNotAllowed, importers, run_import


class Command(BaseCommand):
    help = "Import an xlsx or csv file (members, stores, …) through the same checks as the admin."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("resource", help="what the file holds: " + ", ".join(sorted(importers())))
        parser.add_argument("file", type=Path)
        parser.add_argument("--dry-run", action="store_true", help="check and count, write nothing")
        parser.add_argument("--user", help="import as this user (their rights are checked)")

    def handle(self, *args: Any, **options: Any) -> None:
        path: Path = options["file"]
        if not path.is_file():
            raise CommandError(_("No such file: %(path)s") % {"path": path})
        if options["user"]:
            user = get_user_model().objects.filter(username=options["user"]).first()
            if user is None:
                raise CommandError(_("No such user: %(name)s") % {"name": options["user"]})
            actor = Actor.for_user(user)
        else:
            actor = Actor.system("import_file")
        try:
            result = run_import(options["resource"], path, actor=actor, dry_run=options["dry_run"])
        except (FileRefused, ImportNotAllowed) as refused:
            self.stdout.write(json.dumps({"resource": options["resource"], "error": refused.message}))
            raise CommandError(refused.message) from None
        workbook = None
        if result.error_workbook:
            workbook = path.with_name(f"{path.stem}.errors.xlsx")
            workbook.write_bytes(result.error_workbook)
        for problem in result.problems[:20]:
            self.stderr.write(problem.text())
        summary = {
            "resource": result.resource,
            "dry_run": result.dry_run,
            **{k: result.counts[k] for k in ("new", "updated", "unchanged", "invalid", "total")},
            "error_workbook": str(workbook) if workbook else None,
        }
        self.stdout.write(json.dumps(summary, ensure_ascii=False))
        if not result.imported_anything:
            raise CommandError(_("No row could be imported."))
