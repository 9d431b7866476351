"""Rebuilds the dashboard's aggregate tables (dashboard.models) with set-based SQL.

- Weekly facts: the orders and new members of each ISO week per store, for the trend charts.
- KPI facts: the counts behind ``members.kpis`` for a calendar month and every scope at once — the
  brand, each region, store and guide — with ``GROUPING SETS``, so one scan of the month's orders
  serves a thousand stores; the counts follow the definitions of ``members.kpis`` exactly (the tests
  compare them), plus the tasks' completion and the orders attributed to them (campaigns.attribution).
- Tier facts: members, buyers and 12-month spend per tier.
- Campaign results: see dashboard.results.

``refresh_dashboard`` is the one write service; Celery beat calls it every half hour for the recent
weeks and the current month, and nightly for the whole window the pages can show.
"""

from __future__ import annotations

import datetime
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.db import connection
from django.utils import timezone

from campaigns.attribution import _filtered as attribution_sql
from campaigns.models import CampaignRun
from members.kpis import Period
from scrm import audit
from scrm.audit import Actor

from .models import KpiFact, ScopeKind, WeekFact

WEEKS_SHOWN = 53  # a year of weeks, plus the one under way
MONTHS_SHOWN = 13  # the current month and the twelve before it
_BUYING = "o.status IN ('paid', 'partially_refunded')"


def _tz() -> str:
    return settings.TIME_ZONE


def week_start(day: datetime.date) -> datetime.date:
    return day - datetime.timedelta(days=day.weekday())


def shown_months(today: datetime.date) -> list[Period]:
    """The months a user can pick, newest first."""
    months = []
    year, month = today.year, today.month
    for _ in range(MONTHS_SHOWN):
        months.append(Period.month(year, month))
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    return months


def months_needed(today: datetime.date) -> list[Period]:
    """Each month a user can pick, the month before it and the same month a year earlier."""
    needed: dict[tuple[datetime.date, datetime.date], Period] = {}
    for period in shown_months(today):
        for p in (period, period.previous(), period.same_period_last_year()):
            needed[(p.start, p.end)] = p
    return sorted(needed.values(), key=lambda p: p.start, reverse=True)


# --------------------------------------------------------------------------------------------------
# Weekly facts

_WEEKS_SQL = """
INSERT INTO dashboard_weekfact (week, scope_kind, scope_id, transactions, member_transactions,
                                online_transactions, sales, member_sales, items, new_members, computed_at)
SELECT week,
       CASE GROUPING(rid, sid) WHEN 3 THEN 'brand' WHEN 1 THEN 'region' ELSE 'store' END,
       COALESCE(CASE GROUPING(rid, sid) WHEN 3 THEN 0 WHEN 1 THEN rid ELSE sid END, 0),
       SUM(tx), SUM(mtx), SUM(otx), SUM(sales), SUM(msales), SUM(items), SUM(joined), %(now)s
  FROM (
    SELECT f.*, st.region_id AS rid
      FROM (
        SELECT date_trunc('week', o.paid_at AT TIME ZONE %(tz)s)::date AS week,
               COALESCE(o.store_id, om.home_store_id) AS sid,
               COUNT(*) AS tx,
               COUNT(*) FILTER (WHERE o.member_id IS NOT NULL) AS mtx,
               COUNT(*) FILTER (WHERE o.channel <> 'store') AS otx,
               SUM(o.amount - o.refunded_amount) AS sales,
               COALESCE(SUM(o.amount - o.refunded_amount) FILTER (WHERE o.member_id IS NOT NULL), 0)
                   AS msales,
               SUM(o.item_count) AS items,
               0 AS joined
          FROM members_order o
          LEFT JOIN members_member om ON om.id = o.member_id
         WHERE {buying} AND o.paid_at >= %(start)s AND o.paid_at < %(end)s
         GROUP BY 1, 2
        UNION ALL
        SELECT date_trunc('week', m.joined_at AT TIME ZONE %(tz)s)::date, m.home_store_id,
               0, 0, 0, 0, 0, 0, COUNT(*)
          FROM members_member m
         WHERE m.status <> 'merged' AND m.joined_at >= %(start)s AND m.joined_at < %(end)s
         GROUP BY 1, 2
      ) f
      LEFT JOIN stores_store st ON st.id = f.sid
  ) g
 GROUP BY GROUPING SETS ((week), (week, rid), (week, sid))
HAVING GROUPING(rid, sid) = 3 OR (GROUPING(rid, sid) = 1 AND rid IS NOT NULL)
       OR (GROUPING(rid, sid) = 2 AND sid IS NOT NULL)
"""


