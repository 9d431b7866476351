"""A small brand with orders in the month the dashboard shows by default, the month before and the same
month a year earlier: every KPI has something to count, and the edge cases the definitions name."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from decimal import Decimal

from django.utils import timezone

from members.kpis import Period
from members.models import Channel, ExternalIdentity, Member
from stores.models import Guide, Region, Store
from tests.factories import GuideFactory, MemberFactory, OrderFactory, RegionFactory, StoreFactory


@dataclass
class World:
    period: Period
    region: Region
    other_region: Region
    stores: list[Store]
    guides: list[Guide]
    members: list[Member]


def at(day: datetime.date, hour: int = 12) -> datetime.datetime:
    return timezone.make_aware(datetime.datetime.combine(day, datetime.time(hour)))


def build_world() -> World:
    from dashboard.selectors import default_month

    period = default_month(timezone.localdate())
    previous = period.previous()
    last_year = period.same_period_last_year()
    region, other_region = RegionFactory(code="RD1", name="华东"), RegionFactory(code="RD2", name="华南")
    s1 = StoreFactory(code="DS1", name="一店", region=region)
    s2 = StoreFactory(code="DS2", name="二店", region=region)
    s3 = StoreFactory(code="DS3", name="三店", region=other_region)
    g1, g2, g3 = (
        GuideFactory(store=s1, name="甲"),
        GuideFactory(store=s1, name="乙"),
        GuideFactory(store=s3, name="丙"),
    )
    old = at(last_year.start - datetime.timedelta(days=30))
    members = [
        MemberFactory(home_store=s1, guide=g1, joined_at=old, consent_wecom=True),  # 0 repeat buyer
        MemberFactory(home_store=s1, guide=g2, joined_at=old),  # 1 churned (bought before only)
        MemberFactory(
            home_store=s2, joined_at=at(period.start + datetime.timedelta(days=3)), consent_sms=True
        ),  # 2 new, buys
        MemberFactory(
            home_store=s2, joined_at=at(period.start + datetime.timedelta(days=5))
        ),  # 3 new, no purchase
        MemberFactory(home_store=s3, guide=g3, joined_at=old),  # 4 online buyer, WeCom contact
        MemberFactory(home_store=s3, joined_at=old, status=Member.Status.MERGED),  # 5 merged: never counted
    ]
    ExternalIdentity.objects.create(member=members[4], platform="wecom_external", external_id="wm-1")
    d = period.start
    orders = [
        # member 0: two store orders this month (repeat), one last month, one last year
        (members[0], s1, g1, Channel.STORE, at(d + datetime.timedelta(days=1)), "100.00", 0, 2, "paid"),
        (
            members[0],
            s1,
            g1,
            Channel.STORE,
            at(d + datetime.timedelta(days=9)),
            "300.00",
            "50.00",
            3,
            "partially_refunded",
        ),
        (
            members[0],
            s1,
            None,
            Channel.STORE,
            at(previous.start + datetime.timedelta(days=2)),
            "80.00",
            0,
            1,
            "paid",
        ),
        (
            members[0],
            s1,
            None,
            Channel.STORE,
            at(last_year.start + datetime.timedelta(days=2)),
            "60.00",
            0,
            1,
            "paid",
        ),
        # member 1: bought last month only (churned), and a refunded order this month (does not count)
        (
            members[1],
            s1,
            g2,
            Channel.STORE,
            at(previous.start + datetime.timedelta(days=4)),
            "200.00",
            0,
            1,
            "paid",
        ),
        (
            members[1],
            s1,
            g2,
            Channel.STORE,
            at(d + datetime.timedelta(days=4)),
            "90.00",
            "90.00",
            1,
            "refunded",
        ),
        # member 2: new, buys in another store of the region, the last hour of the month
        (
            members[2],
            s1,
            None,
            Channel.STORE,
            at(period.end - datetime.timedelta(days=1), 23),
            "150.00",
            0,
            2,
            "paid",
        ),
        # member 4: an online order (no store: counts for the home store and the guide)
        (members[4], None, None, Channel.TMALL, at(d + datetime.timedelta(days=6)), "220.00", 0, 4, "paid"),
        (
            members[4],
            None,
            None,
            Channel.TMALL,
            at(previous.start + datetime.timedelta(days=6)),
            "120.00",
            0,
            1,
            "paid",
        ),
        # merged member: counted as a member's transaction by the order KPIs only
        (members[5], s3, None, Channel.STORE, at(d + datetime.timedelta(days=2)), "70.00", 0, 1, "paid"),
        # non-members
        (None, s1, None, Channel.STORE, at(d + datetime.timedelta(days=2)), "40.00", 0, 1, "paid"),
        (None, s3, None, Channel.STORE, at(d + datetime.timedelta(days=7)), "55.00", 0, 2, "paid"),
        (None, s3, None, Channel.STORE, at(d + datetime.timedelta(days=8)), "35.00", 0, 1, "cancelled"),
        (
            None,
            s2,
            None,
            Channel.STORE,
            at(last_year.start + datetime.timedelta(days=8)),
            "45.00",
            0,
            1,
            "paid",
        ),
        # first instant of the next month: out of the period
        (members[0], s1, g1, Channel.STORE, at(period.end, 0), "999.00", 0, 9, "paid"),
    ]
    for member, store, guide, channel, paid_at, amount, refunded, items, status in orders:
        OrderFactory(
            member=member,
            store=store,
            guide=guide,
            channel=channel,
            paid_at=paid_at,
            amount=Decimal(amount),
            refunded_amount=Decimal(refunded),
            item_count=items,
            status=status,
        )
    return World(period, region, other_region, [s1, s2, s3], [g1, g2, g3], members)
