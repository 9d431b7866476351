"""Reads for campaigns and dispatch: the launch preview and a run's live progress."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any

from django.db import connection
from django.db.models import Count
from django.utils import timezone

from members.models import Member
from stores.models import Guide, Store

from . import dispatch
from .models import Campaign, CampaignRun, RunStore, Task


@dataclass
class StorePreview:
    store_id: int
    label: str
    total: int = 0
    no_consent: int = 0
    frequency_cap: int = 0
    holdout: int = 0
    tasks: int = 0
    manager_queue: int = 0


@dataclass
class GuidePreview:
    guide_id: int
    label: str
    store_label: str
    exclusive: int = 0
    balanced: int = 0

    @property
    def total(self) -> int:
        return self.exclusive + self.balanced


@dataclass
class CampaignPreview:
    """What launching now would do. The holdout is drawn with a stand-in seed (the real draw is keyed by
    the run), so its count is the expected size, not the exact members."""

    total: int = 0
    no_consent: int = 0
    frequency_cap: int = 0
    holdout: int = 0
    tasks: int = 0
    manager_queue: int = 0
    stores: list[StorePreview] = field(default_factory=list)
    guides: list[GuidePreview] = field(default_factory=list)
    sample_script: str = ""
    policy: dict[str, Any] = field(default_factory=dict)
    opens_at: datetime.datetime | None = None
    due_at: datetime.datetime | None = None


def _preview_rows(campaign: Campaign, policy: dict[str, Any], now: datetime.datetime) -> list[tuple]:
    from .segments import segment_members

    members = segment_members(campaign.segment.definition)
    audience, audience_params = members.order_by().values("pk", "home_store_id").query.sql_with_params()
    cap_max, since, _max = dispatch._cap_params(policy, now)
    threshold = dispatch.holdout_threshold(campaign.holdout_percent)
    sql = f"""