def refresh_weeks(first: datetime.date, last: datetime.date, now: datetime.datetime) -> int:
    """Recompute the weeks from ``first`` to ``last`` (Mondays, both included); returns rows written."""
    first, last = week_start(first), week_start(last)
    start, end = Period(first, last + datetime.timedelta(days=7)).bounds()
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM dashboard_weekfact WHERE week >= %s AND week <= %s", [first, last])
        cursor.execute(
            _WEEKS_SQL.format(buying=_BUYING),
            {"tz": _tz(), "start": start, "end": end, "now": now},
        )
        return cursor.rowcount


# --------------------------------------------------------------------------------------------------
# KPI facts: every scope of one period in four statements

# GROUPING(rid, sid, gid) of each grouping set: () → 7, (rid) → 3, (sid) → 5, (gid) → 6.
_SETS = "GROUPING SETS ((), (rid), (sid), (gid))"
_KIND_OF_GROUPING = {7: ScopeKind.BRAND, 3: ScopeKind.REGION, 5: ScopeKind.STORE, 6: ScopeKind.GUIDE}

_TRANSACTIONS_SQL = """
SELECT GROUPING(rid, sid, gid), rid, sid, gid,
       COUNT(*), COUNT(*) FILTER (WHERE member_id IS NOT NULL),
       COALESCE(SUM(net), 0), COALESCE(SUM(net) FILTER (WHERE member_id IS NOT NULL), 0),
       COALESCE(SUM(item_count), 0)
  FROM (SELECT o.member_id, o.amount - o.refunded_amount AS net, o.item_count,
               st.region_id AS rid, COALESCE(o.store_id, om.home_store_id) AS sid,
               COALESCE(o.guide_id, om.guide_id) AS gid
          FROM members_order o
          LEFT JOIN members_member om ON om.id = o.member_id
          LEFT JOIN stores_store st ON st.id = COALESCE(o.store_id, om.home_store_id)
         WHERE {buying} AND o.paid_at >= %(start)s AND o.paid_at < %(end)s) x
 GROUP BY {sets}
"""

_MEMBERS_SQL = """
SELECT GROUPING(rid, sid, gid), rid, sid, gid,
       COUNT(*) FILTER (WHERE joined_at < %(end)s),
       COUNT(*) FILTER (WHERE joined_at < %(end)s AND online),
       COUNT(*) FILTER (WHERE joined_at >= %(start)s AND joined_at < %(end)s),
       COUNT(*) FILTER (WHERE joined_at >= %(start)s AND joined_at < %(end)s AND EXISTS (
           SELECT 1 FROM members_order o
            WHERE o.member_id = x.id AND {buying} AND o.paid_at >= x.joined_at AND o.paid_at < %(end)s))
  FROM (SELECT m.id, m.joined_at, st.region_id AS rid, m.home_store_id AS sid, m.guide_id AS gid,
               (m.consent_wecom OR m.consent_sms OR m.consent_email
                OR (m.guide_id IS NOT NULL AND EXISTS (
                    SELECT 1 FROM members_externalidentity i
                     WHERE i.member_id = m.id AND i.platform = 'wecom_external'))) AS online
          FROM members_member m
          LEFT JOIN stores_store st ON st.id = m.home_store_id
         WHERE m.status <> 'merged' AND m.joined_at < %(end)s) x
 GROUP BY {sets}
"""

_BUYERS_SQL = """
SELECT GROUPING(rid, sid, gid), rid, sid, gid,
       COUNT(*) FILTER (WHERE b.current >= 1),
       COUNT(*) FILTER (WHERE b.current >= 2),
       COUNT(*) FILTER (WHERE b.previous >= 1),
       COUNT(*) FILTER (WHERE b.previous >= 1 AND b.current = 0)
  FROM (SELECT o.member_id,
               COUNT(*) FILTER (WHERE o.paid_at >= %(start)s) AS current,
               COUNT(*) FILTER (WHERE o.paid_at < %(start)s) AS previous
          FROM members_order o
         WHERE {buying} AND o.paid_at >= %(previous_start)s AND o.paid_at < %(end)s
           AND o.member_id IS NOT NULL
         GROUP BY o.member_id) b
  JOIN LATERAL (SELECT st.region_id AS rid, m.home_store_id AS sid, m.guide_id AS gid
                  FROM members_member m LEFT JOIN stores_store st ON st.id = m.home_store_id
                 WHERE m.id = b.member_id AND m.status <> 'merged') s ON TRUE
 GROUP BY {sets}
"""

