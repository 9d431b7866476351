"""HQ admin for members and everything hung on them.

Writes go through ``members.services`` (create/update a member, bind a guide, tag, add points,
record consent), so the admin leaves the same audit trail as the API and imports. Histories
(orders, ledgers, assignments) are read-only here. Member pages stay fast on millions of rows:
estimated counts, indexed search, no per-row queries, and inlines capped to the newest rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.cache import add_never_cache_headers
from django.utils.formats import date_format
from django.utils.html import format_html
from django.utils.http import content_disposition_header
from django.utils.text import capfirst
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _
from import_export.admin import ExportMixin
from import_export.formats import base_formats

from scrm import audit
from scrm.admin_base import (
    AppendOnlyAdmin,
    BackgroundExportMixin,
    IndexedSearch,
    LatestRowsInline,
    ReadOnlyLatestRowsInline,
    ScrmModelAdmin,
    ScrmTabularInline,
    SingletonAdmin,
    input_filter,
    key,
    member_label,
    plain_code,
    upper_code,
)
from scrm.audit import Actor
from scrm.masking import mask_mobile

from . import privacy
from .consent import publish_privacy_notice, purposes_added
from .exports import CONSENT_RECORD_COLUMNS, MEMBER_COLUMNS, ORDER_COLUMNS, POINTS_ENTRY_COLUMNS
from .models import (
    Channel,
    ConsentRecord,
    DataSubjectRequest,
    ExternalIdentity,
    GuideAssignment,
    LifecycleSettings,
    LifecycleTransition,
    Member,
    MemberTag,
    Order,
    OrderLine,
    PointsEntry,
    PrivacyNotice,
    RfmBinEdges,
    RfmSettings,
    Tag,
    Tier,
)
from .phones import normalize_mobile
from .resources import MemberResource
from .services import (
    EDITABLE_MEMBER_FIELDS,
    add_points,
    assign_guide,
    create_member,
    record_consent,
    tag_member,
    untag_member,
    update_member,
)

FULL_MOBILE_PERMISSION = "members.view_full_mobile"
EXPORT_PERMISSION = "members.export"


def _upper(value: str) -> str:
    return value.strip().upper()


def store_code_filter(lookup: str) -> type:
    return input_filter(_("store code"), "store", lookup, clean=_upper)


def employee_no_filter(lookup: str) -> type:
    return input_filter(_("employee number"), "guide", lookup)


class MemberColumnMixin:
    """A ``member`` column and read-only field that link to the member and never show a full mobile."""

    @admin.display(description=_("member"))
    def member_link(self, obj: Any) -> str:
        if obj.member_id is None:
            return "-"
        url = reverse("admin:members_member_change", args=[obj.member_id])
        return format_html('<a href="{}">{}</a>', url, member_label(obj.member))


# --------------------------------------------------------------------------------------------------
# Reference data


@admin.register(Tier)
class TierAdmin(ScrmModelAdmin):
    list_display = ("code", "name", "rank", "threshold")
    list_display_links = ("code", "name")
    search_fields = ("code", "name")


@admin.register(Tag)
class TagAdmin(ScrmModelAdmin):
    list_display = ("name", "group", "description")
    list_filter = ("group",)
    search_fields = ("name", "group")


# --------------------------------------------------------------------------------------------------
# Member


class MemberAdminForm(forms.ModelForm):
    """Checks the service would refuse, made here so they come back as form errors."""

    class Meta:
        model = Member
        fields = ("mobile", "name", "gender", "birthday", "home_store", "guide", "tier", "join_channel")

    def clean_mobile(self) -> str:
        return normalize_mobile(self.cleaned_data["mobile"])

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        guide = cleaned.get("guide")
        home_store = cleaned.get("home_store") or getattr(self.instance, "home_store", None)
        if guide is not None and home_store is not None:
            if guide.store_id != home_store.pk:
                self.add_error("guide", gettext("The guide must work in the member's home store."))
            elif not guide.is_active_staff and "guide" in self.changed_data:
                self.add_error(
                    "guide", gettext("%(guide)s has left and cannot take members.") % {"guide": guide}
                )
        return cleaned


class MemberTagInline(LatestRowsInline):
    """Tags are added and removed through the tagging service (see ``MemberAdmin.save_formset``)."""

    model = MemberTag
    fields = ("tag", "source", "added_by", "added_at")
    readonly_fields = ("source", "added_by", "added_at")
    autocomplete_fields = ("tag",)
    latest_rows = 50
    show_change_link = False
    classes = ("scrm-hide-original",)  # a row's own label is just two ids

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # a tag row is added or removed, never edited

    def get_queryset(self, request: HttpRequest) -> QuerySet[MemberTag]:
        queryset = super().get_queryset(request)
        return queryset.select_related("tag", "added_by").order_by("-added_at", "-id")


class ExternalIdentityInline(ReadOnlyLatestRowsInline):
    model = ExternalIdentity
    fields = ("platform", "external_id", "linked_at")
    latest_rows = 20

    def get_queryset(self, request: HttpRequest) -> QuerySet[ExternalIdentity]:
        return super().get_queryset(request).order_by("-linked_at", "-id")


class OrderInline(ReadOnlyLatestRowsInline):
    model = Order
    fields = (
        "external_no",
        "channel",
        "paid_at",
        "store",
        "amount",
        "refunded_amount",
        "item_count",
        "status",
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[Order]:
        return super().get_queryset(request).select_related("store")


class PointsEntryInline(ReadOnlyLatestRowsInline):
    model = PointsEntry
    fields = ("created_at", "kind", "delta", "reason", "ref", "expires_at", "actor")

    def get_queryset(self, request: HttpRequest) -> QuerySet[PointsEntry]:
        return super().get_queryset(request).select_related("actor")


class ConsentRecordInline(ReadOnlyLatestRowsInline):
    model = ConsentRecord
    fields = ("at", "channel", "purpose", "action", "source", "method", "policy_version", "actor")

    def get_queryset(self, request: HttpRequest) -> QuerySet[ConsentRecord]:
        return super().get_queryset(request).select_related("actor")


class GuideAssignmentInline(ReadOnlyLatestRowsInline):
    model = GuideAssignment
    fields = ("started_at", "ended_at", "guide", "reason", "actor")
    show_change_link = False
    classes = ("scrm-hide-original",)  # a row's own label is just two ids

    def get_queryset(self, request: HttpRequest) -> QuerySet[GuideAssignment]:
        return super().get_queryset(request).select_related("guide", "actor")


class LifecycleTransitionInline(ReadOnlyLatestRowsInline):
    model = LifecycleTransition
    fields = ("at", "from_stage", "to_stage", "recorded_at")
    show_change_link = False
    classes = ("scrm-hide-original",)  # a row's own label is just ids


METRIC_FIELDS = (
    "points_balance",
    "lifecycle_stage",
    "rfm_cell",
    "order_count",
    "orders_12m",
    "spend_12m",
    "total_spend",
    "avg_order_value",
    "first_purchase_at",
    "last_purchase_at",
    "metrics_updated_at",
)
CONSENT_FIELDS = ("consent_sms", "consent_call", "consent_wecom", "consent_email")


@admin.register(Member)
class MemberAdmin(BackgroundExportMixin, ExportMixin, ScrmModelAdmin):
    form = MemberAdminForm
    # Background export (any size, streamed); the import-export "Export" button stays for quick
    # exports with a choice of columns.
    export_columns = MEMBER_COLUMNS
    export_permission = EXPORT_PERMISSION
    # What HQ needs to recognise a member at a glance; channel, status and order counts are filters
    # and on the member page. Every column is a cell per row to render: the list's main cost.
    list_display = (
        "name",
        "mobile_masked",
        "home_store",
        "guide",
        "tier",
        "lifecycle_stage",
        "points_balance",
        "last_purchase_at",
        "joined_at",
    )
    list_select_related = ("home_store", "guide", "tier")
    # Only columns an index can sort; any other sort is a sort of the whole table.
    sortable_by = ("mobile", "mobile_masked", "joined_at", "last_purchase_at")
    # Store and guide are text boxes (thousands of rows would be loaded to draw them as lists);
    # tiers and regions are a handful of rows, so they stay ordinary lists.
    list_filter = (
        "tier",
        "lifecycle_stage",
        store_code_filter("home_store__code"),
        "home_store__region",
        employee_no_filter("guide__employee_no"),
        "join_channel",
        "status",
    )
    search_fields = ("mobile", "name", "home_store__code", "guide__employee_no")
    search_help_text = _(
        "A full mobile number in any format, a store code, a guide's employee number, "
        "or the beginning of the member's name."
    )
    indexed_search = IndexedSearch(
        mobile=("mobile",),
        exact=(key("home_store__code", upper_code), key("guide__employee_no", plain_code)),
        prefix=("name",),
    )
    autocomplete_fields = ("home_store", "guide")
    inlines = (
        MemberTagInline,
        OrderInline,
        PointsEntryInline,
        ConsentRecordInline,
        GuideAssignmentInline,
        LifecycleTransitionInline,
        ExternalIdentityInline,
    )

    # Export (django-import-export): XLSX and CSV, masked unless allowed, audited.
    resource_classes = [MemberResource]
    export_formats = [base_formats.XLSX, base_formats.CSV]
    to_encoding = "utf-8-sig"  # the BOM makes Excel read a CSV's Chinese text as UTF-8

    # Mobile numbers -------------------------------------------------------------------------------

    @admin.display(description=Member._meta.get_field("mobile").verbose_name, ordering="mobile")
    def mobile_masked(self, member: Member) -> str:
        return mask_mobile(member.mobile)

    def _sees_full_mobile(self, request: HttpRequest) -> bool:
        return request.user.has_perm(FULL_MOBILE_PERMISSION)

    def get_list_display(self, request: HttpRequest) -> Sequence[str]:
        columns = list(super().get_list_display(request))
        if self._sees_full_mobile(request):
            columns[columns.index("mobile_masked")] = "mobile"
        return columns

    def get_list_display_links(self, request: HttpRequest, list_display: Sequence[str]) -> Sequence[str]:
        return ("mobile" if "mobile" in list_display else "mobile_masked",)  # never empty, unlike name

    # Change form ----------------------------------------------------------------------------------

    def get_fieldsets(self, request: HttpRequest, obj: Member | None = None) -> Any:
        # Creating needs the number typed in; an existing one shows only as far as the user may see it.
        mobile = "mobile" if obj is None or self._sees_full_mobile(request) else "mobile_masked"
        membership = ["home_store", "guide", "tier", "join_channel", "joined_at"]
        if obj is None:
            return (
                (None, {"fields": (mobile, "name", "gender", "birthday")}),
                (_("Membership"), {"fields": membership}),
            )
        return (
            (None, {"fields": (mobile, "name", "gender", "birthday")}),
            (_("Membership"), {"fields": [*membership, "status"]}),
            (_("Metrics"), {"fields": METRIC_FIELDS}),
            (_("Marketing consent"), {"fields": CONSENT_FIELDS}),
            (_("Record"), {"fields": ("created_at", "updated_at")}),
        )

    def get_readonly_fields(self, request: HttpRequest, obj: Member | None = None) -> Sequence[str]:
        if obj is None:
            return ()
        # joined_at and status are not attributes update_member changes (status: merge/erasure flows).
        return (
            "mobile_masked",
            "joined_at",
            "status",
            *METRIC_FIELDS,
            *CONSENT_FIELDS,
            "created_at",
            "updated_at",
        )

    def get_form(
        self, request: HttpRequest, obj: Member | None = None, change: bool = False, **kwargs: Any
    ) -> type[forms.ModelForm]:
        form = super().get_form(request, obj, change=change, **kwargs)
        if obj is None and "joined_at" in form.base_fields:
            form.base_fields["joined_at"].required = False
            form.base_fields["joined_at"].help_text = gettext("Leave empty for now.")
        return form

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Member | None = None,
    ) -> Any:
        if obj is not None:
            # The page title and breadcrumb name the member; str(member) may be the full number.
            shown = obj.mobile if self._sees_full_mobile(request) else mask_mobile(obj.mobile)
            context["subtitle"] = obj.name or shown
        return super().render_change_form(request, context, add, change, form_url, obj)

    def get_inlines(self, request: HttpRequest, obj: Member | None) -> Sequence[type]:
        return self.inlines if obj is not None else ()

    def has_delete_permission(self, request: HttpRequest, obj: Member | None = None) -> bool:
        return False  # erasing a member is a data-subject request, not a delete button

    # Writes through the services ------------------------------------------------------------------

    def save_model(self, request: HttpRequest, obj: Member, form: forms.ModelForm, change: bool) -> None:
        actor = Actor.from_request(request)
        data = form.cleaned_data
        if not change:
            member = create_member(
                mobile=data["mobile"],
                home_store=data["home_store"],
                actor=actor,
                name=data.get("name") or "",
                gender=data.get("gender") or Member.Gender.UNKNOWN,
                birthday=data.get("birthday"),
                joined_at=data.get("joined_at"),
                join_channel=data.get("join_channel") or Channel.STORE,
                tier=data.get("tier"),
                guide=data.get("guide"),
            )
            # The admin goes on with the form's instance (messages, redirect): make it the saved row.
            obj.pk = member.pk
            obj._state.adding = False
            obj._state.db = member._state.db
            return
        editable = EDITABLE_MEMBER_FIELDS | {"mobile"}
        values = {name: data[name] for name in form.changed_data if name in editable}
        if values:
            update_member(obj, actor=actor, **values)
        if "guide" in form.changed_data:
            assign_guide(obj, data["guide"], actor=actor, reason=GuideAssignment.Reason.HQ)

    def save_formset(self, request: HttpRequest, form: forms.ModelForm, formset: Any, change: bool) -> None:
        if formset.model is not MemberTag:
            super().save_formset(request, form, formset, change)
            return
        formset.save(commit=False)
        actor = Actor.from_request(request)
        member = form.instance
        for member_tag in formset.deleted_objects:
            untag_member(member, member_tag.tag, actor=actor)
        for member_tag in formset.new_objects:
            tag_member(member, member_tag.tag, source=MemberTag.Source.HQ, actor=actor)

    # Export -----------------------------------------------------------------------------------------

    def has_export_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(EXPORT_PERMISSION)

    def get_export_resource_kwargs(self, request: HttpRequest, **kwargs: Any) -> dict[str, Any]:
        return {"user": request.user}

    def get_data_for_export(self, request: HttpRequest, queryset: QuerySet[Member], **kwargs: Any) -> Any:
        dataset = super().get_data_for_export(request, queryset, **kwargs)
        # Looking at personal data in bulk is itself audited: who, how many rows, under which filters.
        audit.record(
            Actor.from_request(request),
            "member.exported",
            target_type=Member._meta.label_lower,
            target_id="",
            changes={
                "rows": len(dataset),
                "filters": dict(request.GET.lists()),
                "columns": list(dataset.headers or []),
                "full_mobile": self._sees_full_mobile(request),
            },
        )
        return dataset


# --------------------------------------------------------------------------------------------------
# Rows hung on a member


MEMBER_SEARCH_HELP = _("A member's full mobile number, in any format.")


@admin.register(MemberTag)
class MemberTagAdmin(MemberColumnMixin, ScrmModelAdmin):
    list_display = ("member_link", "tag", "source", "added_by", "added_at")
    list_display_links = ("tag",)
    list_select_related = ("member", "tag", "added_by")
    list_filter = ("source", input_filter(_("tag"), "tag", "tag__name"))
    search_fields = ("member__mobile", "tag__name")
    search_help_text = _("A member's full mobile number, or a tag's exact name.")
    indexed_search = IndexedSearch(mobile=("member__mobile",), exact=(key("tag__name", str.strip),))
    autocomplete_fields = ("member", "tag")
    sortable_by = ("added_at",)

    def get_fields(self, request: HttpRequest, obj: MemberTag | None = None) -> Sequence[str]:
        return ("member", "tag") if obj is None else ("member_link", "tag", "source", "added_by", "added_at")

    def get_readonly_fields(self, request: HttpRequest, obj: MemberTag | None = None) -> Sequence[str]:
        return () if obj is None else self.get_fields(request, obj)

    def has_change_permission(self, request: HttpRequest, obj: MemberTag | None = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: MemberTag, form: forms.ModelForm, change: bool) -> None:
        saved = tag_member(obj.member, obj.tag, source=MemberTag.Source.HQ, actor=Actor.from_request(request))
        obj.pk, obj._state.adding = saved.pk, False

    def delete_model(self, request: HttpRequest, obj: MemberTag) -> None:
        untag_member(obj.member, obj.tag, actor=Actor.from_request(request))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[MemberTag]) -> None:
        actor = Actor.from_request(request)
        for member_tag in queryset.select_related("member", "tag"):
            untag_member(member_tag.member, member_tag.tag, actor=actor)


@admin.register(ExternalIdentity)
class ExternalIdentityAdmin(MemberColumnMixin, ScrmModelAdmin):
    list_display = ("external_id", "platform", "member_link", "linked_at")
    list_select_related = ("member",)
    list_filter = ("platform",)
    search_fields = ("external_id", "member__mobile")
    search_help_text = _("A platform id, or a member's full mobile number.")
    indexed_search = IndexedSearch(
        mobile=("member__mobile",),
        # platform leads the unique (platform, external_id) index; naming every platform uses it.
        exact=(key("external_id", plain_code, platform__in=ExternalIdentity.Platform.values),),
    )
    autocomplete_fields = ("member",)
    sortable_by = ()

    def get_fields(self, request: HttpRequest, obj: ExternalIdentity | None = None) -> Sequence[str]:
        return (
            ("member", "platform", "external_id")
            if obj is None
            else ("member_link", "platform", "external_id", "linked_at")
        )

    def get_readonly_fields(self, request: HttpRequest, obj: ExternalIdentity | None = None) -> Sequence[str]:
        return () if obj is None else ("member_link", "linked_at")


class PointsEntryForm(forms.ModelForm):
    class Meta:
        model = PointsEntry
        fields = ("member", "kind", "delta", "reason", "ref", "expires_at")

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        member, delta = cleaned.get("member"), cleaned.get("delta")
        if member is not None and delta and member.points_balance + delta < 0:
            self.add_error("delta", gettext("Not enough points: the balance cannot go below zero."))
        return cleaned


@admin.register(PointsEntry)
class PointsEntryAdmin(BackgroundExportMixin, MemberColumnMixin, AppendOnlyAdmin):
    """The points ledger. Adding a movement calls ``add_points``; rows never change."""

    export_columns = POINTS_ENTRY_COLUMNS
    export_permission = EXPORT_PERMISSION
    add_through_service = True
    form = PointsEntryForm
    list_display = ("created_at", "member_link", "kind", "delta", "reason", "ref", "expires_at", "actor")
    list_display_links = ("created_at",)
    list_select_related = ("member", "actor")
    list_filter = ("kind",)
    search_fields = ("member__mobile",)
    search_help_text = MEMBER_SEARCH_HELP
    indexed_search = IndexedSearch(mobile=("member__mobile",))
    autocomplete_fields = ("member",)
    sortable_by = ("created_at",)

    def get_fields(self, request: HttpRequest, obj: PointsEntry | None = None) -> Sequence[str]:
        if obj is None:
            return ("member", "kind", "delta", "reason", "ref", "expires_at")
        return ("created_at", "member_link", "kind", "delta", "reason", "ref", "expires_at", "actor")

    def get_readonly_fields(self, request: HttpRequest, obj: PointsEntry | None = None) -> Sequence[str]:
        return () if obj is None else self.get_fields(request, obj)

    def save_model(self, request: HttpRequest, obj: PointsEntry, form: forms.ModelForm, change: bool) -> None:
        data = form.cleaned_data
        entry = add_points(
            data["member"],
            delta=data["delta"],
            kind=data["kind"],
            actor=Actor.from_request(request),
            reason=data.get("reason") or "",
            ref=data.get("ref") or "",
            expires_at=data.get("expires_at"),
        )
        obj.pk, obj._state.adding = entry.pk, False


class ConsentRecordForm(forms.ModelForm):
    class Meta:
        model = ConsentRecord
        fields = (
            "member",
            "channel",
            "purpose",
            "action",
            "method",
            "policy_version",
            "evidence",
            "store",
            "at",
        )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "at" in self.fields:  # the add form; existing records are read-only
            self.fields["at"].required = False
            self.fields["at"].help_text = gettext(
                "When the member gave or withdrew consent; empty means now."
            )


@admin.register(ConsentRecord)
class ConsentRecordAdmin(BackgroundExportMixin, MemberColumnMixin, AppendOnlyAdmin):
    """The consent ledger. Recording consent calls ``record_consent`` (source: HQ admin)."""

    export_columns = CONSENT_RECORD_COLUMNS
    export_permission = EXPORT_PERMISSION
    add_through_service = True
    form = ConsentRecordForm
    list_display = ("at", "member_link", "channel", "purpose", "action", "source", "method", "policy_version")
    list_display_links = ("at",)
    list_select_related = ("member",)
    list_filter = ("channel", "purpose", "action", "source", "method")
    search_fields = ("member__mobile",)
    search_help_text = MEMBER_SEARCH_HELP
    indexed_search = IndexedSearch(mobile=("member__mobile",))
    autocomplete_fields = ("member", "store")
    sortable_by = ("at",)

    def get_fields(self, request: HttpRequest, obj: ConsentRecord | None = None) -> Sequence[str]:
        if obj is None:
            return ConsentRecordForm.Meta.fields
        return (
            "at",
            "member_link",
            "channel",
            "purpose",
            "action",
            "source",
            "method",
            "policy_version",
            "evidence",
            "store",
            "actor",
        )

    def get_readonly_fields(self, request: HttpRequest, obj: ConsentRecord | None = None) -> Sequence[str]:
        return () if obj is None else self.get_fields(request, obj)

    def save_model(
        self, request: HttpRequest, obj: ConsentRecord, form: forms.ModelForm, change: bool
    ) -> None:
        data = form.cleaned_data
        record = record_consent(
            data["member"],
            channel=data["channel"],
            action=data["action"],
            source=ConsentRecord.Source.HQ_ADMIN,
            actor=Actor.from_request(request),
            policy_version=data["policy_version"],
            purpose=data["purpose"],
            method=data["method"],
            evidence=data.get("evidence") or None,
            store=data.get("store"),
            at=data.get("at"),
        )
        obj.pk, obj._state.adding = record.pk, False


@admin.register(GuideAssignment)
class GuideAssignmentAdmin(MemberColumnMixin, AppendOnlyAdmin):
    """Who served a member when. Written by ``assign_guide`` (member page, off-boarding), read here."""

    list_display = ("member_link", "guide", "started_at", "ended_at", "reason", "actor")
    list_display_links = ("started_at",)
    list_select_related = ("member", "guide", "actor")
    list_filter = (
        "reason",
        ("ended_at", admin.EmptyFieldListFilter),
        employee_no_filter("guide__employee_no"),
    )
    search_fields = ("member__mobile", "guide__employee_no")
    search_help_text = _("A member's full mobile number, or a guide's employee number.")
    indexed_search = IndexedSearch(mobile=("member__mobile",), exact=(key("guide__employee_no", plain_code),))
    sortable_by = ("started_at",)
    fields = ("member_link", "guide", "started_at", "ended_at", "reason", "actor")
    readonly_fields = fields


# --------------------------------------------------------------------------------------------------
# Orders


class OrderLineInline(ScrmTabularInline):
    model = OrderLine
    fields = ("line_no", "sku", "name", "category", "quantity", "amount")
    readonly_fields = fields
    can_delete = False
    max_num = 0
    show_change_link = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Order)
class OrderAdmin(BackgroundExportMixin, MemberColumnMixin, AppendOnlyAdmin):
    """Orders arrive from the tills and shops (API, import); HQ reads them here and never edits them."""

    export_columns = ORDER_COLUMNS
    export_permission = EXPORT_PERMISSION
    list_display = (
        "external_no",
        "channel",
        "paid_at",
        "member_link",
        "store",
        "guide",
        "amount",
        "refunded_amount",
        "item_count",
        "status",
    )
    list_select_related = ("member", "store", "guide")
    list_filter = (
        "channel",
        "status",
        store_code_filter("store__code"),
        "store__region",
        employee_no_filter("guide__employee_no"),
    )
    search_fields = ("external_no", "member__mobile", "store__code")
    search_help_text = _("An order number, a member's full mobile number, or a store code.")
    indexed_search = IndexedSearch(
        mobile=("member__mobile",),
        # channel leads the unique (channel, external_no) index; naming every channel uses it.
        exact=(
            key("external_no", plain_code, channel__in=Channel.values),
            key("store__code", upper_code),
        ),
    )
    sortable_by = ("paid_at",)
    fields = (
        "external_no",
        "channel",
        "status",
        "paid_at",
        "member_link",
        "store",
        "guide",
        "amount",
        "refunded_amount",
        "item_count",
        "created_at",
    )
    readonly_fields = fields
    inlines = (OrderLineInline,)


# --------------------------------------------------------------------------------------------------
# Data-subject requests (PIPL): opened here, closed only through the privacy services


class OverdueFilter(admin.SimpleListFilter):
    title = _("overdue")
    parameter_name = "overdue"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> Sequence[tuple[str, str]]:
        return (("yes", _("Overdue")), ("no", _("Not overdue")))

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        overdue = Q(status=DataSubjectRequest.Status.RECEIVED, due_at__lt=timezone.now())
        if self.value() == "yes":
            return queryset.filter(overdue)
        if self.value() == "no":
            return queryset.exclude(overdue)
        return queryset


class DataSubjectRequestForm(forms.ModelForm):
    class Meta:
        model = DataSubjectRequest
        fields = ("member", "kind", "channel", "details")

    def clean_member(self) -> Member:
        member = self.cleaned_data["member"]
        if member.status == Member.Status.ERASED:
            raise forms.ValidationError(gettext("This member's personal data has already been erased."))
        return member


class CorrectionForm(forms.Form):
    """The member's personal fields as they should be; only what the operator changes is corrected."""

    mobile = forms.CharField(
        label=capfirst(Member._meta.get_field("mobile").verbose_name),
        required=False,
        help_text=_("Leave empty to keep the number."),
    )
    name = forms.CharField(label=capfirst(Member._meta.get_field("name").verbose_name), required=False)
    gender = forms.ChoiceField(
        label=capfirst(Member._meta.get_field("gender").verbose_name), choices=Member.Gender.choices
    )
    birthday = forms.DateField(
        label=capfirst(Member._meta.get_field("birthday").verbose_name), required=False
    )

    def clean_mobile(self) -> str:
        value = self.cleaned_data["mobile"].strip()
        return normalize_mobile(value) if value else ""

    def corrections(self) -> dict[str, Any]:
        changes = {name: self.cleaned_data[name] for name in self.changed_data}
        if not changes.get("mobile"):
            changes.pop("mobile", None)  # empty means "keep the number"
        return changes


