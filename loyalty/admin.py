"""HQ admin for the loyalty rules: the programme, tier rules and benefits, coupon templates and coupons.

Coupons are issued and redeemed through ``loyalty.services`` only (the add form, the bulk-issue
action, the redeem action), so the admin leaves the same audit trail as campaigns and the API. The
points credited per order, the tier history and the nightly runs are read-only here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import ValidationError
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from members.models import Member, Tier
from members.phones import normalize_mobile
from scrm.admin_base import (
    AppendOnlyAdmin,
    IndexedSearch,
    ScrmModelAdmin,
    key,
    member_label,
    plain_code,
)
from scrm.audit import Actor
from stores.models import Store

from . import services
from .models import (
    Benefit,
    Coupon,
    CouponTemplate,
    LoyaltyProgram,
    LoyaltyRun,
    OrderPoints,
    TierChange,
    TierRule,
)


class MemberLinkMixin:
    """A ``member`` column that links to the member and never shows a full mobile number."""

    @admin.display(description=_("member"))
    def member_link(self, obj: Any) -> str:
        url = reverse("admin:members_member_change", args=[obj.member_id])
        return format_html('<a href="{}">{}</a>', url, member_label(obj.member))


# --------------------------------------------------------------------------------------------------
# Rules


@admin.register(LoyaltyProgram)
class LoyaltyProgramAdmin(ScrmModelAdmin):
    """One row of settings: the list goes straight to it."""

    list_display = (
        "__str__",
        "points_per_yuan",
        "points_expiry_months",
        "tier_basis",
        "tier_window_months",
        "downgrade_grace_days",
        "updated_at",
    )
    fieldsets = (
        (_("Points"), {"fields": ("points_per_yuan", "points_expiry_months")}),
        (_("Tiers"), {"fields": ("tier_basis", "tier_window_months", "downgrade_grace_days")}),
    )

    # Adding is allowed (no query on every admin page to decide it); once the row exists, the add page
    # is its change form.
    def add_view(
        self, request: HttpRequest, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        if LoyaltyProgram.objects.filter(pk=1).exists():
            return self.change_view(request, "1", form_url, extra_context)
        return super().add_view(request, form_url, extra_context)

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        # A list of one row is a detour: open the settings (or the form that first saves them).
        if LoyaltyProgram.objects.filter(pk=1).exists():
            return HttpResponseRedirect(reverse("admin:loyalty_loyaltyprogram_change", args=[1]))
        if self.has_add_permission(request):
            return HttpResponseRedirect(reverse("admin:loyalty_loyaltyprogram_add"))
        return super().changelist_view(request, extra_context)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def save_model(
        self, request: HttpRequest, obj: LoyaltyProgram, form: forms.ModelForm, change: bool
    ) -> None:
        obj.pk = 1  # the single row
        super().save_model(request, obj, form, change)


@admin.register(TierRule)
class TierRuleAdmin(ScrmModelAdmin):
    list_display = ("tier", "tier_rank", "spend_threshold", "points_threshold", "points_multiplier")
    list_select_related = ("tier",)
    fields = ("tier", "points_multiplier", "points_threshold")

    @admin.display(description=_("rank"), ordering="tier__rank")
    def tier_rank(self, rule: TierRule) -> int:
        return rule.tier.rank

    @admin.display(description=_("spend threshold (yuan)"))
    def spend_threshold(self, rule: TierRule) -> Any:
        return rule.tier.threshold


@admin.register(Benefit)
class BenefitAdmin(ScrmModelAdmin):
    list_display = ("name", "tier", "kind", "position", "active")
    list_display_links = ("name",)
    list_filter = ("tier", "kind", "active")
    list_select_related = ("tier",)
    search_fields = ("name",)
    fields = ("tier", "name", "kind", "description", "position", "active")


# --------------------------------------------------------------------------------------------------
# Coupons


class CouponTemplateForm(forms.ModelForm):
    class Meta:
        model = CouponTemplate
        fields = (
            "code",
            "name",
            "kind",
            "amount",
            "discount_percent",
            "min_spend",
            "valid_days",
            "valid_from",
            "valid_until",
            "per_member_limit",
            "active",
            "description",
        )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        kind = cleaned.get("kind")
        if kind == CouponTemplate.Kind.AMOUNT:
            if not cleaned.get("amount") or cleaned["amount"] <= 0:
                self.add_error("amount", gettext("An amount-off coupon needs an amount above zero."))
            cleaned["discount_percent"] = None
        elif kind == CouponTemplate.Kind.DISCOUNT:
            percent = cleaned.get("discount_percent")
            if percent is None or not 1 <= percent <= 99:
                self.add_error("discount_percent", gettext("A discount is a percentage between 1 and 99."))
            cleaned["amount"] = None
        if not cleaned.get("valid_days") and not cleaned.get("valid_until"):
            self.add_error("valid_days", gettext("Give a number of days after issue, an end date, or both."))
        start, end = cleaned.get("valid_from"), cleaned.get("valid_until")
        if start and end and end <= start:
            self.add_error("valid_until", gettext("The end must come after the start."))
        return cleaned


SEPARATORS = re.compile(r"[\s,;，；、]+")


class IssueCouponsForm(forms.Form):
    """Who gets a coupon in a bulk issue: members matching every criterion given."""

    tiers = forms.ModelMultipleChoiceField(
        label=_("tiers"), queryset=Tier.objects.all(), required=False, widget=forms.CheckboxSelectMultiple
    )
    stores = forms.CharField(
        label=_("home store codes"),
        required=False,
        help_text=_("Separated by commas or spaces; empty means every store."),
    )
    mobiles = forms.CharField(
        label=_("mobile numbers"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text=_("One or more, separated by commas, spaces or new lines; empty means no restriction."),
    )
    batch = forms.CharField(
        label=_("batch reference"),
        max_length=64,
        required=False,
        help_text=_("Issuing again with the same reference gives nobody a second coupon."),
    )

    def clean_stores(self) -> list[str]:
        codes = [code.upper() for code in SEPARATORS.split(self.cleaned_data["stores"]) if code]
        known = set(Store.objects.filter(code__in=codes).values_list("code", flat=True))
        unknown = [code for code in codes if code not in known]
        if unknown:
            raise ValidationError(gettext("Unknown store codes: %(codes)s") % {"codes": ", ".join(unknown)})
        return codes

    def clean_mobiles(self) -> list[str]:
        numbers, invalid = [], []
        for raw in SEPARATORS.split(self.cleaned_data["mobiles"]):
            if not raw:
                continue
            try:
                numbers.append(normalize_mobile(raw))
            except ValidationError:
                invalid.append(raw)
        if invalid:
            raise ValidationError(gettext("Not mobile numbers: %(values)s") % {"values": ", ".join(invalid)})
        return numbers

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if not self.errors and not (cleaned.get("tiers") or cleaned.get("stores") or cleaned.get("mobiles")):
            raise ValidationError(gettext("Choose at least one tier, store or mobile number."))
        return cleaned

    def members(self) -> QuerySet[Member]:
        data = self.cleaned_data
        condition = Q(status=Member.Status.ACTIVE)
        if data.get("tiers"):
            condition &= Q(tier__in=data["tiers"])
        if data.get("stores"):
            condition &= Q(home_store__code__in=data["stores"])
        if data.get("mobiles"):
            condition &= Q(mobile__in=data["mobiles"])
        return Member.objects.filter(condition)


@admin.register(CouponTemplate)
class CouponTemplateAdmin(ScrmModelAdmin):
    form = CouponTemplateForm
    list_display = (
        "code",
        "name",
        "kind",
        "value",
        "min_spend",
        "valid_days",
        "valid_until",
        "per_member_limit",
        "active",
    )
    list_display_links = ("code", "name")
    list_filter = ("kind", "active")
    search_fields = ("code", "name")
    actions = ("issue_to_members",)
    issue_template = "admin/loyalty/coupontemplate/issue.html"
    fieldsets = (
        (None, {"fields": ("code", "name", "description", "active")}),
        (_("Value"), {"fields": ("kind", "amount", "discount_percent", "min_spend")}),
        (_("Validity"), {"fields": ("valid_days", "valid_from", "valid_until", "per_member_limit")}),
    )

    @admin.display(description=_("value"))
    def value(self, template: CouponTemplate) -> str:
        if template.kind == CouponTemplate.Kind.AMOUNT:
            return gettext("%(amount)s yuan off") % {"amount": template.amount}
        return gettext("pay %(percent)s%%") % {"percent": template.discount_percent}

    @admin.action(description=_("Issue to members…"), permissions=("add",))
    def issue_to_members(self, request: HttpRequest, queryset: QuerySet[CouponTemplate]) -> Any:
        templates = list(queryset[:2])
        if len(templates) != 1:
            self.message_user(request, gettext("Choose exactly one coupon template."), messages.ERROR)
            return None
        template = templates[0]
        form = IssueCouponsForm(request.POST if "confirm" in request.POST else None)
        if form.is_bound and form.is_valid():
            try:
                issued = services.issue_coupons(
                    form.members(),
                    template,
                    actor=Actor.from_request(request),
                    source=Coupon.Source.BULK,
                    source_ref=form.cleaned_data["batch"],
                )
            except ValidationError as error:
                for message in error.messages:
                    self.message_user(request, message, messages.ERROR)
                return None
            self.message_user(
                request,
                ngettext(
                    "%(count)d coupon of %(template)s issued.",
                    "%(count)d coupons of %(template)s issued.",
                    issued,
                )
                % {"count": issued, "template": template.name},
                messages.SUCCESS,
            )
            return None
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": gettext("Issue %(template)s to members") % {"template": template.name},
            "template_obj": template,
            "form": form,
            "action": "issue_to_members",
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, self.issue_template, context)


class CouponAddForm(forms.ModelForm):
    class Meta:
        model = Coupon
        fields = ("member", "template", "source_ref")


def _code(term: str) -> str | None:
    value = plain_code(term)
    return services.normalize_coupon_code(value) if value else None


@admin.register(Coupon)
class CouponAdmin(MemberLinkMixin, AppendOnlyAdmin):
    """Coupons as issued; adding one issues it, the action redeems it; rows never change otherwise."""

    add_through_service = True
    form = CouponAddForm
    list_display = (
        "code",
        "member_link",
        "template",
        "status",
        "source",
        "issued_at",
        "expires_at",
        "redeemed_at",
        "redeemed_store",
    )
    list_display_links = ("code",)
    list_select_related = ("member", "template", "redeemed_store")
    list_filter = ("status", "source", "template")
    search_fields = ("code", "member__mobile")
    search_help_text = _("A coupon code or a member's full mobile number.")
    indexed_search = IndexedSearch(mobile=("member__mobile",), exact=(key("code", _code),))
    autocomplete_fields = ("member",)
    sortable_by = ("issued_at", "expires_at")
    actions = ("redeem_selected",)

    def get_fields(self, request: HttpRequest, obj: Coupon | None = None) -> Sequence[str]:
        if obj is None:
            return ("member", "template", "source_ref")
        return (
            "code",
            "member_link",
            "template",
            "status",
            "source",
            "source_ref",
            "issued_at",
            "valid_from",
            "expires_at",
            "issued_by",
            "redeemed_at",
            "redeemed_by",
            "redeemed_store",
            "redeemed_order_no",
        )

    def get_readonly_fields(self, request: HttpRequest, obj: Coupon | None = None) -> Sequence[str]:
        return () if obj is None else self.get_fields(request, obj)

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "template":
            kwargs["queryset"] = CouponTemplate.objects.filter(active=True)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def save_model(self, request: HttpRequest, obj: Coupon, form: forms.ModelForm, change: bool) -> None:
        data = form.cleaned_data
        code = services.issue_coupon(
            data["member"],
            data["template"],
            Actor.from_request(request),
            Coupon.Source.ADMIN,
            source_ref=data.get("source_ref") or "",
        )
        issued = Coupon.objects.get(code=code)
        obj.pk, obj.code, obj._state.adding = issued.pk, issued.code, False

    def has_redeem_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("loyalty.change_coupon")

    @admin.action(description=_("Redeem selected coupons"), permissions=("redeem",))
    def redeem_selected(self, request: HttpRequest, queryset: QuerySet[Coupon]) -> HttpResponse | None:
        actor = Actor.from_request(request)
        redeemed = 0
        for coupon in queryset.order_by("pk"):
            try:
                services.redeem_coupon(coupon.code, actor=actor)
            except ValidationError as error:
                for message in error.messages:
                    self.message_user(request, f"{coupon.code}: {message}", messages.ERROR)
            else:
                redeemed += 1
        if redeemed:
            self.message_user(
                request,
                ngettext("%(count)d coupon redeemed.", "%(count)d coupons redeemed.", redeemed)
                % {"count": redeemed},
                messages.SUCCESS,
            )
        return HttpResponseRedirect(request.get_full_path())


# --------------------------------------------------------------------------------------------------
# History (read-only)


@admin.register(OrderPoints)
class OrderPointsAdmin(MemberLinkMixin, AppendOnlyAdmin):
    list_display = (
        "order",
        "member_link",
        "paid_at",
        "base_amount",
        "multiplier",
        "points",
        "reversed_points",
        "unrecovered_points",
        "expires_at",
    )
    list_select_related = ("order", "member")
    search_fields = ("member__mobile",)
    search_help_text = _("A member's full mobile number.")
    indexed_search = IndexedSearch(mobile=("member__mobile",))
    sortable_by = ("paid_at",)
    readonly_fields = list_display


@admin.register(TierChange)
class TierChangeAdmin(MemberLinkMixin, AppendOnlyAdmin):
    list_display = ("at", "member_link", "from_tier", "to_tier", "direction", "basis", "value", "below_since")
    list_display_links = ("at",)
    list_select_related = ("member", "from_tier", "to_tier")
    list_filter = ("direction", "to_tier")
    search_fields = ("member__mobile",)
    search_help_text = _("A member's full mobile number.")
    indexed_search = IndexedSearch(mobile=("member__mobile",))
    sortable_by = ("at",)
    readonly_fields = list_display


@admin.register(LoyaltyRun)
class LoyaltyRunAdmin(AppendOnlyAdmin):
    list_display = ("kind", "cutoff", "started_at", "finished_at", "members", "points", "count")
    list_filter = ("kind",)
    sortable_by = ("started_at",)
    readonly_fields = list_display
