"""Admin pages: scripts (with a live placeholder preview), journeys with their steps, festival calendar."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.forms import BaseForm
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.urls import URLPattern, path, reverse
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_POST

from members.models import Member
from members.phones import normalize_mobile
from scrm.admin_base import ScrmModelAdmin, ScrmTabularInline, form_changes, member_label
from scrm.audit import Actor
from scrm.scoping import scoped

from . import journey_services
from .journeys import event_choices
from .models import Festival, Journey, JourneyStep, Script
from .scripts import PLACEHOLDERS, preview_script, validate_script

# -- scripts -----------------------------------------------------------------------------------------


class ScriptForm(forms.ModelForm):
    class Meta:
        model = Script
        fields = ["title", "body"]
        widgets = {"body": forms.Textarea(attrs={"rows": 6, "cols": 80})}

    def clean_body(self) -> str:
        body = self.cleaned_data["body"]
        validate_script(body)
        return body


def find_member(term: str, user: Any) -> Member | None:
    """A member the user may see, by id or mobile number (as typed, with or without +86)."""
    term = (term or "").strip()
    if not term:
        return None
    members = scoped(Member.objects.select_related("home_store", "guide", "tier"), user).filter(
        status=Member.Status.ACTIVE
    )
    if term.isdigit() and len(term) < 11:
        return members.filter(pk=int(term)).first()
    try:
        mobile = normalize_mobile(term)
    except (ValidationError, ValueError):
        return None
    return members.filter(mobile=mobile).first()


@admin.register(Script)
class ScriptAdmin(ScrmModelAdmin):
    form = ScriptForm
    list_display = ["title", "excerpt", "updated_at"]
    search_fields = ["title"]
    change_form_template = "admin/campaigns/script/change_form.html"

    @admin.display(description=_("text"))
    def excerpt(self, obj: Script) -> str:
        return obj.body[:60] + ("…" if len(obj.body) > 60 else "")

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view(require_POST(self.preview_view))
        return [path("preview/", view, name="campaigns_script_preview"), *super().get_urls()]

    def preview_view(self, request: HttpRequest) -> HttpResponse:
        """The body as the chosen member would get it (JSON, for the live preview on the form)."""
        if not self.has_view_permission(request):
            return JsonResponse({"error": gettext("You may not preview scripts.")}, status=403)
        body = request.POST.get("body", "")
        member = find_member(request.POST.get("member", ""), request.user)
        if member is None:
            return JsonResponse(
                {"error": gettext("No member found with this id or mobile number.")}, status=404
            )
        preview = preview_script(body, member=member)
        unknown = ", ".join("{" + name + "}" for name in preview["unknown"])
        return JsonResponse(
            {
                "member": member_label(member),
                "text": preview["text"],
                "unknown": unknown,
                "warning": (gettext("Unknown placeholders: %(names)s.") % {"names": unknown})
                if unknown
                else "",
            }
        )

    def render_change_form(
        self, request: HttpRequest, context: dict[str, Any], *args: Any, **kwargs: Any
    ) -> HttpResponse:
        context["placeholders"] = [("{" + name + "}", label) for name, label in PLACEHOLDERS.items()]
        context["preview_url"] = reverse("admin:campaigns_script_preview")
        return super().render_change_form(request, context, *args, **kwargs)

    def save_model(self, request: HttpRequest, obj: Script, form: BaseForm, change: bool) -> None:
        values = {name: form.cleaned_data[name] for name in form.changed_data if name in ("title", "body")}
        saved = journey_services.save_script(
            Script.objects.get(pk=obj.pk) if change else None, actor=Actor.from_request(request), **values
        )
        obj.pk = saved.pk


# -- journeys ----------------------------------------------------------------------------------------


class JourneyStepForm(forms.ModelForm):
    event = forms.ChoiceField(label=_("event"), choices=())

    class Meta:
        model = JourneyStep
        fields = ["name", "event", "offset_days", "channel", "script", "due_days", "priority"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        choices = event_choices()
        current = self.instance.event if self.instance and self.instance.pk else ""
        if current and current not in dict(choices):
            choices.append((current, current))  # a festival no longer in the calendar stays visible
        self.fields["event"].choices = choices
        self.fields["offset_days"].help_text = _(
            "Days after the event; negative for before it (e.g. -7: a week before a birthday or festival)."
        )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        step = JourneyStep(event=cleaned.get("event") or "", offset_days=cleaned.get("offset_days") or 0)
        try:
            journey_services.clean_step(step)
        except ValidationError as error:
            self.add_error(None, error)
        return cleaned


class JourneyStepInline(ScrmTabularInline):
    model = JourneyStep
    form = JourneyStepForm
    extra = 1
    show_change_link = False
    autocomplete_fields = ["script"]


@admin.register(Journey)
class JourneyAdmin(ScrmModelAdmin):
    list_display = ["name", "active", "step_count", "created_at"]
    list_filter = ["active"]
    search_fields = ["name"]
    fields = ["name"]
    readonly_fields = ["active"]
    inlines = [JourneyStepInline]
    actions = ["activate_selected", "deactivate_selected"]
    change_list_template = "admin/campaigns/journey/change_list.html"

    def get_fields(self, request: HttpRequest, obj: Journey | None = None) -> list[str]:
        return ["name", "active"] if obj else ["name"]

    @admin.display(description=_("steps"))
    def step_count(self, obj: Journey) -> int:
        return obj.step_total

    def get_queryset(self, request: HttpRequest) -> QuerySet[Journey]:
        from django.db.models import Count

        return super().get_queryset(request).annotate(step_total=Count("steps"))

    def save_formset(self, request: HttpRequest, form: BaseForm, formset: Any, change: bool) -> None:
        if formset.model is not JourneyStep:
            return super().save_formset(request, form, formset, change)
        formset.save(commit=False)
        actor = Actor.from_request(request)
        deleted = list(formset.deleted_objects)
        if deleted:
            # Deletion is the base admin's audited path; steps with runs are protected by the database.
            formset.deleted_objects = deleted
            for obj in deleted:
                journey_services.delete_journey_step(obj, actor=actor)
        for inline_form in formset.forms:
            if inline_form in formset.deleted_forms or not inline_form.has_changed():
                continue
            step = inline_form.instance
            journey_services.save_journey_step(
                step, actor=actor, changes=form_changes(inline_form, created=step._state.adding)
            )

    def _set_active(self, request: HttpRequest, queryset: QuerySet[Journey], *, active: bool) -> None:
        actor = Actor.from_request(request)
        for journey in queryset:
            try:
                journey_services.set_journey_active(journey, active=active, actor=actor)
            except ValidationError as error:
                self.message_user(request, f"{journey}: {' '.join(error.messages)}", messages.ERROR)

    @admin.action(description=_("Switch on the selected journeys"), permissions=["change"])
    def activate_selected(self, request: HttpRequest, queryset: QuerySet[Journey]) -> None:
        self._set_active(request, queryset, active=True)

    @admin.action(description=_("Switch off the selected journeys"), permissions=["change"])
    def deactivate_selected(self, request: HttpRequest, queryset: QuerySet[Journey]) -> None:
        self._set_active(request, queryset, active=False)


# -- festival calendar -------------------------------------------------------------------------------


@admin.register(Festival)
class FestivalAdmin(ScrmModelAdmin):
    list_display = ["name", "date", "weekday"]
    list_filter = ["name"]
    search_fields = ["name"]
    date_hierarchy = "date"
    ordering = ["date"]
    change_list_template = "admin/campaigns/festival/change_list.html"

    @admin.display(description=_("weekday"))
    def weekday(self, obj: Festival) -> str:
        from django.utils.dateformat import format as date_format

        return date_format(obj.date, "l")

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view(require_POST(self.seed_view))
        return [path("seed/", view, name="campaigns_festival_seed"), *super().get_urls()]

    def seed_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_add_permission(request):
            self.message_user(request, gettext("You may not add festival dates."), messages.ERROR)
        else:
            created = journey_services.seed_festivals(actor=Actor.from_request(request))
            self.message_user(
                request,
                gettext("%(count)d festival dates added.") % {"count": len(created)},
                messages.SUCCESS,
            )
        return HttpResponseRedirect(reverse("admin:campaigns_festival_changelist"))

    def save_model(self, request: HttpRequest, obj: Festival, form: BaseForm, change: bool) -> None:
        if change and form.changed_data == ["date"]:
            journey_services.move_festival(
                Festival.objects.get(pk=obj.pk),
                date=form.cleaned_data["date"],
                actor=Actor.from_request(request),
            )
            return
        super().save_model(request, obj, form, change)