class RejectionForm(forms.Form):
    outcome = forms.CharField(
        label=_("Why is the request rejected?"), widget=forms.Textarea(attrs={"rows": 3})
    )


JSON = "application/json"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


@admin.register(DataSubjectRequest)
class DataSubjectRequestAdmin(MemberColumnMixin, ScrmModelAdmin):
    """Access, correction and erasure requests, tracked to their due date.

    HQ operators open requests and answer access and correction requests; erasing needs the right
    to delete members (HQ administrators); the audit officer reads. A request is never edited: it is
    opened by ``open_data_request`` and closed by one of the actions, each a service.
    """

    form = DataSubjectRequestForm
    list_display = (
        "__str__",
        "member_link",
        "kind",
        "status",
        "received_at",
        "due",
        "channel",
        "received_by",
        "handled_by",
        "completed_at",
    )
    list_display_links = ("__str__",)
    list_select_related = ("member", "received_by", "handled_by")
    list_filter = ("kind", "status", OverdueFilter, "channel")
    search_fields = ("member__mobile",)
    search_help_text = MEMBER_SEARCH_HELP
    indexed_search = IndexedSearch(mobile=("member__mobile",))
    autocomplete_fields = ("member",)
    sortable_by = ("received_at", "due")
    actions = (
        "download_access_xlsx",
        "download_access_json",
        "correct_selected",
        "erase_selected",
        "reject_selected",
    )
    action_template = "admin/members/datasubjectrequest/action_form.html"

    def get_fields(self, request: HttpRequest, obj: DataSubjectRequest | None = None) -> Sequence[str]:
        if obj is None:
            return DataSubjectRequestForm.Meta.fields
        return (
            "member_link",
            "kind",
            "status",
            "channel",
            "details",
            "received_at",
            "due_at",
            "received_by",
            "handled_by",
            "completed_at",
            "outcome",
        )

    def get_readonly_fields(
        self, request: HttpRequest, obj: DataSubjectRequest | None = None
    ) -> Sequence[str]:
        return () if obj is None else self.get_fields(request, obj)

    @admin.display(description=DataSubjectRequest._meta.get_field("due_at").verbose_name, ordering="due_at")
    def due(self, obj: DataSubjectRequest) -> str:
        shown = date_format(timezone.localtime(obj.due_at), "SHORT_DATETIME_FORMAT")
        if obj.status == DataSubjectRequest.Status.RECEIVED and obj.due_at < timezone.now():
            return format_html(
                '<strong class="scrm-overdue" style="color: #ba2121">{} · {}</strong>',
                shown,
                gettext("overdue"),
            )
        return shown

    # Permissions: a request changes only through the actions below --------------------------------

    def has_change_permission(self, request: HttpRequest, obj: DataSubjectRequest | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: DataSubjectRequest | None = None) -> bool:
        return False

    def has_handle_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("members.change_datasubjectrequest")

    def has_erase_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(privacy.ERASE_PERMISSION)

    def save_model(
        self, request: HttpRequest, obj: DataSubjectRequest, form: forms.ModelForm, change: bool
    ) -> None:
        data = form.cleaned_data
        created = privacy.open_data_request(
            data["member"],
            kind=data["kind"],
            channel=data["channel"],
            details=data.get("details") or "",
            actor=Actor.from_request(request),
        )
        obj.pk, obj._state.adding, obj._state.db = created.pk, False, created._state.db

    # Actions --------------------------------------------------------------------------------------

    def _only_one(self, request: HttpRequest, queryset: QuerySet[DataSubjectRequest]) -> Any:
        chosen = list(queryset.select_related("member")[:2])
        if len(chosen) != 1:
            self.message_user(request, gettext("Select exactly one request."), messages.ERROR)
            return None
        return chosen[0]

    def _refused(
        self, request: HttpRequest, data_request: DataSubjectRequest, error: ValidationError
    ) -> None:
        for message in error.messages:
            self.message_user(
                request,
                gettext("%(request)s: %(error)s") % {"request": data_request, "error": message},
                messages.ERROR,
            )

    def _download(self, request: HttpRequest, queryset: QuerySet[DataSubjectRequest], kind: str) -> Any:
        data_request = self._only_one(request, queryset)
        if data_request is None:
            return None
        try:
            package = privacy.complete_access_request(data_request, actor=Actor.from_request(request))
        except ValidationError as error:
            self._refused(request, data_request, error)
            return None
        if kind == "xlsx":
            body, content_type = privacy.access_package_xlsx(package), XLSX
        else:
            body, content_type = privacy.access_package_json(package), JSON
        response = HttpResponse(body, content_type=content_type)
        filename = f"access-package-{data_request.member_id}-{data_request.pk}.{kind}"
        response["Content-Disposition"] = content_disposition_header(True, filename)
        add_never_cache_headers(response)  # a copy of someone's personal data: no cache keeps it
        return response

    @admin.action(description=_("Download access package (xlsx)"), permissions=("handle",))
    def download_access_xlsx(self, request: HttpRequest, queryset: QuerySet[DataSubjectRequest]) -> Any:
        return self._download(request, queryset, "xlsx")

    @admin.action(description=_("Download access package (JSON)"), permissions=("handle",))
    def download_access_json(self, request: HttpRequest, queryset: QuerySet[DataSubjectRequest]) -> Any:
        return self._download(request, queryset, "json")

    def _action_page(
        self,
        request: HttpRequest,
        requests: Sequence[DataSubjectRequest],
        *,
        action: str,
        title: str,
        intro: str,
        button: str,
        form: forms.Form | None = None,
        danger: bool = False,
    ) -> TemplateResponse:
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": title,
            "intro": intro,
            "button": button,
            "danger": danger,
            "form": form,
            "action": action,
            "rows": [(r, member_label(r.member)) for r in requests],
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "cancel_label": gettext("Cancel"),
        }
        return TemplateResponse(request, self.action_template, context)

    @admin.action(description=_("Correct the member's data…"), permissions=("handle",))
    def correct_selected(self, request: HttpRequest, queryset: QuerySet[DataSubjectRequest]) -> Any:
        data_request = self._only_one(request, queryset)
        if data_request is None:
            return None
        member = data_request.member
        initial = {
            "name": member.name,
            "gender": member.gender,
            "birthday": member.birthday,
            # An operator who may not see the full number types the new one in without seeing the old.
            "mobile": member.mobile if request.user.has_perm(FULL_MOBILE_PERMISSION) else "",
        }
        form = CorrectionForm(request.POST if "confirm" in request.POST else None, initial=initial)
        if form.is_bound and form.is_valid():
            try:
                privacy.correct_member(data_request, actor=Actor.from_request(request), **form.corrections())
            except ValidationError as error:
                self._refused(request, data_request, error)
                return None
            self.message_user(request, gettext("%(request)s is done.") % {"request": data_request})
            return None
        return self._action_page(
            request,
            [data_request],
            action="correct_selected",
            title=gettext("Correct the member's data"),
            intro=gettext("Change what the member asked to correct; the request is then closed."),
            button=gettext("Correct and close the request"),
            form=form,
        )

    @admin.action(description=_("Erase member…"), permissions=("erase",))
    def erase_selected(self, request: HttpRequest, queryset: QuerySet[DataSubjectRequest]) -> Any:
        requests = list(queryset.select_related("member").order_by("pk"))
        if "confirm" not in request.POST:
            return self._action_page(
                request,
                requests,
                action="erase_selected",
                title=gettext("Erase members"),
                intro=gettext(
                    "The name, mobile, birthday, gender, platform ids and tags of these members will be "
                    "removed, their guide unbound and every consent withdrawn. Orders, points and "
                    "metrics stay. This cannot be undone."
                ),
                button=gettext("Yes, erase"),
                danger=True,
            )
        actor = Actor.from_request(request)
        erased = 0
        for data_request in requests:
            try:
                privacy.erase_member(data_request, actor=actor)
            except ValidationError as error:
                self._refused(request, data_request, error)
            else:
                erased += 1
        if erased:
            self.message_user(
                request,
                ngettext("%(count)d member erased.", "%(count)d members erased.", erased) % {"count": erased},
            )
        return None

    @admin.action(description=_("Reject request…"), permissions=("handle",))
    def reject_selected(self, request: HttpRequest, queryset: QuerySet[DataSubjectRequest]) -> Any:
        requests = list(queryset.select_related("member").order_by("pk"))
        form = RejectionForm(request.POST if "confirm" in request.POST else None)
        if not (form.is_bound and form.is_valid()):
            return self._action_page(
                request,
                requests,
                action="reject_selected",
                title=gettext("Reject requests"),
                intro=gettext("The requests are closed without acting on them, with this reason."),
                button=gettext("Reject"),
                form=form,
            )
        actor = Actor.from_request(request)
        for data_request in requests:
            try:
                privacy.reject_data_request(data_request, actor=actor, outcome=form.cleaned_data["outcome"])
            except ValidationError as error:
                self._refused(request, data_request, error)
        return None