WITH seg AS (
    SELECT m.id, m.home_store_id AS store_id,
           CASE WHEN g.id IS NOT NULL AND g.status = 'active' AND g.store_id = m.home_store_id
                THEN g.id END AS own_guide,
           {dispatch.consent_sql(campaign.channel)} AS consented,
           {dispatch.capped_sql()} AS capped,
           {dispatch.holdout_bucket_sql("%s", "m.id")} < %s AS holdout
      FROM members_member m
      LEFT JOIN stores_guide g ON g.id = m.guide_id
     WHERE m.id IN (SELECT a.id FROM ({audience}) AS a(id, home_store_id))
)
SELECT store_id, own_guide, count(*),
       count(*) FILTER (WHERE NOT consented),
       count(*) FILTER (WHERE consented AND capped),
       count(*) FILTER (WHERE consented AND NOT capped AND holdout),
       count(*) FILTER (WHERE consented AND NOT capped AND NOT holdout)
  FROM seg
 GROUP BY store_id, own_guide
 ORDER BY store_id"""
    params = [cap_max, since, _max, f"preview-{campaign.pk}", threshold, *audience_params]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def preview_campaign(campaign: Campaign, *, now: datetime.datetime | None = None) -> CampaignPreview:
    """Counts per store and guide, and exclusions by reason, as a launch now would make them.

    One grouped query over the segment (per store and exclusive guide); the balancing among the
    store's guides is simulated from their current open tasks, as the store task does it.
    """
    now = now or timezone.now()
    policy = dispatch.policy_snapshot()
    preview = CampaignPreview(policy=policy)
    start = max(now, campaign.starts_at) if campaign.starts_at else now
    preview.opens_at, preview.due_at = dispatch.task_window(
        start=start, due_days=campaign.due_days, policy=policy
    )
    rows = _preview_rows(campaign, policy, now)
    store_ids = sorted({row[0] for row in rows})
    stores = {s.pk: str(s) for s in Store.objects.filter(pk__in=store_ids)}
    guides = list(
        Guide.objects.filter(store_id__in=store_ids, status=Guide.Status.ACTIVE).order_by("store_id", "pk")
    )
    guide_rows = {g.pk: GuidePreview(g.pk, str(g), stores.get(g.store_id, "")) for g in guides}
    pools: dict[int, list[int]] = {}
    for g in guides:
        if g.position == Guide.Position.GUIDE:
            pools.setdefault(g.store_id, []).append(g.pk)
    loads = dict(
        Task.objects.filter(guide_id__in=[g.pk for g in guides], state=Task.State.OPEN)
        .values_list("guide_id")
        .annotate(n=Count("pk"))
        .order_by()
    )
    by_store: dict[int, StorePreview] = {}
    to_balance: dict[int, int] = {}
    exclusive_first = campaign.assignment == Campaign.Assignment.EXCLUSIVE_FIRST
    for store_id, own_guide, total, no_consent, capped, holdout, tasks in rows:
        row = by_store.setdefault(store_id, StorePreview(store_id, stores.get(store_id, str(store_id))))
        row.total += total
        row.no_consent += no_consent
        row.frequency_cap += capped
        row.holdout += holdout
        row.tasks += tasks
        if campaign.assignment == Campaign.Assignment.MANAGER:
            row.manager_queue += tasks
        elif exclusive_first and own_guide is not None and own_guide in guide_rows:
            guide_rows[own_guide].exclusive += tasks
            if own_guide in loads or own_guide in pools.get(store_id, []):
                loads[own_guide] = loads.get(own_guide, 0) + tasks
        else:
            to_balance[store_id] = to_balance.get(store_id, 0) + tasks
    for store_id, count in to_balance.items():
        pool = pools.get(store_id, [])
        if not pool:
            by_store[store_id].manager_queue += count
            continue
        store_loads = {pk: loads.get(pk, 0) for pk in pool}
        for guide_id in dispatch.assign_least_loaded(count, store_loads):
            guide_rows[guide_id].balanced += 1
    preview.stores = sorted(by_store.values(), key=lambda s: s.label)
    preview.guides = [g for g in guide_rows.values() if g.total]
    for row in preview.stores:
        preview.total += row.total
        preview.no_consent += row.no_consent
        preview.frequency_cap += row.frequency_cap
        preview.holdout += row.holdout
        preview.tasks += row.tasks
        preview.manager_queue += row.manager_queue
    preview.sample_script = sample_script(campaign)
    return preview


def sample_script(campaign: Campaign) -> str:
    """The script filled in for one real member of the segment (with consent), or with empty data."""
    from .scripts import render_script
    from .segments import segment_members

    members = segment_members(campaign.segment.definition)
    member = (
        members.filter(pk__in=_consenting(campaign.channel))
        .select_related("home_store", "guide", "tier")
        .first()
        or members.select_related("home_store", "guide", "tier").first()
    )
    if member is None:
        return campaign.script.body
    return render_script(
        campaign.script.body, member=member, store=member.home_store, guide=member.guide, coupon=""
    )


def _consenting(channel: str) -> Any:
    from .segments import channel_consent_q

    return Member.objects.filter(channel_consent_q(channel)).values("pk")


# --------------------------------------------------------------------------------------------------
# Progress


def run_progress(run: CampaignRun) -> dict[str, Any]:
    """A run's progress as JSON-ready data: counters, and expected/created per store."""
    stores = list(
        RunStore.objects.filter(run=run)
        .select_related("store")
        .order_by("store__code")
        .values(
            "store_id", "store__code", "store__name", "expected", "created", "skipped", "unassigned", "state"
        )
    )
    labels = dict(RunStore.State.choices)
    expected = sum(s["expected"] for s in stores)
    created = sum(s["created"] for s in stores)
    done = sum(1 for s in stores if s["state"] != RunStore.State.PENDING)
    finished = run.state in (
        CampaignRun.State.DONE,
        CampaignRun.State.FAILED,
        CampaignRun.State.CANCELLED,
    )
    return {
        "state": run.state,
        "state_label": str(run.get_state_display()),
        "finished": finished,
        "counters": run.counters or {},
        "expected": expected,
        "created": created,
        "percent": 100 if finished and not expected else (round(100 * created / expected) if expected else 0),
        "stores_done": done,
        "stores_total": len(stores),
        "stores": [
            {
                "id": s["store_id"],
                "code": s["store__code"],
                "name": s["store__name"],
                "expected": s["expected"],
                "created": s["created"],
                "skipped": s["skipped"],
                "unassigned": s["unassigned"],
                "state": s["state"],
                "state_label": str(labels.get(s["state"], s["state"])),
            }
            for s in stores
        ],
    }
