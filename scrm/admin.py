"""The admin site's titles, and the audit trail as HQ and the audit officer read it (read-only)."""

from __future__ import annotations

import json
import re

from django.apps import apps
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from .admin_base import AppendOnlyAdmin, input_filter
from .models import AuditEvent

admin.site.site_header = _("SCRM headquarters")
admin.site.site_title = _("SCRM headquarters")
admin.site.index_title = _("Member operations")

REQUEST_ID = re.compile(r"^[0-9a-f]{32}$")


def _target_types() -> list[str]:
    return [model._meta.label_lower for model in apps.get_models()]


@admin.register(AuditEvent)
class AuditEventAdmin(AppendOnlyAdmin):
    list_display = (
        "at",
        "action",
        "actor_kind",
        "actor_label",
        "target_type",
        "target_id",
        "target_label",
        "store_id",
        "request_id",
    )
    list_display_links = ("at", "action")
    list_filter = (
        # Actions are free text ("member.updated"); a prefix box ("member.") uses the action index,
        # where a list would read every distinct action out of the whole trail.
        input_filter(_("action"), "action", "action__startswith"),
        "actor_kind",
        input_filter(_("target type"), "target_type", "target_type", clean=lambda v: v.strip().lower()),
        input_filter(_("store id"), "store_id", "store_id"),
    )
    search_fields = ("target_id", "request_id")
    search_help_text = _(
        "A target id (e.g. 42, or members.member#42 for one kind of record), or a request id."
    )
    sortable_by = ("at",)
    fields = (
        "at",
        "action",
        "actor",
        "actor_kind",
        "actor_label",
        "target_type",
        "target_id",
        "target_label",
        "store_id",
        "changes_pretty",
        "request_id",
        "ip",
    )
    readonly_fields = fields

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[AuditEvent], search_term: str
    ) -> tuple[QuerySet[AuditEvent], bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        if "#" in term:  # "members.member#42", as events print themselves
            target_type, _sep, target_id = term.partition("#")
            return queryset.filter(
                target_type=target_type.strip().lower(), target_id=target_id.strip()
            ), False
        if REQUEST_ID.match(term.lower()):
            return queryset.filter(request_id=term.lower()), False
        # target_id is the second column of the (target_type, target_id) index: naming every model
        # label as the first column lets the index answer instead of a scan of the whole trail.
        return queryset.filter(target_type__in=_target_types(), target_id=term), False

    @admin.display(description=_("changes"))
    def changes_pretty(self, event: AuditEvent) -> str:
        return format_html(
            '<pre style="white-space: pre-wrap; margin: 0">{}</pre>',
            json.dumps(event.changes, ensure_ascii=False, indent=2, sort_keys=True),
        )