# --------------------------------------------------------------------------------------------------
# Privacy-notice versions: HQ publishes, nobody edits (grants are judged by the version they were made under)


class PrivacyNoticeForm(forms.ModelForm):
    purposes = forms.MultipleChoiceField(
        label=_("purposes"),
        choices=ConsentRecord.Purpose.choices,
        widget=forms.CheckboxSelectMultiple,
        help_text=_("A purpose the previous version did not ask for needs every member's consent again."),
    )

    class Meta:
        model = PrivacyNotice
        fields = ("version", "purposes", "summary")


@admin.register(PrivacyNotice)
class PrivacyNoticeAdmin(AppendOnlyAdmin):
    """Published notice versions, read-only; adding one calls ``publish_privacy_notice`` (audited)."""

    add_through_service = True
    form = PrivacyNoticeForm
    list_display = ("version", "purpose_labels", "published_at")
    search_fields = ("version",)
    sortable_by = ("published_at",)

    @admin.display(description=_("purposes"))
    def purpose_labels(self, obj: PrivacyNotice) -> str:
        labels = dict(ConsentRecord.Purpose.choices)
        return ", ".join(str(labels.get(p, p)) for p in obj.purposes)

    def get_fields(self, request: HttpRequest, obj: PrivacyNotice | None = None) -> Sequence[str]:
        if obj is None:
            return PrivacyNoticeForm.Meta.fields
        return ("version", "purpose_labels", "published_at", "summary")

    def get_readonly_fields(self, request: HttpRequest, obj: PrivacyNotice | None = None) -> Sequence[str]:
        return () if obj is None else self.get_fields(request, obj)

    def save_model(
        self, request: HttpRequest, obj: PrivacyNotice, form: forms.ModelForm, change: bool
    ) -> None:
        data = form.cleaned_data
        notice = publish_privacy_notice(
            data["version"], data["purposes"], data.get("summary") or "", actor=Actor.from_request(request)
        )
        obj.pk, obj._state.adding = notice.pk, False
        added = purposes_added(notice)
        if added:
            labels = dict(ConsentRecord.Purpose.choices)
            self.message_user(
                request,
                gettext("Consent must be asked again for: %(purposes)s.")
                % {"purposes": ", ".join(str(labels[p]) for p in added)},
                messages.WARNING,
            )


