"""Excel/CSV column mappings for members (django-import-export). Mapping only: no business logic here.

Headers are the models' verbose names, so an export reads in the user's language (Chinese by default).
Personal data leaves masked unless the exporting user may see it, and no cell can start a formula.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Model, QuerySet
from import_export import resources
from import_export.fields import Field

from scrm.masking import mask_mobile
from stores.models import Guide, Store

from .models import Member

# A spreadsheet treats a cell starting with one of these as a formula (CSV injection): "=HYPERLINK(…)".
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def neutralise_formula(value: Any) -> Any:
    """Text that a spreadsheet would run as a formula gets a leading apostrophe; other values pass."""
    if isinstance(value, str) and value.startswith(FORMULA_TRIGGERS):
        return "'" + value
    return value


def _header(model: type[Model], field: str) -> Any:
    return model._meta.get_field(field).verbose_name


def _member_field(name: str, **kwargs: Any) -> Field:
    return Field(attribute=name, column_name=_header(Member, name), **kwargs)


class MemberResource(resources.ModelResource):
    """One row per member for HQ. Build with ``user=`` so the mobile is shown only to those allowed."""

    mobile = _member_field("mobile")
    name = _member_field("name")
    gender = _member_field("gender")
    birthday = _member_field("birthday")
    home_store_code = Field(attribute="home_store__code", column_name=_header(Store, "code"))
    home_store = Field(attribute="home_store__name", column_name=_header(Member, "home_store"))
    region = Field(attribute="home_store__region__name", column_name=_header(Store, "region"))
    guide_employee_no = Field(attribute="guide__employee_no", column_name=_header(Guide, "employee_no"))
    guide = Field(attribute="guide__name", column_name=_header(Member, "guide"))
    tier = Field(attribute="tier__name", column_name=_header(Member, "tier"))
    points_balance = _member_field("points_balance")
    joined_at = _member_field("joined_at")
    join_channel = _member_field("join_channel")
    status = _member_field("status")
    lifecycle_stage = _member_field("lifecycle_stage")
    rfm_cell = _member_field("rfm_cell")
    first_purchase_at = _member_field("first_purchase_at")
    last_purchase_at = _member_field("last_purchase_at")
    order_count = _member_field("order_count")
    spend_12m = _member_field("spend_12m")
    avg_order_value = _member_field("avg_order_value")
    consent_sms = _member_field("consent_sms")
    consent_call = _member_field("consent_call")
    consent_wecom = _member_field("consent_wecom")
    consent_email = _member_field("consent_email")

    class Meta:
        model = Member
        fields = (
            "mobile",
            "name",
            "gender",
            "birthday",
            "home_store_code",
            "home_store",
            "region",
            "guide_employee_no",
            "guide",
            "tier",
            "points_balance",
            "joined_at",
            "join_channel",
            "status",
            "lifecycle_stage",
            "rfm_cell",
            "first_purchase_at",
            "last_purchase_at",
            "order_count",
            "spend_12m",
            "avg_order_value",
            "consent_sms",
            "consent_call",
            "consent_wecom",
            "consent_email",
        )
        export_order = fields
        import_id_fields = ("mobile",)
        chunk_size = 2000

    def __init__(self, user: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # No user (the export form builds resources to list columns) means masked: fail closed.
        self.show_full_mobile = bool(user is not None and user.has_perm("members.view_full_mobile"))

    def filter_export(self, queryset: QuerySet[Member], **kwargs: Any) -> QuerySet[Member]:
        # Every related column in one query per chunk, never one per row.
        return queryset.select_related("home_store__region", "guide", "tier")

    def export_field(self, field: Field, instance: Member, **kwargs: Any) -> Any:
        return neutralise_formula(super().export_field(field, instance, **kwargs))

    def dehydrate_mobile(self, member: Member) -> str:
        if not self.show_full_mobile:
            return mask_mobile(member.mobile)
        # Mainland numbers as people write them (13812345678); others keep their country code.
        return member.mobile[3:] if member.mobile.startswith("+86") else member.mobile

    def dehydrate_gender(self, member: Member) -> str:
        return str(member.get_gender_display())

    def dehydrate_join_channel(self, member: Member) -> str:
        return str(member.get_join_channel_display())

    def dehydrate_status(self, member: Member) -> str:
        return str(member.get_status_display())

    def dehydrate_lifecycle_stage(self, member: Member) -> str:
        return str(member.get_lifecycle_stage_display())
