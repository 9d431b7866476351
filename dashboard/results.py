"""Campaign results: what the tasks of a run (or of every run of a campaign) did, and whether it paid.

- Tasks: created, done, done on time, expired, cancelled (per reason), still open; outcomes; reach rate
  (tasks completed with a reaching outcome ÷ tasks created).
- Attributed orders (campaigns.attribution): orders credited to these runs' tasks, with the converted
  members and their sales, per store and guide of the task.
- Uplift: every member of the frozen audience (``RunMember``), treated or drawn into the holdout, is
  followed from the moment the tasks opened until the attribution window after their due time closes
  (``[opens_at, due_at + N days)``, cut at now); conversion is "made at least one counted order",
  sales are net of refunds, both compared with the holdout (dashboard.stats). Treated members count
  whether or not their guide reached them (intention to treat): the holdout cannot be "reached" either.

The figures are computed by Celery (``refresh_campaign_results``) into ``CampaignResult`` rows; a page
for a campaign that has none yet computes them on the spot.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

from django.db import connection
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from campaigns.attribution import DEFAULT_ATTRIBUTION_DAYS
from campaigns.attribution import _filtered as attribution_sql
from campaigns.models import Campaign, CampaignRun
from campaigns.work import REACHED_OUTCOMES
from stores.models import Guide, Store

from . import stats
from .models import CampaignResult

_TASKS_SQL = """
SELECT GROUPING(t.store_id, t.guide_id), t.store_id, t.guide_id,
       COUNT(*),
       COUNT(*) FILTER (WHERE t.state = 'done'),
       COUNT(*) FILTER (WHERE t.state = 'done' AND t.completed_at <= t.due_at),
       COUNT(*) FILTER (WHERE t.state = 'expired'),
       COUNT(*) FILTER (WHERE t.state = 'cancelled'),
       COUNT(*) FILTER (WHERE t.state = 'open'),
       COUNT(*) FILTER (WHERE t.state = 'done' AND t.outcome = ANY(%(reached)s))
  FROM campaigns_task t
 WHERE t.run_id = ANY(%(runs)s)
 GROUP BY GROUPING SETS ((), (t.store_id), (t.store_id, t.guide_id))
"""
_TASK_FIELDS = ("created", "done", "on_time", "expired", "cancelled", "open", "reached")

_BREAKDOWN_SQL = """
SELECT kind, value, COUNT(*)
  FROM (SELECT 'outcome' AS kind, t.outcome AS value FROM campaigns_task t
         WHERE t.run_id = ANY(%(runs)s) AND t.state = 'done'
        UNION ALL
        SELECT 'cancel_reason', t.cancel_reason FROM campaigns_task t
         WHERE t.run_id = ANY(%(runs)s) AND t.state = 'cancelled') x
 GROUP BY kind, value
"""

_ATTRIBUTED_SQL = """
SELECT GROUPING(a.store_id, a.guide_id), a.store_id, a.guide_id,
       COUNT(*), COUNT(DISTINCT a.member_id), COALESCE(SUM(a.net), 0)
  FROM ({attributed}) a
 GROUP BY GROUPING SETS ((), (a.store_id), (a.store_id, a.guide_id))
"""
# Only the orders of members these runs' tasks reached are looked at; the rule itself (the most recent
# reaching task of any campaign wins) stays that of campaigns.attribution.
_ONLY_OUR_MEMBERS = (
    " AND t.run_id = ANY(%(dash_runs)s) AND o.member_id IN (SELECT member_id FROM campaigns_task"
    " WHERE run_id = ANY(%(dash_runs)s) AND state = 'done' AND outcome = ANY(%(reached)s))"
)

_TASK_WINDOW_SQL = """
SELECT MIN(completed_at), MAX(completed_at) FROM campaigns_task
 WHERE run_id = ANY(%(runs)s) AND state = 'done' AND outcome = ANY(%(reached)s)