# --------------------------------------------------------------------------------------------------
# Member intelligence: HQ's lifecycle and RFM settings, the stage history, the RFM edges


class SingletonSettingsAdmin(SingletonAdmin):
    """One settings row, never deleted; the add form edits the row once it exists.

    Saving is audited like any reference data and queues a full metrics recompute after commit, so
    stages and cells follow the new settings without waiting for the night.
    """

    list_display = ("__str__", "updated_at")

    def save_model(self, request: HttpRequest, obj: Any, form: forms.BaseForm, change: bool) -> None:
        super().save_model(request, obj, form, change)
        if form.has_changed():
            from .tasks import recompute_member_metrics_task

            transaction.on_commit(recompute_member_metrics_task.delay)
            self.message_user(
                request, gettext("Member stages and RFM cells are being recomputed with the new settings.")
            )


@admin.register(LifecycleSettings)
class LifecycleSettingsAdmin(SingletonSettingsAdmin):
    fieldsets = (
        (_("Activity"), {"fields": ("dormant_after_days", "lost_after_days")}),
        (_("Advocates"), {"fields": ("advocate_min_orders_12m", "advocate_min_spend_12m", "advocate_tag")}),
    )
    autocomplete_fields = ("advocate_tag",)


@admin.register(RfmSettings)
class RfmSettingsAdmin(SingletonSettingsAdmin):
    fields = ("bins", "partition")


@admin.register(RfmBinEdges)
class RfmBinEdgesAdmin(AppendOnlyAdmin):
    """The edges the nightly run cut, to answer "why is this member a 5 on monetary?"."""

    list_display = ("scope", "scope_id", "buyers", "frequency", "monetary", "computed_at")
    list_filter = ("scope",)
    fields = ("scope", "scope_id", "buyers", "recency", "frequency", "monetary", "computed_at")
    readonly_fields = fields


@admin.register(LifecycleTransition)
class LifecycleTransitionAdmin(MemberColumnMixin, AppendOnlyAdmin):
    """Every change of stage, dated; written by the metrics refresh, read here."""

    list_display = ("member_link", "from_stage", "to_stage", "at", "recorded_at")
    list_display_links = ("at",)
    list_select_related = ("member",)
    list_filter = ("to_stage", "from_stage", ("at", admin.DateFieldListFilter))
    search_fields = ("member__mobile",)
    search_help_text = _("A member's full mobile number.")
    indexed_search = IndexedSearch(mobile=("member__mobile",))
    sortable_by = ("at",)
    date_hierarchy = None
    fields = ("member_link", "from_stage", "to_stage", "at", "recorded_at")
    readonly_fields = fields
