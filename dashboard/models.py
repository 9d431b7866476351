"""Aggregate tables behind the HQ dashboard and the campaign results.

Every row here is derived: ``dashboard.refresh`` rebuilds it from orders, members, tasks and runs
(Celery beat, every half hour for the recent weeks and months, nightly for the rest), so the pages read
a few hundred small rows instead of scanning ten million orders. Scope ids are plain integers (0 for
"none" or the brand) rather than foreign keys: a fact row outlives nothing and is replaced whole.
"""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _


class ScopeKind(models.TextChoices):
    BRAND = "brand", _("Brand")
    REGION = "region", _("Region")
    STORE = "store", _("Store")
    GUIDE = "guide", _("Guide")


class WeekFact(models.Model):
    """One ISO week (Monday to Sunday, local time) of orders and new members, for the brand, a region
    or a store (each total stored, so a chart reads 53 rows).

    The store is the one the KPIs count an order for: the store it was placed in, else (online) the
    buyer's home store; orders with neither count for the brand only. New members count for their
    home store."""

    week = models.DateField(_("week"))
    scope_kind = models.CharField(_("scope"), max_length=8, choices=ScopeKind.choices)
    scope_id = models.BigIntegerField(_("scope id"), default=0)
    transactions = models.IntegerField(_("transactions"), default=0)
    member_transactions = models.IntegerField(_("member transactions"), default=0)
    online_transactions = models.IntegerField(_("online transactions"), default=0)
    sales = models.DecimalField(_("sales"), max_digits=16, decimal_places=2, default=0)
    member_sales = models.DecimalField(_("member sales"), max_digits=16, decimal_places=2, default=0)
    items = models.BigIntegerField(_("items"), default=0)
    new_members = models.IntegerField(_("new members"), default=0)
    computed_at = models.DateTimeField(_("computed at"))

    class Meta:
        verbose_name = _("weekly fact")
        verbose_name_plural = _("weekly facts")
        constraints = [
            models.UniqueConstraint(fields=["scope_kind", "scope_id", "week"], name="weekfact_unique")
        ]

    def __str__(self) -> str:
        return f"{self.scope_kind} {self.scope_id} · {self.week}"


class KpiFact(models.Model):
    """The counts behind every KPI of ``members.kpis`` for one period and one scope, plus the tasks'
    numbers; rates are derived from the counts when read (``dashboard.selectors``)."""

    period_start = models.DateField(_("from"))
    period_end = models.DateField(_("to (excluded)"))
    scope_kind = models.CharField(_("scope"), max_length=8, choices=ScopeKind.choices)
    scope_id = models.BigIntegerField(_("scope id"), default=0)
    transactions = models.IntegerField(default=0)
    member_transactions = models.IntegerField(default=0)
    sales = models.DecimalField(max_digits=16, decimal_places=2, default=0)
    member_sales = models.DecimalField(max_digits=16, decimal_places=2, default=0)
    items = models.BigIntegerField(default=0)
    members = models.IntegerField(default=0)
    online_members = models.IntegerField(default=0)
    active_members = models.IntegerField(default=0)
    repeat_buyers = models.IntegerField(default=0)
    previous_buyers = models.IntegerField(default=0)
    churned_members = models.IntegerField(default=0)
    new_members = models.IntegerField(default=0)
    converted_new_members = models.IntegerField(default=0)
    tasks_due = models.IntegerField(default=0)
    tasks_done = models.IntegerField(default=0)
    tasks_on_time = models.IntegerField(default=0)
    members_reached = models.IntegerField(default=0)
    members_converted = models.IntegerField(default=0)
    attributed_orders = models.IntegerField(default=0)
    attributed_sales = models.DecimalField(max_digits=16, decimal_places=2, default=0)
    computed_at = models.DateTimeField(_("computed at"))

    class Meta:
        verbose_name = _("KPI fact")
        verbose_name_plural = _("KPI facts")
        constraints = [
            models.UniqueConstraint(
                fields=["period_start", "period_end", "scope_kind", "scope_id"], name="kpifact_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.scope_kind} {self.scope_id} · {self.period_start}–{self.period_end}"


class TierFact(models.Model):
    """How members spread over the tiers, and what each tier spends (12 months), as of a refresh."""

    tier_id = models.BigIntegerField(_("tier"), default=0)  # 0: members without a tier
    members = models.IntegerField(_("members"), default=0)
    buyers = models.IntegerField(_("buyers in 12 months"), default=0)
    spend_12m = models.DecimalField(_("spend in 12 months"), max_digits=18, decimal_places=2, default=0)
    orders_12m = models.BigIntegerField(_("orders in 12 months"), default=0)
    computed_at = models.DateTimeField(_("computed at"))

    class Meta:
        verbose_name = _("tier fact")
        verbose_name_plural = _("tier facts")
        constraints = [models.UniqueConstraint(fields=["tier_id"], name="tierfact_unique")]

    def __str__(self) -> str:
        return f"{self.tier_id}"


class CampaignResult(models.Model):
    """The computed results of one run, or of a whole campaign (``run_id`` null), as JSON."""

    campaign_id = models.BigIntegerField(_("campaign"))
    run_id = models.BigIntegerField(_("run"), null=True, blank=True)
    data = models.JSONField(_("results"), default=dict)
    computed_at = models.DateTimeField(_("computed at"))

    class Meta:
        verbose_name = _("campaign result")
        verbose_name_plural = _("campaign results")
        constraints = [
            models.UniqueConstraint(
                fields=["campaign_id", "run_id"], nulls_distinct=False, name="campaignresult_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.campaign_id} · {self.run_id or '*'}"
