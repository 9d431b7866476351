"""Event campaigns wake up from the paths that record the events: a member's join, a paid order."""

import datetime
from decimal import Decimal

import pytest
from django.utils import timezone

from campaigns.models import Campaign, CampaignRun
from members.models import Member
from members.services import OrderInput, OrderLineInput, create_member, record_orders

from .factories import CampaignFactory, build_brand, stores_segment

pytestmark = pytest.mark.django_db


def _order(member: Member, number: str) -> OrderInput:
    return OrderInput(
        channel="store",
        external_no=number,
        member=member,
        store=member.home_store,
        paid_at=timezone.now() - datetime.timedelta(minutes=5),
        amount=Decimal("199.00"),
        lines=[OrderLineInput(sku="SKU-1", category="上衣", quantity=1, amount=Decimal("199.00"))],
    )


def test_paid_orders_open_one_run_of_a_campaign_waiting_for_them(system_actor):
    stores, _ = build_brand(stores=1, members_per_store=3)
    campaign = CampaignFactory(
        segment=stores_segment(stores),
        status=Campaign.Status.RUNNING,
        schedule=Campaign.Schedule.EVENT,
        event="order_paid",
    )
    buyer = Member.objects.order_by("pk").first()

    record_orders([_order(buyer, "E-1")], actor=system_actor)
    record_orders([_order(buyer, "E-1")], actor=system_actor)  # a retried batch creates nothing

    run = CampaignRun.objects.get(campaign=campaign)
    assert run.occurrence.startswith("order_paid:")
    assert run.snapshot["member_ids"] == [buyer.pk]


def test_a_join_opens_a_run_and_campaigns_waiting_for_other_events_stay_quiet(system_actor):
    stores, _ = build_brand(stores=1, members_per_store=1)
    joined = CampaignFactory(
        segment=stores_segment(stores),
        status=Campaign.Status.RUNNING,
        schedule=Campaign.Schedule.EVENT,
        event="member_joined",
    )
    orders = CampaignFactory(
        segment=stores_segment(stores),
        status=Campaign.Status.RUNNING,
        schedule=Campaign.Schedule.EVENT,
        event="order_paid",
    )

    member = create_member(mobile="13912340000", home_store=stores[0], actor=system_actor)

    assert list(CampaignRun.objects.filter(campaign=joined).values_list("occurrence", flat=True)) == [
        f"member_joined:{member.pk}"
    ]
    assert not CampaignRun.objects.filter(campaign=orders).exists()