# Tasks due in the period (cancelled ones left out: nobody was asked to do them), whether they were done
# and done on time; members reached by tasks completed in the period.
_TASKS_SQL = """
SELECT GROUPING(rid, sid, gid), rid, sid, gid,
       COUNT(*) FILTER (WHERE due),
       COUNT(*) FILTER (WHERE due AND state = 'done'),
       COUNT(*) FILTER (WHERE due AND state = 'done' AND completed_at <= due_at),
       COUNT(DISTINCT member_id) FILTER (WHERE reached)
  FROM (SELECT st.region_id AS rid, t.store_id AS sid, t.guide_id AS gid, t.state, t.completed_at,
               t.due_at, t.member_id,
               (t.due_at >= %(start)s AND t.due_at < %(end)s AND t.state <> 'cancelled') AS due,
               (t.state = 'done' AND t.outcome = ANY(%(reached)s)
                AND t.completed_at >= %(start)s AND t.completed_at < %(end)s) AS reached
          FROM campaigns_task t
          JOIN stores_store st ON st.id = t.store_id
         WHERE (t.due_at >= %(start)s AND t.due_at < %(end)s)
            OR (t.completed_at >= %(start)s AND t.completed_at < %(end)s)) x
 GROUP BY {sets}
"""

_ATTRIBUTED_SQL = """
SELECT GROUPING(rid, sid, gid), rid, sid, gid,
       COUNT(DISTINCT a.member_id), COUNT(*), COALESCE(SUM(a.net), 0)
  FROM (SELECT a.member_id, a.net, st.region_id AS rid, a.store_id AS sid, a.guide_id AS gid
          FROM ({attributed}) a JOIN stores_store st ON st.id = a.store_id) a
 GROUP BY {sets}
"""

_COUNT_FIELDS = {
    "transactions": ("transactions", "member_transactions", "sales", "member_sales", "items"),
    "members": ("members", "online_members", "new_members", "converted_new_members"),
    "buyers": ("active_members", "repeat_buyers", "previous_buyers", "churned_members"),
    "tasks": ("tasks_due", "tasks_done", "tasks_on_time", "members_reached"),
    "attributed": ("members_converted", "attributed_orders", "attributed_sales"),
}


def _scope_key(grouping: int, rid: Any, sid: Any, gid: Any) -> tuple[str, int] | None:
    kind = _KIND_OF_GROUPING[grouping]
    scope_id = {"brand": 0, "region": rid, "store": sid, "guide": gid}[kind]
    if scope_id is None:  # e.g. orders with no store and no buyer's home store: brand-only
        return None
    return kind, scope_id


def compute_period(period: Period) -> dict[tuple[str, int], dict[str, Any]]:
    """The counts of every scope for ``period``, keyed by (scope kind, scope id)."""
    from campaigns.work import REACHED_OUTCOMES

    start, end = period.bounds()
    previous_start, _ = period.previous().bounds()
    params = {
        "start": start,
        "end": end,
        "previous_start": previous_start,
        "reached": [str(o) for o in REACHED_OUTCOMES],
    }
    attributed, attributed_params = attribution_sql(
        start=start, end=end, guide_ids=None, store_id=None, campaign_id=None
    )
    statements = {
        "transactions": (_TRANSACTIONS_SQL, params),
        "members": (_MEMBERS_SQL, params),
        "buyers": (_BUYERS_SQL, params),
        "tasks": (_TASKS_SQL, params),
        "attributed": (_ATTRIBUTED_SQL.replace("{attributed}", attributed), attributed_params),
    }
    facts: dict[tuple[str, int], dict[str, Any]] = defaultdict(dict)
    with connection.cursor() as cursor:
        for name, (sql, sql_params) in statements.items():
            cursor.execute(sql.format(buying=_BUYING, sets=_SETS), sql_params)
            for grouping, rid, sid, gid, *values in cursor.fetchall():
                key = _scope_key(grouping, rid, sid, gid)
                if key is not None:
                    facts[key].update(zip(_COUNT_FIELDS[name], values, strict=True))
    facts[(ScopeKind.BRAND, 0)]  # the brand always has a row, even an empty one
    return facts


