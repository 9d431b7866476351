"""HQ admin for the organisation: regions, stores and their staff.

Stores and guides are reference data HQ maintains by hand; saves and deletions are audited by
``ScrmModelAdmin``. Off-boarding a guide (handing their members over) is a workbench flow, not an edit here.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _

from scrm.admin_base import (
    IndexedSearch,
    ScrmModelAdmin,
    ScrmTabularInline,
    input_filter,
    key,
    plain_code,
    upper_code,
)

from .models import Guide, Region, Store


@admin.register(Region)
class RegionAdmin(ScrmModelAdmin):
    list_display = ("code", "name", "store_count")
    search_fields = ("code", "name")  # a handful of rows: the stock search is fine here

    def get_queryset(self, request: HttpRequest) -> QuerySet[Region]:
        return super().get_queryset(request).annotate(_store_count=Count("stores"))

    @admin.display(description=_("stores"), ordering="_store_count")
    def store_count(self, region: Region) -> int:
        return region._store_count


class GuideInline(ScrmTabularInline):
    """The store's staff, read-only: staff are edited on their own page."""

    model = Guide
    fields = ("employee_no", "name", "position", "status", "mobile", "joined_on", "left_on")
    readonly_fields = fields
    can_delete = False
    max_num = 0

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Store)
class StoreAdmin(ScrmModelAdmin):
    list_display = ("code", "name", "region", "province", "city", "status", "opened_on")
    list_display_links = ("code", "name")
    list_select_related = ("region",)
    list_filter = ("region", "status", input_filter(_("city"), "city", "city"))
    search_fields = ("code", "name", "city")
    search_help_text = _("Store code (or its beginning), or the beginning of the store's name or city.")
    # Store codes are stored upper-case and unique (so indexed for prefixes too); a few thousand rows.
    indexed_search = IndexedSearch(prefix=("name", "city"))
    inlines = (GuideInline,)

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Store], search_term: str
    ) -> tuple[QuerySet[Store], bool]:
        term = search_term.strip()
        code = upper_code(term)
        if code:
            # Typing part of a code (autocomplete: "SH0") should already narrow the list.
            by_code = queryset.filter(code__startswith=code)
            if by_code.exists():
                return by_code, False
        return super().get_search_results(request, queryset, search_term)


@admin.register(Guide)
class GuideAdmin(ScrmModelAdmin):
    list_display = ("employee_no", "name", "store", "position", "status", "mobile", "joined_on", "left_on")
    list_display_links = ("employee_no", "name")
    list_select_related = ("store",)
    list_filter = (
        input_filter(_("store code"), "store", "store__code", clean=lambda v: v.strip().upper()),
        "store__region",
        "position",
        "status",
    )
    search_fields = ("employee_no", "name", "mobile", "store__code")
    search_help_text = _("Employee number, mobile, store code, or the beginning of the name.")
    indexed_search = IndexedSearch(
        mobile=("mobile",),
        exact=(key("employee_no", plain_code), key("store__code", upper_code)),
        prefix=("name",),
    )
    autocomplete_fields = ("user", "store")
    fieldsets = (
        (None, {"fields": ("user", "store", "employee_no", "name", "mobile", "position")}),
        (_("Employment"), {"fields": ("status", "joined_on", "left_on")}),
    )

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Guide], search_term: str
    ) -> tuple[QuerySet[Guide], bool]:
        queryset, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        if request.path.endswith("/autocomplete/"):
            # Picking someone's exclusive guide: only staff still working can take members.
            queryset = queryset.filter(status=Guide.Status.ACTIVE)
        return queryset, may_have_duplicates
