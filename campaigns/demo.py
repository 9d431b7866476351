"""Demo campaigns on top of the demo brand (members.demo_data): what HQ and the guides see first.

Seeds the festival calendar, a contact policy, three scripts, three segments, a lifecycle journey and
one running campaign whose tasks are created here, in this process, so every demo guide opens
"Today" with work in it. Idempotent: a second run finds the campaign and changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from members.models import Tier
from scrm import audit
from scrm.audit import Actor

from . import dispatch, journey_services, segment_services, services
from .models import Campaign, CampaignRun, ContactPolicy, Journey, JourneyStep, RunStore, TaskChannel

DEMO_CAMPAIGN = "秋冬新品到店邀约"


@dataclass(frozen=True)
class DemoCampaigns:
    created: bool
    tasks: int


def _actor() -> Actor:
    user = get_user_model().objects.filter(username="hq_admin").first()
    return Actor.for_user(user) if user is not None else Actor.system("demo")


def seed_demo_campaigns() -> DemoCampaigns:
    """Seed once; returns how many tasks the demo campaign created."""
    if Campaign.objects.filter(name=DEMO_CAMPAIGN).exists():
        return DemoCampaigns(created=False, tasks=0)
    actor = _actor()
    with transaction.atomic():
        journey_services.seed_festivals(actor=actor)
        with audit.app_audited():
            ContactPolicy.objects.get_or_create(pk=1)
            audit.record(
                actor, "contact_policy.created", target_type="campaigns.contactpolicy", target_id="1"
            )
        invite = journey_services.save_script(
            None,
            actor=actor,
            title="新品到店邀约",
            body="{salutation}您好，我是{store}的{guide}。秋冬新品已到店，您是我们的{tier}会员，"
            "本周到店试穿可享专属礼遇，方便的话我帮您预留尺码？",
        )
        welcome = journey_services.save_script(
            None,
            actor=actor,
            title="新会员欢迎",
            body="{salutation}您好，欢迎加入我们！我是您的专属导购{guide}，有任何搭配问题随时找我。",
        )
        wake = journey_services.save_script(
            None,
            actor=actor,
            title="沉睡会员唤醒",
            body="{salutation}好久不见！{store}为您准备了回店礼，您现在有{points}积分可以使用。",
        )
        top_tiers = list(Tier.objects.order_by("-rank").values_list("pk", flat=True)[:2])
        active_buyers = segment_services.create_segment(
            name="高等级近期活跃会员",
            description="两个最高等级、近 180 天有消费、同意企业微信联系",
            definition={
                "op": "all",
                "items": [
                    {"field": "tier", "op": "in", "value": top_tiers},
                    {"field": "days_since_last_purchase", "op": "lte", "value": 180},
                    {"field": "consent_marketing", "op": "granted", "value": "wecom"},
                ],
            },
            actor=actor,
        )
        segment_services.create_segment(
            name="沉睡会员",
            description="90 天以上未消费、曾购买两次以上",
            definition={
                "op": "all",
                "items": [
                    {"field": "days_since_last_purchase", "op": "gt", "value": 90},
                    {"field": "orders_12m", "op": "gte", "value": 2},
                ],
            },
            actor=actor,
        )
        segment_services.create_segment(
            name="本月生日会员",
            description="未来 30 天内过生日（含农历生日）",
            definition={"op": "all", "items": [{"field": "birthday", "op": "in_next_days", "value": 30}]},
            actor=actor,
        )
        journey = Journey.objects.create(name="新会员旅程")
        for offset, script in ((3, welcome), (30, wake)):
            journey_services.save_journey_step(
                JourneyStep(
                    journey=journey,
                    name=f"入会第 {offset} 天",
                    event="joined",
                    offset_days=offset,
                    channel=TaskChannel.WECOM,
                    script=script,
                ),
                actor=actor,
            )
        journey_services.set_journey_active(journey, active=True, actor=actor)
        campaign = Campaign.objects.create(
            name=DEMO_CAMPAIGN,
            segment=active_buyers,
            script=invite,
            channel=TaskChannel.WECOM,
            due_days=5,
            holdout_percent=10,
            created_by=actor.user,
        )
        audit.record(actor, "campaign.created", target=campaign)
        services.approve_campaign(campaign, actor=actor)
        campaign.refresh_from_db()
        run = services.launch_campaign(campaign, actor=actor, now=timezone.now())
    tasks = _dispatch_inline(run) if run is not None else 0
    return DemoCampaigns(created=True, tasks=tasks)


def _dispatch_inline(run: CampaignRun) -> int:
    """Evaluate and create every store's tasks here (the worker would do the same after commit)."""
    dispatch.evaluate_run(run.pk)
    for store_id in RunStore.objects.filter(run=run, state=RunStore.State.PENDING).values_list(
        "store_id", flat=True
    ):
        dispatch.create_store_tasks(run.pk, store_id)
    dispatch.finish_run_if_complete(run.pk)
    return run.tasks.count()
