"""The numbers HQ lives by, for any period and for the brand, a region, a store or a guide.

Read-only selectors: four aggregate queries per report, whatever the number of members or orders
(no Python loop over rows). Every KPI has exactly one definition, written here and, in the same
words, in the README section "KPI definitions".

Terms used by the definitions:

- **Transaction**: an order paid in the period that is neither cancelled nor fully refunded (status
  paid or partially refunded). **Sales**: the amount of those orders net of refunds. **Items**:
  their item count.
- **The scope's orders**: for the brand, every order; for a region or a store, the orders placed in
  its stores, plus orders placed without a store (online) by members whose home store is in it; for
  a guide, the orders credited to the guide, plus orders credited to no guide by members whose
  exclusive guide they are.
- **The scope's members**: every member not merged into another; for a region or a store, those
  whose home store is in it; for a guide, those whose exclusive guide they are. Home store and guide
  are taken as they are now. Member-based KPIs count a member's transactions in every channel.
- **Periods** are calendar days in the brand's time zone: from ``start`` (included) to ``end``
  (excluded).

Definitions:

- **member_transaction_share** (会员交易占比): the scope's transactions made by members ÷ all the
  scope's transactions.
- **member_sales_share** (会员销售占比): the scope's sales made by members ÷ all the scope's sales.
- **online_rate** (在线率): the scope's members who joined before the period ends and can be reached
  online now (bound to an exclusive guide with a WeCom contact, or with marketing consent on WeCom,
  SMS or email) ÷ the scope's members who joined before the period ends.
- **annual_contribution_per_member** (会员年度贡献): the sales of the scope's members in the twelve
  months ending with the period ÷ the scope's members who made a transaction in those twelve months;
  it equals purchase frequency × average order value of those members (active members × frequency ×
  average order value = their annual sales).
- **repurchase_rate** (复购率): the scope's members with at least two transactions in the period ÷ the
  scope's members with at least one.
- **average_order_value** (客单价): the scope's sales ÷ the scope's transactions.
- **basket_size** (连带率): the scope's items ÷ the scope's transactions.
- **active_rate** (活跃率): the scope's members with at least one transaction in the period ÷ the
  scope's members who joined before the period ends.
- **churn_rate** (流失率): the scope's members who made a transaction in the previous period (as many
  whole calendar months before, for a period of whole months; else as many days before) but none in
  this period ÷ the scope's members who made a transaction in the previous period.
- **new_members** (新会员): the scope's members who joined in the period.
- **first_purchase_conversion** (首购转化率): new members who made a transaction between joining and
  the end of the period ÷ new members.
- **lost_members** / **reactivated_members** (流失 / 召回): lifecycle transitions of the scope's members
  dated in the period, into the lost stage, and from dormant or lost back to a buying stage
  (members.lifecycle).

A rate whose denominator is zero is ``None`` (not zero: nothing to measure).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Literal

from django.db import connection
from django.utils import timezone

from .lifecycle import BUYING_STAGES, INACTIVE_STAGES

RATE = Decimal("0.0001")
MONEY = Decimal("0.01")
BUYING_STATUSES = ("paid", "partially_refunded")


def _shift_years(day: datetime.date, years: int) -> datetime.date:
    try:
        return day.replace(year=day.year + years)
    except ValueError:  # 29 February → 28 February
        return day.replace(year=day.year + years, day=28)


def _shift_months(first_day: datetime.date, months: int) -> datetime.date:
    index = first_day.year * 12 + first_day.month - 1 + months
    return datetime.date(index // 12, index % 12 + 1, 1)


@dataclass(frozen=True)
class Period:
    """Calendar days from ``start`` (included) to ``end`` (excluded), in the brand's time zone."""

    start: datetime.date
    end: datetime.date

    def __post_init__(self) -> None:
        if self.end <= self.start:
            raise ValueError("a period ends after it starts")

    @classmethod
    def month(cls, year: int, month: int) -> Period:
        start = datetime.date(year, month, 1)
        return cls(start, datetime.date(year + month // 12, month % 12 + 1, 1))

    @classmethod
    def year(cls, year: int) -> Period:
        return cls(datetime.date(year, 1, 1), datetime.date(year + 1, 1, 1))

    @classmethod
    def days(cls, days: int, *, ending: datetime.date) -> Period:
        """The ``days`` days before ``ending`` (excluded), e.g. the last 30 days up to today."""
        return cls(ending - datetime.timedelta(days=days), ending)

    @property
    def length(self) -> datetime.timedelta:
        return self.end - self.start

    def previous(self) -> Period:
        """The period just before this one: as many whole calendar months when it is whole months
        (May → April, a quarter → the quarter before, a year → the year before), else as many days."""
        if self.start.day == 1 and self.end.day == 1:
            months = (self.end.year - self.start.year) * 12 + self.end.month - self.start.month
            return Period(_shift_months(self.start, -months), self.start)
        return Period(self.start - self.length, self.start)

    def same_period_last_year(self) -> Period:
        return Period(_shift_years(self.start, -1), _shift_years(self.end, -1))

    def bounds(self) -> tuple[datetime.datetime, datetime.datetime]:
        """Aware datetimes of the start and the end, at midnight in the current time zone."""
        return _midnight(self.start), _midnight(self.end)


def _midnight(day: datetime.date) -> datetime.datetime:
    return timezone.make_aware(datetime.datetime.combine(day, datetime.time.min))


@dataclass(frozen=True)
class Scope:
    """Whose numbers: the brand, a region, a store or a guide (by id)."""

    kind: Literal["brand", "region", "store", "guide"] = "brand"
    id: int | None = None

    def __post_init__(self) -> None:
        if (self.kind == "brand") != (self.id is None):
            raise ValueError("the brand has no id; a region, store or guide needs one")

    @classmethod
    def brand(cls) -> Scope:
        return cls()

    @classmethod
    def region(cls, region: Any) -> Scope:
        return cls("region", getattr(region, "pk", region))

    @classmethod
    def store(cls, store: Any) -> Scope:
        return cls("store", getattr(store, "pk", store))

    @classmethod
    def guide(cls, guide: Any) -> Scope:
        return cls("guide", getattr(guide, "pk", guide))


@dataclass(frozen=True)
class KpiReport:
    """One scope, one period: the KPIs (rates 0–1 with four decimals, ``None`` when undefined) and
    the counts they are made of."""

    scope: Scope
    period: Period
    # The scope's orders
    transactions: int
    member_transactions: int
    sales: Decimal
    member_sales: Decimal
    items: int
    member_transaction_share: Decimal | None
    member_sales_share: Decimal | None
    average_order_value: Decimal | None
    basket_size: Decimal | None
    # The scope's members
    members: int
    online_members: int
    online_rate: Decimal | None
    active_members: int
    active_rate: Decimal | None
    repeat_buyers: int
    repurchase_rate: Decimal | None
    previous_buyers: int
    churned_members: int
    churn_rate: Decimal | None
    new_members: int
    converted_new_members: int
    first_purchase_conversion: Decimal | None
    annual_buyers: int
    annual_transactions: int
    annual_sales: Decimal
    purchase_frequency: Decimal | None
    annual_contribution_per_member: Decimal | None
    lost_members: int
    reactivated_members: int


def _ratio(numerator: Any, denominator: Any, quantum: Decimal = RATE) -> Decimal | None:
    if not denominator:
        return None
    return (Decimal(numerator) / Decimal(denominator)).quantize(quantum, rounding=ROUND_HALF_UP)


_REGION_STORES = "(SELECT id FROM stores_store WHERE region_id = %(scope_id)s)"


def _member_scope_sql(scope: Scope, alias: str = "m") -> str:
    clause = f"{alias}.status <> 'merged'"
    if scope.kind == "region":
        clause += f" AND {alias}.home_store_id IN {_REGION_STORES}"
    elif scope.kind == "store":
        clause += f" AND {alias}.home_store_id = %(scope_id)s"
    elif scope.kind == "guide":
        clause += f" AND {alias}.guide_id = %(scope_id)s"
    return clause


def _order_scope_sql(scope: Scope) -> str:
    """Orders ``o`` of the scope; ``om`` is the buyer (LEFT JOIN, null for non-members)."""
    if scope.kind == "region":
        return (
            f"(o.store_id IN {_REGION_STORES}"
            f" OR (o.store_id IS NULL AND om.home_store_id IN {_REGION_STORES}))"
        )
    if scope.kind == "store":
        return "(o.store_id = %(scope_id)s OR (o.store_id IS NULL AND om.home_store_id = %(scope_id)s))"
    if scope.kind == "guide":
        return "(o.guide_id = %(scope_id)s OR (o.guide_id IS NULL AND om.guide_id = %(scope_id)s))"
    return "TRUE"


_BUYING = "o.status IN ('paid', 'partially_refunded')"

_TRANSACTIONS_SQL = """
SELECT COUNT(*),
       COUNT(*) FILTER (WHERE o.member_id IS NOT NULL),
       COALESCE(SUM(o.amount - o.refunded_amount), 0),
       COALESCE(SUM(o.amount - o.refunded_amount) FILTER (WHERE o.member_id IS NOT NULL), 0),
       COALESCE(SUM(o.item_count), 0)
  FROM members_order o
  LEFT JOIN members_member om ON om.id = o.member_id
 WHERE {buying} AND o.paid_at >= %(start)s AND o.paid_at < %(end)s AND {scope}
"""

_MEMBERS_SQL = """
SELECT COUNT(*) FILTER (WHERE m.joined_at < %(end)s),
       COUNT(*) FILTER (WHERE m.joined_at < %(end)s AND (
           m.consent_wecom OR m.consent_sms OR m.consent_email
           OR (m.guide_id IS NOT NULL AND EXISTS (
               SELECT 1 FROM members_externalidentity i
                WHERE i.member_id = m.id AND i.platform = 'wecom_external')))),
       COUNT(*) FILTER (WHERE m.joined_at >= %(start)s AND m.joined_at < %(end)s),
       COUNT(*) FILTER (WHERE m.joined_at >= %(start)s AND m.joined_at < %(end)s AND EXISTS (
           SELECT 1 FROM members_order o
            WHERE o.member_id = m.id AND {buying} AND o.paid_at >= m.joined_at AND o.paid_at < %(end)s))
  FROM members_member m
 WHERE {scope}
"""

_BUYERS_SQL = """
SELECT COUNT(*) FILTER (WHERE b.current >= 1),
       COUNT(*) FILTER (WHERE b.current >= 2),
       COUNT(*) FILTER (WHERE b.previous >= 1),
       COUNT(*) FILTER (WHERE b.previous >= 1 AND b.current = 0),
       COUNT(*) FILTER (WHERE b.annual >= 1),
       COALESCE(SUM(b.annual), 0),
       COALESCE(SUM(b.annual_sales), 0)
  FROM (SELECT o.member_id,
               COUNT(*) FILTER (WHERE o.paid_at >= %(start)s) AS current,
               COUNT(*) FILTER (WHERE o.paid_at >= %(previous_start)s AND o.paid_at < %(start)s) AS previous,
               COUNT(*) FILTER (WHERE o.paid_at >= %(year_start)s) AS annual,
               SUM(o.amount - o.refunded_amount) FILTER (WHERE o.paid_at >= %(year_start)s) AS annual_sales
          FROM members_order o
          JOIN members_member m ON m.id = o.member_id
         WHERE {buying} AND o.paid_at >= %(window_start)s AND o.paid_at < %(end)s AND {scope}
         GROUP BY o.member_id) b
"""

_TRANSITIONS_SQL = """
SELECT COUNT(*) FILTER (WHERE t.to_stage = 'lost'),
       COUNT(*) FILTER (WHERE t.from_stage = ANY(%(inactive)s) AND t.to_stage = ANY(%(buying_stages)s))
  FROM members_lifecycletransition t
  JOIN members_member m ON m.id = t.member_id
 WHERE t.at >= %(start)s AND t.at < %(end)s AND {scope}
"""


def kpi_report(period: Period, scope: Scope | None = None) -> KpiReport:
    """Every KPI of ``scope`` (the brand by default) for ``period``; see the module's definitions."""
    scope = scope or Scope.brand()
    start, end = period.bounds()
    previous_start, _previous_end = period.previous().bounds()
    year_start = _midnight(_shift_years(period.end, -1))
    params = {
        "scope_id": scope.id,
        "start": start,
        "end": end,
        "previous_start": previous_start,
        "year_start": year_start,
        "window_start": min(previous_start, year_start),
        "inactive": list(INACTIVE_STAGES),
        "buying_stages": list(BUYING_STAGES),
    }
    member_scope = _member_scope_sql(scope)
    with connection.cursor() as cursor:
        cursor.execute(_TRANSACTIONS_SQL.format(buying=_BUYING, scope=_order_scope_sql(scope)), params)
        transactions, member_transactions, sales, member_sales, items = cursor.fetchone()
        cursor.execute(_MEMBERS_SQL.format(buying=_BUYING, scope=member_scope), params)
        members, online, new_members, converted = cursor.fetchone()
        cursor.execute(_BUYERS_SQL.format(buying=_BUYING, scope=member_scope), params)
        active, repeat, previous_buyers, churned, annual_buyers, annual_orders, annual_sales = (
            cursor.fetchone()
        )
        cursor.execute(_TRANSITIONS_SQL.format(scope=member_scope), params)
        lost, reactivated = cursor.fetchone()
    return KpiReport(
        scope=scope,
        period=period,
        transactions=transactions,
        member_transactions=member_transactions,
        sales=Decimal(sales).quantize(MONEY),
        member_sales=Decimal(member_sales).quantize(MONEY),
        items=int(items),
        member_transaction_share=_ratio(member_transactions, transactions),
        member_sales_share=_ratio(member_sales, sales),
        average_order_value=_ratio(sales, transactions, MONEY),
        basket_size=_ratio(items, transactions, MONEY),
        members=members,
        online_members=online,
        online_rate=_ratio(online, members),
        active_members=active,
        active_rate=_ratio(active, members),
        repeat_buyers=repeat,
        repurchase_rate=_ratio(repeat, active),
        previous_buyers=previous_buyers,
        churned_members=churned,
        churn_rate=_ratio(churned, previous_buyers),
        new_members=new_members,
        converted_new_members=converted,
        first_purchase_conversion=_ratio(converted, new_members),
        annual_buyers=annual_buyers,
        annual_transactions=int(annual_orders),
        annual_sales=Decimal(annual_sales).quantize(MONEY),
        purchase_frequency=_ratio(annual_orders, annual_buyers, MONEY),
        annual_contribution_per_member=_ratio(annual_sales, annual_buyers, MONEY),
        lost_members=lost,
        reactivated_members=reactivated,
    )


def previous_period_report(period: Period, scope: Scope | None = None) -> KpiReport:
    """The same KPIs for the period just before (month on month, week on week)."""
    return kpi_report(period.previous(), scope)


def same_period_last_year_report(period: Period, scope: Scope | None = None) -> KpiReport:
    """The same KPIs for the same days one year earlier (year on year)."""
    return kpi_report(period.same_period_last_year(), scope)