"""

_UPLIFT_SQL = """
SELECT rm.holdout, COUNT(*), COUNT(*) FILTER (WHERE s.orders > 0), COALESCE(SUM(s.net), 0),
       COALESCE(SUM(s.net * s.net), 0)
  FROM unnest(%(runs)s::bigint[], %(starts)s::timestamptz[], %(ends)s::timestamptz[]) AS w(run_id, ws, we)
  JOIN campaigns_runmember rm ON rm.run_id = w.run_id
 CROSS JOIN LATERAL (
       SELECT COUNT(*) AS orders, COALESCE(SUM(o.amount - o.refunded_amount), 0) AS net
         FROM members_order o
        WHERE o.member_id = rm.member_id AND o.status IN ('paid', 'partially_refunded')
          AND o.paid_at >= w.ws AND o.paid_at < w.we) s
 GROUP BY rm.holdout
"""


def _window(
    run: CampaignRun, campaign: Campaign, now: datetime.datetime
) -> tuple[datetime.datetime, datetime.datetime]:
    snapshot = run.snapshot or {}
    opens = parse_datetime(snapshot["opens_at"]) if snapshot.get("opens_at") else None
    due = parse_datetime(snapshot["due_at"]) if snapshot.get("due_at") else None
    opens = opens or run.evaluated_at or run.started_at
    due = due or opens + datetime.timedelta(days=snapshot.get("due_days") or campaign.due_days)
    days = campaign.attribution_days or DEFAULT_ATTRIBUTION_DAYS
    return opens, min(due + datetime.timedelta(days=days), now)


def _money(value: Any) -> str:
    return str(Decimal(value).quantize(Decimal("0.01")))


def compute_results(
    campaign: Campaign, runs: Sequence[CampaignRun], *, now: datetime.datetime | None = None
) -> dict[str, Any]:
    """Every figure of the results page for these runs of ``campaign``, JSON-ready."""
    now = now or timezone.now()
    run_ids = [r.pk for r in runs]
    reached = [str(o) for o in REACHED_OUTCOMES]
    params = {"runs": run_ids, "reached": reached}
    stores: dict[int, dict[str, Any]] = {}
    guides: dict[tuple[int, int | None], dict[str, Any]] = {}
    totals = dict.fromkeys(_TASK_FIELDS, 0)
    with connection.cursor() as cursor:
        cursor.execute(_TASKS_SQL, params)
        for grouping, store_id, guide_id, *values in cursor.fetchall():
            row = dict(zip(_TASK_FIELDS, values, strict=True))
            if grouping == 3:
                totals = row
            elif grouping == 1:
                stores[store_id] = row
            else:
                guides[(store_id, guide_id)] = row
        cursor.execute(_BREAKDOWN_SQL, params)
        outcomes: dict[str, int] = {}
        cancel_reasons: dict[str, int] = {}
        for kind, value, count in cursor.fetchall():
            (outcomes if kind == "outcome" else cancel_reasons)[value] = count

        attributed = {"orders": 0, "members": 0, "sales": "0.00"}
        cursor.execute(_TASK_WINDOW_SQL, params)
        first, last = cursor.fetchone()
        days = campaign.attribution_days or DEFAULT_ATTRIBUTION_DAYS
        if first is not None and run_ids:
            end = min(last + datetime.timedelta(days=days, seconds=1), now)
            sql, sql_params = attribution_sql(
                start=first, end=end, guide_ids=None, store_id=None, campaign_id=campaign.pk
            )
            sql_params.update({"dash_runs": run_ids, "reached": reached})
            cursor.execute(_ATTRIBUTED_SQL.format(attributed=sql + _ONLY_OUR_MEMBERS), sql_params)
            for grouping, store_id, guide_id, orders, members, sales in cursor.fetchall():
                row = {"orders": orders, "members": members, "sales": _money(sales)}
                if grouping == 3:
                    attributed = row
                elif grouping == 1:
                    stores.setdefault(store_id, dict.fromkeys(_TASK_FIELDS, 0)).update(row)
                else:
                    guides.setdefault((store_id, guide_id), dict.fromkeys(_TASK_FIELDS, 0)).update(row)

        windows = [_window(r, campaign, now) for r in runs]
        cursor.execute(
            _UPLIFT_SQL,
            {
                "runs": run_ids,
                "starts": [w[0] for w in windows],
                "ends": [w[1] for w in windows],
            },
        )
        groups = {
            holdout: {"members": n, "buyers": buyers, "sales": _money(sales), "sales_squares": str(squares)}
            for holdout, n, buyers, sales, squares in cursor.fetchall()
        }
    empty = {"members": 0, "buyers": 0, "sales": "0.00", "sales_squares": "0"}
    treated, holdout = groups.get(False, empty), groups.get(True, empty)
    conversion = stats.two_proportions(
        treated["buyers"], treated["members"], holdout["buyers"], holdout["members"]
    )
    sales = stats.welch_from_sums(
        treated["members"],
        float(treated["sales"]),
        float(treated["sales_squares"]),
        holdout["members"],
        float(holdout["sales"]),
        float(holdout["sales_squares"]),
    )
    store_names = dict(Store.objects.filter(pk__in=stores).values_list("pk", "name"))
    store_codes = dict(Store.objects.filter(pk__in=stores).values_list("pk", "code"))
    guide_names = dict(Guide.objects.filter(pk__in=[g for _s, g in guides if g]).values_list("pk", "name"))
    return {
        "campaign_id": campaign.pk,
        "run_ids": run_ids,
        "attribution_days": days,
        "window": {
            "start": min((w[0] for w in windows), default=now).isoformat(),
            "end": max((w[1] for w in windows), default=now).isoformat(),
        },
        "tasks": totals,
        "outcomes": outcomes,
        "cancel_reasons": cancel_reasons,
        "attributed": attributed,
        "stores": sorted(
            (
                {"store_id": sid, "code": store_codes.get(sid, ""), "name": store_names.get(sid, ""), **row}
                for sid, row in stores.items()
            ),
            key=lambda r: (-Decimal(r.get("sales", "0")), r["code"]),
        ),
        "guides": sorted(
            (
                {
                    "store_id": sid,
                    "store": store_names.get(sid, ""),
                    "guide_id": gid,
                    "name": guide_names.get(gid, "") if gid else "",
                    **row,
                }
                for (sid, gid), row in guides.items()
            ),
            key=lambda r: (-Decimal(r.get("sales", "0")), r["store"], r["name"]),
        ),
        "uplift": {
            "treated": treated,
            "holdout": holdout,
            "conversion": conversion.as_dict() if conversion else None,
            "sales_per_member": sales.as_dict() if sales else None,
        },
        "computed_at": now.isoformat(),
    }


def refresh_campaign_results(campaign_ids: Iterable[int], *, now: datetime.datetime) -> int:
    """Recompute and store the results of each campaign and each of its runs (inside the caller's
    audited transaction: ``dashboard.refresh.refresh_dashboard``)."""
    done = 0
    for campaign in Campaign.objects.filter(pk__in=list(campaign_ids)):
        runs = list(campaign.runs.order_by("started_at", "pk"))
        if not runs:
            continue
        CampaignResult.objects.filter(campaign_id=campaign.pk).delete()
        rows = [
            CampaignResult(
                campaign_id=campaign.pk,
                run_id=None,
                data=compute_results(campaign, runs, now=now),
                computed_at=now,
            )
        ]
        if len(runs) > 1:
            rows += [
                CampaignResult(
                    campaign_id=campaign.pk,
                    run_id=run.pk,
                    data=compute_results(campaign, [run], now=now),
                    computed_at=now,
                )
                for run in runs
            ]
        CampaignResult.objects.bulk_create(rows)
        done += 1
    return done


def results_for(campaign: Campaign, run: CampaignRun | None = None) -> dict[str, Any]:
    """The stored results of the campaign (or one run), else computed now (nothing stored)."""
    stored = CampaignResult.objects.filter(campaign_id=campaign.pk, run_id=run.pk if run else None).first()
    if stored is None and run is not None and campaign.runs.count() == 1:
        stored = CampaignResult.objects.filter(campaign_id=campaign.pk, run_id=None).first()
    if stored is not None:
        return stored.data
    runs = [run] if run else list(campaign.runs.order_by("started_at", "pk"))
    return compute_results(campaign, runs)
