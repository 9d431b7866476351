"""Demo data for the dashboard: one finished campaign with a holdout whose uplift shows.

``seed_campaign_results()`` runs after ``members.demo_data.seed_demo`` (it needs its stores, guides and
members): a win-back campaign for dormant and repeat members of the first stores, run 40 days ago with
a 20 % holdout; the guides completed most tasks (some late, some expired, a few cancelled), and the
reached members bought more often in the week after than the holdout did. Then the dashboard's facts
are computed, so the pages have figures at once. Safe to call again: a second call adds nothing.
"""

from __future__ import annotations

import datetime
import random
from decimal import Decimal
from typing import Any

from django.db.models import Q
from django.utils import timezone

from campaigns.models import Campaign, CampaignRun, RunMember, Script, Segment, Task, TaskChannel
from members.metrics import refresh_member_metrics
from members.models import Channel, Member, Order
from scrm import audit
from scrm.audit import Actor
from stores.models import Guide

from .refresh import refresh_dashboard

CAMPAIGN_NAME = "沉睡会员唤醒（演示）"
SEGMENT_NAME = "沉睡与复购会员（演示）"
ORDER_PREFIX = "DEMO-WB-"
HOLDOUT_PERCENT = Decimal("20.0")
AUDIENCE = 3000
STARTED_DAYS_AGO = 40
DUE_DAYS = 5
ATTRIBUTION_DAYS = 7
# Chance of an order within the window: reached members, treated members not reached, holdout.
BUY_REACHED, BUY_NOT_REACHED, BUY_HOLDOUT = 0.5, 0.12, 0.07

OUTCOMES = [
    (Task.Outcome.REACHED, 30),
    (Task.Outcome.VISIT_BOOKED, 12),
    (Task.Outcome.PURCHASED, 8),
    (Task.Outcome.NO_ANSWER, 30),
    (Task.Outcome.DECLINED, 14),
    (Task.Outcome.STOP, 3),
    (Task.Outcome.WRONG_NUMBER, 3),
]
REACHED = {Task.Outcome.REACHED, Task.Outcome.VISIT_BOOKED, Task.Outcome.PURCHASED}


def seed_campaign_results(*, seed: int = 2026, refresh: bool = True) -> dict[str, Any]:
    """Seed the finished demo campaign (once) and compute the dashboard's facts; returns counts."""
    if Campaign.objects.filter(name=CAMPAIGN_NAME).exists():
        return {"created": False}
    counts = _seed(seed)
    if refresh:
        counts["facts"] = refresh_dashboard(actor=Actor.system("seed_demo"), full=True)
    return counts


