"""Admin pages: segments, with a form-based rule builder and a preview before saving.

The definition travels in one form field as JSON. Without JavaScript that field is a text box (the
server validates it and names any bad field, operator or value); with it, ``static/campaigns/
segments.js`` draws the builder — groups, conditions, operator and value inputs for each field — from
the catalogue the server renders into the page, and keeps the JSON field in step. "Preview" posts the
form to the same page: the server validates, counts and re-renders the form with the preview, writing
nothing. "Save" goes through ``campaigns.segment_services`` (validated, audited).
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.forms import BaseForm
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils.html import conditional_escape, format_html
from django.utils.safestring import mark_safe
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from scrm.admin_base import ScrmModelAdmin
from scrm.audit import Actor

from . import segment_services
from .models import Segment, TaskChannel
from .segment_exports import SEGMENT_MEMBERS, export_segment
from .segments import FIELD_LIST, OPERATOR_LABELS, SegmentPreview, preview_segment, validate_definition

PREVIEW_BUTTON = "_preview"


def builder_catalogue() -> dict[str, Any]:
    """What the builder needs to draw every field: labels, operators, value widget, choices."""
    fields = []
    for spec in FIELD_LIST:
        fields.append(
            {
                "name": spec.name,
                "label": str(spec.label),
                "group": str(spec.group),
                "widget": spec.widget,
                "operators": [[op, str(OPERATOR_LABELS[op])] for op in spec.operators],
                "choices": [[key, str(label)] for key, label in spec.choices()] if spec.choices else [],
                "help": str(spec.help_text),
            }
        )
    return {
        "fields": fields,
        "labels": {
            "all": gettext("all of"),
            "any": gettext("any of"),
            "match": gettext("Members matching"),
            "negate": gettext("negate: members who do not match"),
            "add_condition": gettext("+ Condition"),
            "add_group": gettext("+ Group"),
            "remove": gettext("Remove"),
            "from": gettext("from"),
            "to": gettext("to"),
            "days": gettext("days"),
            "in_last": gettext("in the last"),
            "ever": gettext("ever (leave days empty)"),
            "yes": gettext("yes"),
            "no": gettext("no"),
            "comma": gettext("separate values with commas"),
            "empty": gettext("An empty group matches nobody: add a condition."),
            "value": gettext("value"),
            "field": gettext("field"),
            "operator": gettext("operator"),
        },
    }


class SegmentForm(forms.ModelForm):
    definition = forms.JSONField(
        label=_("definition"),
        widget=forms.Textarea(attrs={"rows": 6, "class": "vLargeTextField segment-definition"}),
        help_text=_("Built with the rule builder below; without JavaScript, edit the JSON here."),
    )
    preview_channel = forms.ChoiceField(
        label=_("preview consent for channel"),
        choices=[("", _("(no channel)")), *TaskChannel.choices],
        required=False,
        help_text=_("The preview counts members without consent on this channel as excluded."),
    )

    class Meta:
        model = Segment
        fields = ["name", "description", "definition"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not self.is_bound and not self.instance.pk:
            self.initial.setdefault("definition", {"op": "all", "items": []})

    def clean_definition(self) -> dict[str, Any]:
        return validate_definition(self.cleaned_data["definition"])


@admin.register(Segment)
class SegmentAdmin(ScrmModelAdmin):
    form = SegmentForm
    list_display = ("name", "description", "owner", "updated_at")
    search_fields = ("name",)
    readonly_fields = ("owner", "created_at", "updated_at")
    fieldsets = (
        (None, {"fields": ("name", "description")}),
        (_("Rules"), {"fields": ("definition", "preview_channel")}),
        (_("Record"), {"fields": ("owner", "created_at", "updated_at"), "classes": ("collapse",)}),
    )

    actions = ("export_members_xlsx", "export_members_csv")

    @admin.action(description=_("Export the members of the selected segments to Excel"))
    def export_members_xlsx(self, request: HttpRequest, queryset: Any) -> None:
        self._export_members(request, queryset, "xlsx")

    @admin.action(description=_("Export the members of the selected segments to CSV"))
    def export_members_csv(self, request: HttpRequest, queryset: Any) -> None:
        self._export_members(request, queryset, "csv")

    def _export_members(self, request: HttpRequest, queryset: Any, file_format: str) -> None:
        if not SEGMENT_MEMBERS.may_export(request.user):
            self.message_user(request, gettext("You may not export members."), messages.ERROR)
            return
        actor = Actor.from_request(request)
        jobs = [export_segment(segment, file_format=file_format, actor=actor) for segment in queryset]
        link = format_html('<a href="{}">{}</a>', reverse("exports:list"), gettext("My exports"))
        text = gettext("Exports being prepared: %(count)d. Download them from %(link)s when they are ready.")
        self.message_user(
            request,
            mark_safe(conditional_escape(text) % {"count": len(jobs), "link": link}),
            messages.SUCCESS,
        )

    def get_fieldsets(self, request: HttpRequest, obj: Segment | None = None) -> Any:
        if obj is None:
            return self.fieldsets[:2]
        return self.fieldsets

    # Writes go through the services (validated, audited) ------------------------------------------

    def save_model(self, request: HttpRequest, obj: Segment, form: BaseForm, change: bool) -> None:
        actor = Actor.from_request(request)
        data = form.cleaned_data
        if change:
            saved = segment_services.update_segment(
                obj,
                actor=actor,
                name=data["name"],
                description=data.get("description", ""),
                definition=data["definition"],
            )
        else:
            saved = segment_services.create_segment(
                name=data["name"],
                description=data.get("description", ""),
                definition=data["definition"],
                actor=actor,
            )
        obj.pk = saved.pk
        obj.refresh_from_db()

    # Preview: validate and count, write nothing ---------------------------------------------------

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        extra_context = {**(extra_context or {}), "segment_catalogue": builder_catalogue()}
        if request.method == "POST" and PREVIEW_BUTTON in request.POST:
            return self._preview_view(request, object_id, form_url, extra_context)
        return super().changeform_view(request, object_id, form_url, extra_context)

    def _preview_view(
        self, request: HttpRequest, object_id: str | None, form_url: str, extra_context: dict[str, Any]
    ) -> HttpResponse:
        obj = self.get_object(request, unquote(object_id)) if object_id else None
        if object_id and obj is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        if obj is None and not self.has_add_permission(request):
            raise PermissionDenied
        if obj is not None and not self.has_change_permission(request, obj):
            raise PermissionDenied
        form_class = self.get_form(request, obj, change=obj is not None)
        form = form_class(request.POST, request.FILES, instance=obj)
        preview: SegmentPreview | None = None
        if form.is_valid():
            try:
                preview = preview_segment(
                    form.cleaned_data["definition"], channel=form.cleaned_data["preview_channel"] or None
                )
            except ValidationError as error:
                form.add_error("definition", error)
        fieldsets = self.get_fieldsets(request, obj)
        admin_form = helpers.AdminForm(
            form,
            list(fieldsets),
            self.get_prepopulated_fields(request, obj) if obj is None else {},
            self.get_readonly_fields(request, obj),
            model_admin=self,
        )
        title = _("Add %s") if obj is None else _("Change %s")
        context = {
            **self.admin_site.each_context(request),
            "title": title % self.opts.verbose_name,
            "subtitle": str(obj) if obj else None,
            "adminform": admin_form,
            "object_id": object_id,
            "original": obj,
            "is_popup": False,
            "to_field": None,
            "media": self.media + admin_form.media,
            "inline_admin_formsets": [],
            "errors": helpers.AdminErrorList(form, []),
            "preview_applicable": False,
            "segment_preview": preview,
            "segment_preview_channel": dict(TaskChannel.choices).get(form.cleaned_data.get("preview_channel"))
            if form.is_valid()
            else None,
            **extra_context,
        }
        if preview is not None:
            self.message_user(
                request,
                gettext("Preview only: nothing was saved. Save to keep the segment."),
                messages.INFO,
            )
        request.current_app = self.admin_site.name
        return self.render_change_form(
            request, context, add=obj is None, change=obj is not None, obj=obj, form_url=form_url
        )
