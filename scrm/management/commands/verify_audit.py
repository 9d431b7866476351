from django.core.management.base import BaseCommand, CommandError
from django.utils.translation import gettext as _

from scrm.models import AuditEvent
from scrm.selectors import audit_chain_breaks


class Command(BaseCommand):
    help = "Check the audit trail's hash chain and report the first broken link."

    def handle(self, *args: object, **options: object) -> None:
        breaks = audit_chain_breaks(limit=10)
        if breaks:
            first = breaks[0]
            reason = {
                "altered": _("its content no longer matches its hash (altered)"),
                "predecessor_missing": _("the row before it is missing (removed)"),
            }[first.problem]
            raise CommandError(
                _("Audit trail broken at event %(id)d: %(reason)s. %(count)d broken link(s) found.")
                % {"id": first.event_id, "reason": reason, "count": len(breaks)}
            )
        self.stdout.write(
            _("Audit trail intact: %(count)d events checked.") % {"count": AuditEvent.objects.count()}
        )
