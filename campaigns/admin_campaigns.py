"""Admin pages: campaigns (edit, preview, approve, launch, pause, cancel), runs with live progress,
the contact policy and a read-only list of tasks.

Every button posts to a view that calls a service in campaigns.services; nothing here writes itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.forms import BaseForm
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.utils.text import capfirst
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_POST

from scrm.admin_base import ScrmModelAdmin, SingletonAdmin, input_filter, member_label
from scrm.audit import Actor

from . import services
from .dispatch_selectors import preview_campaign, run_progress
from .models import Campaign, CampaignRun, ContactPolicy, Task

Status = Campaign.Status

# Which buttons a campaign in each status shows, in order: (action, label, needs approve permission).
ACTIONS: dict[str, list[tuple[str, Any, bool]]] = {
    Status.DRAFT: [("approve", _("Approve"), True), ("cancel", _("Cancel campaign"), False)],
    Status.APPROVED: [("launch", _("Launch"), True), ("cancel", _("Cancel campaign"), False)],
    Status.RUNNING: [("pause", _("Pause"), False), ("cancel", _("Cancel campaign"), False)],
    Status.PAUSED: [("resume", _("Resume"), True), ("cancel", _("Cancel campaign"), False)],
    Status.FINISHED: [("cancel", _("Cancel campaign"), False)],
    Status.CANCELLED: [],
}

SERVICES: dict[str, Callable[..., Any]] = {
    "approve": services.approve_campaign,
    "launch": services.launch_campaign,
    "pause": services.pause_campaign,
    "resume": services.resume_campaign,
    "cancel": services.cancel_campaign,
}

DONE_MESSAGES = {
    "approve": _("The campaign “%(name)s” is approved."),
    "launch": _("The campaign “%(name)s” is running."),
    "pause": _("The campaign “%(name)s” is paused."),
    "resume": _("The campaign “%(name)s” is running again."),
    "cancel": _("The campaign “%(name)s” is cancelled."),
}

EDITABLE_FIELDS = (
    "name",
    "segment",
    "channel",
    "script",
    "schedule",
    "run_at",
    "event",
    "starts_at",
    "ends_on",
    "due_days",
    "assignment",
    "priority",
    "holdout_percent",
    "attribution_days",
    "coupon_template_code",
)


class CampaignForm(forms.ModelForm):
    event = forms.ChoiceField(
        label=capfirst(_("event")),
        required=False,
        choices=[("", "---------"), *services.CAMPAIGN_EVENTS.items()],
        help_text=_("Only for campaigns run on an event: each event opens a run for the member concerned."),
    )

    class Meta:
        model = Campaign
        fields = EDITABLE_FIELDS

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        schedule = cleaned.get("schedule")
        if schedule == Campaign.Schedule.DAILY and not cleaned.get("run_at"):
            self.add_error("run_at", _("A daily campaign needs the time of day it runs at."))
        if schedule == Campaign.Schedule.EVENT and not cleaned.get("event"):
            self.add_error("event", _("A campaign run on an event needs the event."))
        starts, ends = cleaned.get("starts_at"), cleaned.get("ends_on")
        if starts and ends and ends < starts.date():
            self.add_error("ends_on", _("The last day cannot be before the start."))
        return cleaned


class CampaignRunInline(admin.TabularInline):
    model = CampaignRun
    fields = ("run_link", "state", "progress", "started_at", "finished_at")
    readonly_fields = fields
    extra = 0
    max_num = 0
    can_delete = False
    ordering = ("-started_at",)
    verbose_name_plural = _("runs")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description=_("occurrence"))
    def run_link(self, run: CampaignRun) -> str:
        return format_html(
            '<a href="{}">{}</a>',
            reverse("admin:campaigns_campaignrun_change", args=[run.pk]),
            run.occurrence,
        )

    @admin.display(description=_("tasks created"))
    def progress(self, run: CampaignRun) -> str:
        counters = run.counters or {}
        return f"{counters.get('created', '–')} / {counters.get('eligible', '–')}"


@admin.register(Campaign)
class CampaignAdmin(ScrmModelAdmin):
    form = CampaignForm
    list_display = (
        "name",
        "status",
        "channel",
        "segment",
        "schedule",
        "priority",
        "latest_run",
        "created_at",
    )
    list_filter = ("status", "channel", "schedule")
    search_fields = ("name",)
    list_select_related = ("segment",)
    inlines = (CampaignRunInline,)
    change_form_template = "admin/campaigns/campaign/change_form.html"
    fieldsets = (
        (None, {"fields": ("name", "segment", "channel", "script")}),
        (_("When"), {"fields": ("schedule", "run_at", "event", "starts_at", "ends_on", "due_days")}),
        (
            _("How"),
            {
                "fields": (
                    "assignment",
                    "priority",
                    "holdout_percent",
                    "attribution_days",
                    "coupon_template_code",
                )
            },
        ),
    )

    @admin.display(description=_("latest run"))
    def latest_run(self, campaign: Campaign) -> str:
        run = campaign.runs.order_by("-started_at").first()
        if run is None:
            return "–"
        return format_html(
            '<a href="{}">{} · {}</a>',
            reverse("admin:campaigns_campaignrun_change", args=[run.pk]),
            run.occurrence,
            run.get_state_display(),
        )

    def get_readonly_fields(self, request: HttpRequest, obj: Campaign | None = None) -> Sequence[str]:
        # Only drafts are edited: what was approved is what runs.
        if obj is not None and obj.status != Status.DRAFT:
            return EDITABLE_FIELDS
        return ()

    def has_delete_permission(self, request: HttpRequest, obj: Campaign | None = None) -> bool:
        return False  # runs and tasks refer to it; cancel instead

    def get_inlines(self, request: HttpRequest, obj: Campaign | None) -> Sequence[Any]:
        return self.inlines if obj is not None else ()

    def formfield_for_dbfield(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        field = super().formfield_for_dbfield(db_field, request, **kwargs)
        if field is not None and hasattr(field.widget, "can_delete_related"):
            field.widget.can_delete_related = False  # segments and scripts in use are protected
        return field

    def save_model(self, request: HttpRequest, obj: Campaign, form: BaseForm, change: bool) -> None:
        if not change:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)

    # Buttons and pages ---------------------------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        wrap = self.admin_site.admin_view
        urls = [
            path("<int:pk>/preview/", wrap(self.preview_view), name="campaigns_campaign_preview"),
            path(
                "<int:pk>/do/<str:action>/",
                wrap(require_POST(self.action_view)),
                name="campaigns_campaign_action",
            ),
        ]
        return [*urls, *super().get_urls()]

    def _campaign(self, request: HttpRequest, pk: int) -> Campaign:
        campaign = get_object_or_404(self.get_queryset(request).select_related("segment", "script"), pk=pk)
        if not self.has_view_permission(request, campaign):
            raise PermissionDenied
        return campaign

    def preview_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        campaign = self._campaign(request, pk)
        preview = None
        error = ""
        try:
            preview = preview_campaign(campaign)
        except ValidationError as exc:
            error = "; ".join(exc.messages)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "original": campaign,
            "title": gettext("Preview of %(name)s") % {"name": campaign.name},
            "preview": preview,
            "error": error,
            "actions": self._buttons(request, campaign),
        }
        return TemplateResponse(request, "admin/campaigns/campaign/preview.html", context)

    def action_view(self, request: HttpRequest, pk: int, action: str) -> HttpResponse:
        campaign = self._campaign(request, pk)
        service = SERVICES.get(action)
        back = reverse("admin:campaigns_campaign_change", args=[campaign.pk])
        if service is None:
            return HttpResponseRedirect(back)
        try:
            result = service(campaign, actor=Actor.from_request(request))
        except PermissionDenied:
            self.message_user(request, gettext("You may not do this to campaigns."), messages.ERROR)
            return HttpResponseRedirect(back)
        except ValidationError as error:
            for message in error.messages:
                self.message_user(request, message, messages.ERROR)
            return HttpResponseRedirect(back)
        self.message_user(request, DONE_MESSAGES[action] % {"name": campaign.name}, messages.SUCCESS)
        if action == "launch" and isinstance(result, CampaignRun):
            return HttpResponseRedirect(reverse("admin:campaigns_campaignrun_change", args=[result.pk]))
        if action == "cancel" and result:
            self.message_user(
                request,
                gettext("%(count)s open tasks were cancelled.") % {"count": result},
                messages.INFO,
            )
        return HttpResponseRedirect(back)

    def _buttons(self, request: HttpRequest, campaign: Campaign) -> list[dict[str, Any]]:
        may_approve = request.user.has_perm(services.APPROVE_PERMISSION)
        may_change = request.user.has_perm(services.CHANGE_PERMISSION)
        return [
            {
                "action": action,
                "label": label,
                "url": reverse("admin:campaigns_campaign_action", args=[campaign.pk, action]),
                "danger": action == "cancel",
            }
            for action, label, needs_approve in ACTIONS.get(campaign.status, [])
            if (may_approve if needs_approve else may_change)
        ]

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        *args: Any,
        obj: Campaign | None = None,
        **kwargs: Any,
    ) -> HttpResponse:
        if obj is not None and obj.pk:
            context["campaign_actions"] = self._buttons(request, obj)
            context["preview_url"] = reverse("admin:campaigns_campaign_preview", args=[obj.pk])
            context["status_label"] = obj.get_status_display()
        return super().render_change_form(request, context, *args, obj=obj, **kwargs)


@admin.register(CampaignRun)
class CampaignRunAdmin(ScrmModelAdmin):
    list_display = ("__str__", "state", "created_of_eligible", "started_at", "finished_at")
    list_filter = ("state",)
    list_select_related = ("campaign", "journey_step")
    change_form_template = "admin/campaigns/campaignrun/change_form.html"
    fields = (
        "campaign",
        "journey_step",
        "occurrence",
        "state",
        "started_at",
        "evaluated_at",
        "finished_at",
        "error",
    )
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description=_("tasks created"))
    def created_of_eligible(self, run: CampaignRun) -> str:
        counters = run.counters or {}
        return f"{counters.get('created', '–')} / {counters.get('eligible', '–')}"

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view(self.progress_view)
        return [
            path("<int:pk>/progress/", view, name="campaigns_campaignrun_progress"),
            *super().get_urls(),
        ]

    def progress_view(self, request: HttpRequest, pk: int) -> JsonResponse:
        run = get_object_or_404(self.get_queryset(request), pk=pk)
        return JsonResponse(run_progress(run))

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        *args: Any,
        obj: CampaignRun | None = None,
        **kwargs: Any,
    ) -> HttpResponse:
        if obj is not None:
            context["progress"] = run_progress(obj)
            context["progress_url"] = reverse("admin:campaigns_campaignrun_progress", args=[obj.pk])
            context["counter_labels"] = [
                ("evaluated", gettext("In the segment")),
                ("no_consent", gettext("No consent for the channel")),
                ("frequency_cap", gettext("Over the frequency cap")),
                ("holdout", gettext("Holdout (control group)")),
                ("eligible", gettext("Tasks to create")),
                ("created", gettext("Tasks created")),
                ("skipped", gettext("Skipped at creation")),
                ("unassigned", gettext("To the manager's queue")),
            ]
        return super().render_change_form(request, context, *args, obj=obj, **kwargs)


@admin.register(ContactPolicy)
class ContactPolicyAdmin(SingletonAdmin):
    list_display = ("__str__", "max_tasks", "per_days", "quiet_start", "quiet_end", "updated_at")


@admin.register(Task)
class TaskAdmin(ScrmModelAdmin):
    """Every task, read-only: HQ follows what the guides have to do and did."""

    list_display = ("title", "member_masked", "store", "guide", "channel", "state", "opens_at", "due_at")
    list_filter = (
        "state",
        "channel",
        input_filter(_("run id"), "run", "run_id"),
        input_filter(_("store code"), "store", "store__code", clean=lambda v: v.strip().upper()),
    )
    list_select_related = ("member", "store", "guide")
    fields = (
        "title",
        "run",
        "member_masked",
        "store",
        "guide",
        "channel",
        "priority",
        "opens_at",
        "due_at",
        "state",
        "outcome",
        "note",
        "cancel_reason",
        "completed_at",
    )
    readonly_fields = fields

    @admin.display(description=_("member"))
    def member_masked(self, task: Task) -> str:
        return member_label(task.member)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Task]:
        return super().get_queryset(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
