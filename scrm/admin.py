"""The admin site's titles, and the audit trail as HQ and the audit officer read and export it (read-only)."""

from __future__ import annotations

import datetime
import json
import re
import tempfile
from typing import Any

from django.apps import apps
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import FileResponse, HttpRequest, HttpResponse, HttpResponseBadRequest
from django.urls import URLPattern, path
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime
from django.utils.decorators import method_decorator
from django.utils.html import format_html
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_POST

from . import audit, security
from .admin_base import AppendOnlyAdmin, InputFilter, input_filter
from .audit import Actor
from .models import AuditEvent

admin.site.site_header = _("SCRM headquarters")
admin.site.site_title = _("SCRM headquarters")
admin.site.index_title = _("Member operations")

REQUEST_ID = re.compile(r"^[0-9a-f]{32}$")
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def _target_types() -> list[str]:
    return [model._meta.label_lower for model in apps.get_models()]


class MemberFilter(InputFilter):
    """Events about one member: its id, as the member's admin page shows it."""

    title = _("member id")
    parameter_name = "member"

    def queryset(self, request: HttpRequest, queryset: QuerySet[AuditEvent]) -> QuerySet[AuditEvent]:
        value = (self.value() or "").strip()
        if not value:
            return queryset
        if not value.isdigit():
            return queryset.none()
        return queryset.filter(target_type="members.member", target_id=value)


class StoreCodeFilter(InputFilter):
    """Events of one store, by its code; the trail keeps the store's id (it does not depend on stores)."""

    title = _("store code")
    parameter_name = "store"

    def queryset(self, request: HttpRequest, queryset: QuerySet[AuditEvent]) -> QuerySet[AuditEvent]:
        value = (self.value() or "").strip().upper()
        if not value:
            return queryset
        store_model = apps.get_model("stores", "Store")
        store_id = store_model.objects.filter(code=value).values_list("pk", flat=True).first()
        return queryset.none() if store_id is None else queryset.filter(store_id=store_id)


class TimeBoundFilter(InputFilter):
    """One end of a time range: a date (the whole day, Shanghai time) or a date and time."""

    end = "from"

    def queryset(self, request: HttpRequest, queryset: QuerySet[AuditEvent]) -> QuerySet[AuditEvent]:
        value = (self.value() or "").strip()
        if not value:
            return queryset
        bound = parse_time_bound(value, end=self.end)
        if bound is None:
            messages.error(
                request,
                gettext("“%(value)s” is not a date or time; type it as 2025-01-31 or 2025-01-31 14:30.")
                % {"value": value},
            )
            return queryset.none()
        return queryset.filter(at__gte=bound) if self.end == "from" else queryset.filter(at__lt=bound)


class FromFilter(TimeBoundFilter):
    title = _("from date")
    parameter_name = "at_from"
    end = "from"


class ToFilter(TimeBoundFilter):
    title = _("to date")
    parameter_name = "at_to"
    end = "to"


def parse_time_bound(value: str, *, end: str) -> datetime.datetime | None:
    """``from``: the first instant included; ``to``: the first instant after the range (exclusive).

    A date alone covers its whole day, so "to 2025-01-31" includes the 31st.
    """
    try:
        # The date first: parse_datetime would also read "2025-01-31", as midnight.
        day = parse_date(value)
        moment = None if day is not None else parse_datetime(value)
    except ValueError:  # well formed but impossible, e.g. 2025-02-30
        return None
    if day is not None:
        start = timezone.make_aware(datetime.datetime.combine(day, datetime.time.min))
        return start if end == "from" else start + datetime.timedelta(days=1)
    if moment is None:
        return None
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment)
    return moment if end == "from" else moment + datetime.timedelta(microseconds=1)


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
    # Every filter is a text box on an indexed column: the trail is the biggest table there is, and
    # a list of choices (or Django's date hierarchy) would read all of it to draw the sidebar.
    list_filter = (
        input_filter(_("actor"), "actor", "actor__username"),
        # Actions are free text ("member.updated"); a prefix ("member.") uses the action's pattern index.
        input_filter(_("action"), "action", "action__startswith"),
        "actor_kind",
        MemberFilter,
        StoreCodeFilter,
        input_filter(_("target type"), "target_type", "target_type", clean=lambda v: v.strip().lower()),
        FromFilter,
        ToFilter,
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

    # Export: the filtered trail, for the audit officer and HQ administrators -----------------------

    def get_urls(self) -> list[URLPattern]:
        export = path(
            "export/",
            self.admin_site.admin_view(self.export_view),
            name="scrm_auditevent_export",
        )
        return [export, *super().get_urls()]

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> Any:
        context = {**(extra_context or {}), "may_export": security.may_export_audit_trail(request.user)}
        return super().changelist_view(request, context)

    @method_decorator(require_POST)
    def export_view(self, request: HttpRequest) -> HttpResponse:
        """The events the changelist shows under the same filters and search, as a file; audited."""
        if not (self.has_view_permission(request) and security.may_export_audit_trail(request.user)):
            raise PermissionDenied
        file_format = request.POST.get("format", "")
        if file_format not in security.AUDIT_EXPORT_FORMATS:
            return HttpResponseBadRequest(gettext("Choose Excel or CSV."))
        queryset = self.get_changelist_instance(request).get_queryset(request)
        handle = tempfile.TemporaryFile()  # noqa: SIM115 -- FileResponse closes (and so deletes) it
        exported = security.write_audit_export(queryset, handle, file_format=file_format)
        audit.record(
            Actor.from_request(request),
            "audit.exported",
            target_type=AuditEvent._meta.label_lower,
            target_id="",
            changes={
                "format": file_format,
                "rows": exported.rows,
                "sha256": exported.sha256,
                "truncated": exported.truncated,
                "filters": dict(request.GET.lists()),
            },
        )
        if exported.truncated:
            messages.warning(
                request,
                gettext("The file holds the first %(count)s events only; narrow the filters for the rest.")
                % {"count": exported.rows},
            )
        filename = f"audit-trail-{timezone.localdate().isoformat()}.{file_format}"
        content_type = XLSX if file_format == "xlsx" else "text/csv; charset=utf-8"
        return FileResponse(handle, as_attachment=True, filename=filename, content_type=content_type)

    @admin.display(description=_("changes"))
    def changes_pretty(self, event: AuditEvent) -> str:
        return format_html(
            '<pre style="white-space: pre-wrap; margin: 0">{}</pre>',
            json.dumps(event.changes, ensure_ascii=False, indent=2, sort_keys=True),
        )
