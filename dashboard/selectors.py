"""Reads for the HQ dashboard: a few hundred rows of the fact tables, never the orders themselves.

The rates are derived from the stored counts with the rounding of ``members.kpis``, so a figure on the
page is the figure ``members.kpis.kpi_report`` gives for the same period and scope.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.db.models import Q, Sum
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from members.kpis import Period
from members.models import Tier
from stores.models import Guide, Region, Store

from .models import KpiFact, ScopeKind, TierFact, WeekFact
from .refresh import WEEKS_SHOWN, shown_months, week_start

RATE = Decimal("0.0001")
MONEY = Decimal("0.01")


def _ratio(numerator: Any, denominator: Any, quantum: Decimal = RATE) -> Decimal | None:
    if not denominator:
        return None
    return (Decimal(numerator) / Decimal(denominator)).quantize(quantum, rounding=ROUND_HALF_UP)


# The KPIs on the page, in order: (key, label, kind) where kind says how to show and compare it.
KPIS: list[tuple[str, Any, str]] = [
    ("member_transaction_share", _("Member share of transactions"), "rate"),
    ("member_sales_share", _("Member share of sales"), "rate"),
    ("online_rate", _("Online rate"), "rate"),
    ("active_members", _("Active members"), "count"),
    ("repurchase_rate", _("Repurchase rate"), "rate"),
    ("average_order_value", _("Average order value"), "money"),
    ("basket_size", _("Basket size"), "number"),
    ("churn_rate", _("Churn rate"), "rate_down"),
    ("new_members", _("New members"), "count"),
    ("first_purchase_conversion", _("First-purchase conversion"), "rate"),
    ("task_completion", _("Tasks done on time"), "rate"),
    ("task_conversion", _("Reached members who bought"), "rate"),
]


def kpis_of(fact: KpiFact | None) -> dict[str, Any]:
    """Every figure of one fact row (the definitions of members.kpis); empty when there is none."""
    if fact is None:
        return {}
    f = fact
    return {
        "transactions": f.transactions,
        "sales": f.sales,
        "member_transaction_share": _ratio(f.member_transactions, f.transactions),
        "member_sales_share": _ratio(f.member_sales, f.sales),
        "average_order_value": _ratio(f.sales, f.transactions, MONEY),
        "basket_size": _ratio(f.items, f.transactions, MONEY),
        "members": f.members,
        "online_rate": _ratio(f.online_members, f.members),
        "active_members": f.active_members,
        "active_rate": _ratio(f.active_members, f.members),
        "repurchase_rate": _ratio(f.repeat_buyers, f.active_members),
        "churn_rate": _ratio(f.churned_members, f.previous_buyers),
        "new_members": f.new_members,
        "first_purchase_conversion": _ratio(f.converted_new_members, f.new_members),
        "tasks_due": f.tasks_due,
        "tasks_on_time": f.tasks_on_time,
        "task_completion": _ratio(f.tasks_on_time, f.tasks_due),
        "members_reached": f.members_reached,
        "members_converted": f.members_converted,
        "task_conversion": _ratio(f.members_converted, f.members_reached),
        "attributed_sales": f.attributed_sales,
    }


@dataclass
class ScopeChoice:
    kind: str
    id: int
    name: str
    parents: list[tuple[str, int, str]] = field(default_factory=list)  # breadcrumb: (kind, id, name)


def resolve_scope(region: int | None, store: int | None, guide: int | None) -> ScopeChoice | None:
    """The scope named by the query string (the most specific wins); None when an id is unknown."""
    brand = (ScopeKind.BRAND, 0, str(_("Brand")))
    if guide:
        g = Guide.objects.select_related("store__region").filter(pk=guide).first()
        if g is None:
            return None
        r = g.store.region
        return ScopeChoice(
            ScopeKind.GUIDE,
            g.pk,
            g.name,
            [brand, (ScopeKind.REGION, r.pk, r.name), (ScopeKind.STORE, g.store.pk, g.store.name)],
        )
    if store:
        s = Store.objects.select_related("region").filter(pk=store).first()
        if s is None:
            return None
        return ScopeChoice(
            ScopeKind.STORE, s.pk, s.name, [brand, (ScopeKind.REGION, s.region.pk, s.region.name)]
        )
    if region:
        r = Region.objects.filter(pk=region).first()
        if r is None:
            return None
        return ScopeChoice(ScopeKind.REGION, r.pk, r.name, [brand])
    return ScopeChoice(ScopeKind.BRAND, 0, str(_("Brand")))


def fact(period: Period, kind: str, scope_id: int) -> KpiFact | None:
    return KpiFact.objects.filter(
        period_start=period.start, period_end=period.end, scope_kind=kind, scope_id=scope_id
    ).first()


def _change(current: Any, other: Any) -> Decimal | None:
    if current is None or other is None:
        return None
    return Decimal(current) - Decimal(other)


def headline(period: Period, scope: ScopeChoice) -> dict[str, Any]:
    """The KPIs of the period against the previous period and the same period last year."""
    current = kpis_of(fact(period, scope.kind, scope.id))
    previous = kpis_of(fact(period.previous(), scope.kind, scope.id))
    last_year = kpis_of(fact(period.same_period_last_year(), scope.kind, scope.id))
    cards = []
    for key, label, kind in KPIS:
        value = current.get(key)
        cards.append(
            {
                "key": key,
                "label": label,
                "kind": kind,
                "value": value,
                "previous": previous.get(key),
                "last_year": last_year.get(key),
                "vs_previous": _change(value, previous.get(key)),
                "vs_last_year": _change(value, last_year.get(key)),
                "relative_previous": _relative(value, previous.get(key)),
                "relative_last_year": _relative(value, last_year.get(key)),
            }
        )
    return {"computed": bool(current), "figures": current, "cards": cards}


def _relative(value: Any, base: Any) -> Decimal | None:
    if value is None or not base:
        return None
    return ((Decimal(value) - Decimal(base)) / Decimal(base)).quantize(RATE)


CHILD_KIND = {
    ScopeKind.BRAND: ScopeKind.REGION,
    ScopeKind.REGION: ScopeKind.STORE,
    ScopeKind.STORE: ScopeKind.GUIDE,
}


def _names(kind: str, ids: list[int]) -> dict[int, tuple[str, str]]:
    if kind == ScopeKind.REGION:
        return {p: (c, n) for p, c, n in Region.objects.filter(pk__in=ids).values_list("pk", "code", "name")}
    if kind == ScopeKind.STORE:
        return {p: (c, n) for p, c, n in Store.objects.filter(pk__in=ids).values_list("pk", "code", "name")}
    return {
        p: (c, n) for p, c, n in Guide.objects.filter(pk__in=ids).values_list("pk", "employee_no", "name")
    }


def breakdown(period: Period, scope: ScopeChoice) -> dict[str, Any] | None:
    """The next level down (regions of the brand, stores of a region, guides of a store), by sales."""
    kind = CHILD_KIND.get(scope.kind)
    if kind is None:
        return None
    if kind == ScopeKind.REGION:
        ids = list(Region.objects.values_list("pk", flat=True))
    elif kind == ScopeKind.STORE:
        ids = list(Store.objects.filter(region_id=scope.id).values_list("pk", flat=True))
    else:
        ids = list(Guide.objects.filter(store_id=scope.id).values_list("pk", flat=True))
    facts = KpiFact.objects.filter(
        period_start=period.start, period_end=period.end, scope_kind=kind, scope_id__in=ids
    )
    names = _names(kind, [f.scope_id for f in facts])
    rows = [
        {
            "id": f.scope_id,
            "code": names.get(f.scope_id, ("", ""))[0],
            "name": names.get(f.scope_id, ("", ""))[1],
            **kpis_of(f),
        }
        for f in facts
    ]
    rows.sort(key=lambda r: (-r["sales"], r["code"]))
    return {"kind": kind, "rows": rows}


def leaderboards(period: Period, scope: ScopeChoice, size: int = 10) -> dict[str, list[dict[str, Any]]]:
    """Top stores by sales and top guides by the sales their tasks brought in, within the scope."""
    stores = Store.objects.all()
    if scope.kind == ScopeKind.REGION:
        stores = stores.filter(region_id=scope.id)
    elif scope.kind in (ScopeKind.STORE, ScopeKind.GUIDE):
        return {}
    base = KpiFact.objects.filter(period_start=period.start, period_end=period.end)
    store_facts = base.filter(scope_kind=ScopeKind.STORE)
    guide_facts = base.filter(scope_kind=ScopeKind.GUIDE)
    if scope.kind == ScopeKind.REGION:
        store_ids = list(stores.values_list("pk", flat=True))
        store_facts = store_facts.filter(scope_id__in=store_ids)
        guide_facts = guide_facts.filter(
            scope_id__in=Guide.objects.filter(store_id__in=store_ids).values("pk")
        )
    top_stores = list(store_facts.order_by("-sales", "scope_id")[:size])
    top_guides = list(
        guide_facts.filter(Q(attributed_sales__gt=0) | Q(tasks_due__gt=0)).order_by(
            "-attributed_sales", "-tasks_on_time", "scope_id"
        )[:size]
    )
    store_names = _names(ScopeKind.STORE, [f.scope_id for f in top_stores])
    guide_rows = Guide.objects.filter(pk__in=[f.scope_id for f in top_guides]).select_related("store")
    guides = {g.pk: g for g in guide_rows}
    return {
        "stores": [
            {
                "id": f.scope_id,
                "code": store_names.get(f.scope_id, ("", ""))[0],
                "name": store_names.get(f.scope_id, ("", ""))[1],
                **kpis_of(f),
            }
            for f in top_stores
        ],
        "guides": [
            {
                "id": f.scope_id,
                "name": guides[f.scope_id].name if f.scope_id in guides else "",
                "store": guides[f.scope_id].store.name if f.scope_id in guides else "",
                **kpis_of(f),
            }
            for f in top_guides
        ],
    }


def weekly_trend(scope: ScopeChoice, today: datetime.date) -> dict[str, list[Any]]:
    """The last 53 weeks (the current one included) of sales, transactions, member share, order value,
    basket size and new members, for the brand, a region or a store (a guide: their store)."""
    last = week_start(today)
    first = last - datetime.timedelta(weeks=WEEKS_SHOWN - 1)
    facts = WeekFact.objects.filter(week__gte=first, week__lte=last)
    if scope.kind == ScopeKind.GUIDE:
        store_id = Guide.objects.filter(pk=scope.id).values_list("store_id", flat=True).first()
        facts = facts.filter(scope_kind=ScopeKind.STORE, scope_id=store_id or 0)
    else:
        facts = facts.filter(scope_kind=scope.kind, scope_id=scope.id)
    by_week = {
        row["week"]: row
        for row in facts.values("week").annotate(
            tx=Sum("transactions"),
            mtx=Sum("member_transactions"),
            sales=Sum("sales"),
            msales=Sum("member_sales"),
            items=Sum("items"),
            joined=Sum("new_members"),
        )
    }
    out: dict[str, list[Any]] = {
        k: [] for k in ("weeks", "sales", "transactions", "member_share", "aov", "basket", "new_members")
    }
    for i in range(WEEKS_SHOWN):
        week = first + datetime.timedelta(weeks=i)
        row = by_week.get(week, {})
        tx, sales = row.get("tx") or 0, row.get("sales") or Decimal(0)
        out["weeks"].append(week.isoformat())
        out["sales"].append(float(sales))
        out["transactions"].append(tx)
        share = _ratio(row.get("msales") or 0, sales)
        out["member_share"].append(float(share * 100) if share is not None else None)
        aov = _ratio(sales, tx, MONEY)
        out["aov"].append(float(aov) if aov is not None else None)
        basket = _ratio(row.get("items") or 0, tx, MONEY)
        out["basket"].append(float(basket) if basket is not None else None)
        out["new_members"].append(row.get("joined") or 0)
    return out


def tier_distribution() -> dict[str, Any]:
    """Members and 12-month spend per tier (lowest tier first), with each tier's share."""
    tiers = {t.pk: t for t in Tier.objects.all()}
    facts = list(TierFact.objects.all())
    members = sum(f.members for f in facts)
    spend = sum((f.spend_12m for f in facts), Decimal(0))
    rows = []
    for f in sorted(facts, key=lambda f: tiers[f.tier_id].rank if f.tier_id in tiers else -1):
        tier = tiers.get(f.tier_id)
        rows.append(
            {
                "name": tier.name if tier else str(_("No tier")),
                "threshold": tier.threshold if tier else None,
                "members": f.members,
                "buyers": f.buyers,
                "spend": f.spend_12m,
                "member_share": _ratio(f.members, members),
                "spend_share": _ratio(f.spend_12m, spend),
                "spend_per_member": _ratio(f.spend_12m, f.members, MONEY),
                "spend_per_buyer": _ratio(f.spend_12m, f.buyers, MONEY),
                "orders_per_buyer": _ratio(f.orders_12m, f.buyers, MONEY),
            }
        )
    return {
        "rows": rows,
        "members": members,
        "spend": spend,
        "computed_at": facts[0].computed_at if facts else None,
    }


def month_choices(today: datetime.date | None = None) -> list[Period]:
    return shown_months(today or timezone.localdate())


def default_month(today: datetime.date | None = None) -> Period:
    """The last whole month: the current one is still filling up."""
    return month_choices(today)[1]