def refresh_period(period: Period, now: datetime.datetime) -> int:
    facts = compute_period(period)
    KpiFact.objects.filter(period_start=period.start, period_end=period.end).delete()
    rows = [
        KpiFact(
            period_start=period.start,
            period_end=period.end,
            scope_kind=kind,
            scope_id=scope_id,
            computed_at=now,
            **values,
        )
        for (kind, scope_id), values in facts.items()
    ]
    KpiFact.objects.bulk_create(rows, batch_size=5000)
    return len(rows)


# --------------------------------------------------------------------------------------------------
# Tiers

_TIERS_SQL = """
INSERT INTO dashboard_tierfact (tier_id, members, buyers, spend_12m, orders_12m, computed_at)
SELECT COALESCE(m.tier_id, 0), COUNT(*), COUNT(*) FILTER (WHERE m.orders_12m > 0),
       COALESCE(SUM(m.spend_12m), 0), COALESCE(SUM(m.orders_12m), 0), %(now)s
  FROM members_member m
 WHERE m.status = 'active'
 GROUP BY 1
"""


def refresh_tiers(now: datetime.datetime) -> int:
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM dashboard_tierfact")
        cursor.execute(_TIERS_SQL, {"now": now})
        return cursor.rowcount


# --------------------------------------------------------------------------------------------------
# The service


def _campaign_runs_to_refresh(now: datetime.datetime, *, full: bool) -> Iterable[int]:
    """Campaigns whose runs may still change: started within the last 90 days (tasks are still being
    worked or their attribution window is still open); every campaign when ``full``."""
    runs = CampaignRun.objects.filter(campaign__isnull=False)
    if not full:
        runs = runs.filter(started_at__gte=now - datetime.timedelta(days=90))
    return runs.values_list("campaign_id", flat=True).distinct()


@audit.service
def refresh_dashboard(
    *, actor: Actor, full: bool = False, today: datetime.date | None = None
) -> dict[str, int]:
    """Recompute the dashboard's facts. Recent (``full=False``, every half hour): the current and the
    previous week, the current month, tiers and the results of recent campaigns. Full (nightly): every
    week and month the pages show, including last year's months for the comparisons.

    Two refreshes never run at once: a second one waits for the first, then recomputes (cheap)."""
    from .results import refresh_campaign_results

    now = timezone.now()
    today = today or timezone.localdate()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext('dashboard.refresh'))")
    counts = {"weeks": 0, "kpi_rows": 0, "months": 0, "tiers": 0, "campaigns": 0}
    if full:
        first = week_start(today) - datetime.timedelta(weeks=WEEKS_SHOWN - 1)
        periods = months_needed(today)
    else:
        first = week_start(today) - datetime.timedelta(weeks=1)
        periods = shown_months(today)[:1]
        # A month the pages need that was never computed (a fresh install) is filled in too.
        known = set(
            KpiFact.objects.filter(scope_kind=ScopeKind.BRAND).values_list("period_start", "period_end")
        )
        periods += [p for p in months_needed(today) if (p.start, p.end) not in known and p not in periods]
    counts["weeks"] = refresh_weeks(first, today, now)
    if full:  # what no page can show any more goes
        WeekFact.objects.filter(week__lt=first).delete()
        KpiFact.objects.filter(period_start__lt=min(p.start for p in periods)).delete()
    for period in periods:
        counts["kpi_rows"] += refresh_period(period, now)
        counts["months"] += 1
    counts["tiers"] = refresh_tiers(now)
    campaign_ids = sorted(set(_campaign_runs_to_refresh(now, full=full)))
    counts["campaigns"] = refresh_campaign_results(campaign_ids, now=now)
    with connection.cursor() as cursor:  # fresh statistics, so the pages' plans fit the new rows
        for table in ("dashboard_weekfact", "dashboard_kpifact", "dashboard_campaignresult"):
            cursor.execute(f"ANALYZE {table}")
    audit.record(
        actor,
        "dashboard.refreshed",
        target_type="dashboard",
        target_id="full" if full else "recent",
        changes=counts,
    )
    return counts


def last_refreshed() -> datetime.datetime | None:
    fact = KpiFact.objects.filter(scope_kind=ScopeKind.BRAND).order_by("-computed_at").first()
    return fact.computed_at if fact else None