@audit.service
def _seed(seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    now = timezone.now()
    started = now - datetime.timedelta(days=STARTED_DAYS_AGO)
    opens = started + datetime.timedelta(hours=1)
    due = opens + datetime.timedelta(days=DUE_DAYS)

    guides_by_store: dict[int, list[int]] = {}
    for guide_id, store_id in Guide.objects.filter(status=Guide.Status.ACTIVE).values_list("pk", "store_id"):
        guides_by_store.setdefault(store_id, []).append(guide_id)
    members = list(
        Member.objects.filter(
            status=Member.Status.ACTIVE,
            home_store_id__in=list(guides_by_store),
            joined_at__lt=started,
        )
        .filter(Q(lifecycle_stage__in=["dormant", "repeat", "first_purchase"]))
        .order_by("pk")
        .values_list("pk", "home_store_id", "guide_id")[:AUDIENCE]
    )
    if not members:
        return {"created": False, "reason": "no members"}

    segment, _ = Segment.objects.get_or_create(
        name=SEGMENT_NAME,
        defaults={
            "definition": {
                "op": "all",
                "items": [
                    {"field": "lifecycle_stage", "op": "in", "value": ["dormant", "repeat", "first_purchase"]}
                ],
            },
            "description": "演示：沉睡、首购与复购会员",
        },
    )
    script, _ = Script.objects.get_or_create(
        title="唤醒问候（演示）",
        defaults={
            "body": "{salutation}您好，我是{store}的{guide}。好久不见，本周到店有新品和专属礼遇，期待您来！"
        },
    )
    campaign = Campaign.objects.create(
        name=CAMPAIGN_NAME,
        segment=segment,
        script=script,
        channel=TaskChannel.WECOM,
        starts_at=opens,
        due_days=DUE_DAYS,
        holdout_percent=HOLDOUT_PERCENT,
        attribution_days=ATTRIBUTION_DAYS,
        status=Campaign.Status.FINISHED,
        approved_at=started,
    )
    run = CampaignRun.objects.create(
        campaign=campaign,
        occurrence=started.date().isoformat(),
        state=CampaignRun.State.DONE,
        snapshot={
            "kind": "campaign",
            "campaign": campaign.name,
            "channel": campaign.channel,
            "due_days": DUE_DAYS,
            "holdout_percent": str(HOLDOUT_PERCENT),
            "opens_at": opens.isoformat(),
            "due_at": due.isoformat(),
        },
        counters={"members": len(members)},
        evaluated_at=started,
        finished_at=opens,
    )
    CampaignRun.objects.filter(pk=run.pk).update(started_at=started)

    audience, tasks, orders = [], [], []
    order_no = 0

    def buy(
        member_id: int, store_id: int, guide_id: int | None, after: datetime.datetime, days: float
    ) -> None:
        nonlocal order_no
        order_no += 1
        paid = after + datetime.timedelta(hours=rng.uniform(2, days * 24))
        amount = Decimal(rng.randrange(30000, 120000)) / 100
        orders.append(
            Order(
                channel=Channel.STORE,
                external_no=f"{ORDER_PREFIX}{campaign.pk}-{order_no:06d}",
                member_id=member_id,
                store_id=store_id,
                guide_id=guide_id,
                paid_at=min(paid, now - datetime.timedelta(hours=1)),
                amount=amount,
                item_count=rng.choice([1, 1, 2, 2, 3, 4]),
            )
        )

    outcome_values = [o for o, _w in OUTCOMES]
    outcome_weights = [w for _o, w in OUTCOMES]
    for member_id, store_id, guide_id in members:
        holdout = rng.random() < float(HOLDOUT_PERCENT) / 100
        audience.append(RunMember(run=run, member_id=member_id, store_id=store_id, holdout=holdout))
        if holdout:
            if rng.random() < BUY_HOLDOUT:
                buy(member_id, store_id, None, opens, DUE_DAYS + ATTRIBUTION_DAYS)
            continue
        guide = guide_id if guide_id in guides_by_store[store_id] else rng.choice(guides_by_store[store_id])
        task = Task(
            run=run,
            member_id=member_id,
            store_id=store_id,
            guide_id=guide,
            channel=TaskChannel.WECOM,
            title=campaign.name,
            opens_at=opens,
            due_at=due,
        )
        roll = rng.random()
        if roll < 0.12:
            task.state = Task.State.EXPIRED
        elif roll < 0.16:
            task.state = Task.State.CANCELLED
            task.cancel_reason = rng.choice([Task.CancelReason.CONSENT, Task.CancelReason.GUIDE_LEFT])
        else:
            task.state = Task.State.DONE
            task.outcome = rng.choices(outcome_values, outcome_weights)[0]
            late = rng.random() < 0.1
            task.completed_at = opens + datetime.timedelta(
                hours=rng.uniform(DUE_DAYS * 24, DUE_DAYS * 24 + 48)
                if late
                else rng.uniform(1, DUE_DAYS * 24 - 1)
            )
        tasks.append(task)
        if task.state == Task.State.DONE and task.outcome in REACHED:
            if rng.random() < BUY_REACHED:
                buy(member_id, store_id, guide, task.completed_at, ATTRIBUTION_DAYS - 0.5)
        elif rng.random() < BUY_NOT_REACHED:
            buy(member_id, store_id, None, opens, DUE_DAYS + ATTRIBUTION_DAYS)

    RunMember.objects.bulk_create(audience, batch_size=5000)
    Task.objects.bulk_create(tasks, batch_size=5000)
    Order.objects.bulk_create(orders, batch_size=5000)
    refresh_member_metrics(sorted({o.member_id for o in orders}))
    counts = {
        "created": True,
        "campaign": campaign.pk,
        "audience": len(audience),
        "holdout": sum(1 for a in audience if a.holdout),
        "tasks": len(tasks),
        "orders": len(orders),
    }
    audit.record(
        Actor.system("seed_demo"),
        "demo.campaign_seeded",
        target=campaign,
        changes=counts,
    )
    return counts
