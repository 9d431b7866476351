"""KPIs against values computed by hand on a small fixture (the arithmetic is in the comments)."""

import datetime
from decimal import Decimal

import pytest
from django.utils import timezone

from members.kpis import (
    KpiReport,
    Period,
    Scope,
    kpi_report,
    previous_period_report,
    same_period_last_year_report,
)
from members.models import ExternalIdentity, LifecycleTransition, Member
from tests.factories import GuideFactory, MemberFactory, OrderFactory, RegionFactory, StoreFactory

pytestmark = pytest.mark.django_db

MAY = Period.month(2026, 5)


def at(*args: int) -> datetime.datetime:
    """Local (Asia/Shanghai) time."""
    return timezone.make_aware(datetime.datetime(*args))


@pytest.fixture
def brand():
    r1, r2 = RegionFactory(code="R1"), RegionFactory(code="R2")
    s1, s2, s3 = StoreFactory(region=r1), StoreFactory(region=r1), StoreFactory(region=r2)
    g1 = GuideFactory(store=s1)
    a = MemberFactory(home_store=s1, guide=g1, joined_at=at(2025, 1, 10), consent_wecom=True)
    b = MemberFactory(home_store=s1, joined_at=at(2025, 3, 1))
    c = MemberFactory(home_store=s2, joined_at=at(2026, 5, 10), consent_sms=True)
    MemberFactory(home_store=s3, joined_at=at(2026, 5, 20))  # D: new in May, has not bought
    e = MemberFactory(home_store=s1, guide=g1, joined_at=at(2024, 1, 1))
    MemberFactory(home_store=s3, joined_at=at(2026, 6, 5))  # joins after May
    MemberFactory(home_store=s1, joined_at=at(2024, 1, 1), status=Member.Status.MERGED)
    # A WeCom contact counts only with an exclusive guide: E is online, B is not.
    ExternalIdentity.objects.create(member=e, platform="wecom_external", external_id="wm-e")
    ExternalIdentity.objects.create(member=b, platform="wecom_external", external_id="wm-b")

    def order(member, store, when, amount, items=1, guide=None, **extra):
        return OrderFactory(
            member=member,
            store=store,
            guide=guide,
            paid_at=when,
            amount=Decimal(amount),
            item_count=items,
            **extra,
        )

    # May
    order(a, s1, at(2026, 5, 1, 0, 0), "100.00", 2, guide=g1)  # 1: first instant of May
    order(a, s1, at(2026, 5, 15, 12), "300.00", 1, guide=g1)  # 2
    order(
        b, None, at(2026, 5, 7), "200.00", 3, refunded_amount=Decimal("50.00"), status="partially_refunded"
    )  # 3
    order(c, s2, at(2026, 5, 12), "150.00", 1)  # 4
    order(None, s1, at(2026, 5, 20), "250.00", 5, guide=g1)  # 5: non-member
    order(None, s3, at(2026, 5, 21), "80.00", 1)  # 6: non-member
    order(a, s1, at(2026, 5, 25), "999.00", 1, status="cancelled")  # 7: not a transaction
    order(
        e, s1, at(2026, 5, 26), "400.00", 1, refunded_amount=Decimal("400.00"), status="refunded"
    )  # 8: neither
    # April
    order(b, s1, at(2026, 4, 10), "120.00", 1)  # 10
    order(e, s1, at(2026, 4, 20), "60.00", 1)  # 11
    order(a, s1, at(2026, 4, 22), "40.00", 1, guide=g1)  # 12
    # Earlier: 13 is inside the twelve months ending with May, 14 is not
    order(e, s1, at(2025, 7, 1), "500.00", 2)  # 13
    order(a, s1, at(2025, 5, 15), "700.00", 1)  # 14
    order(a, s1, at(2026, 6, 1, 0, 0), "55.00", 1)  # 15: first instant of June, outside May

    def transition(member, from_stage, to_stage, when):
        LifecycleTransition.objects.create(
            member=member, from_stage=from_stage, to_stage=to_stage, at=when, recorded_at=when
        )

    transition(e, "repeat", "lost", at(2026, 5, 10))
    transition(b, "dormant", "repeat", at(2026, 5, 7))
    transition(a, "lost", "repeat", at(2026, 4, 22))  # April
    transition(c, "no_purchase", "first_purchase", at(2026, 5, 12))  # neither lost nor reactivated
    return {"r1": r1, "r2": r2, "s1": s1, "s2": s2, "s3": s3, "g1": g1}


def test_brand_kpis_for_may(brand, django_assert_num_queries):
    with django_assert_num_queries(4):
        report = kpi_report(MAY)
    assert isinstance(report, KpiReport)
    # Transactions 1–6; members' 1–4. Sales 100+300+150+150+250+80 = 1030; members' 700. Items 13.
    assert (report.transactions, report.member_transactions) == (6, 4)
    assert (report.sales, report.member_sales, report.items) == (Decimal("1030.00"), Decimal("700.00"), 13)
    assert report.member_transaction_share == Decimal("0.6667")  # 4 / 6
    assert report.member_sales_share == Decimal("0.6796")  # 700 / 1030
    assert report.average_order_value == Decimal("171.67")  # 1030 / 6
    assert report.basket_size == Decimal("2.17")  # 13 / 6
    # Members A, B, C, D, E (F joins in June, one is merged); online A (WeCom), C (SMS), E (guide + WeCom).
    assert (report.members, report.online_members, report.online_rate) == (5, 3, Decimal("0.6000"))
    # Bought in May: A (twice), B, C; E's only May order was refunded.
    assert (report.active_members, report.active_rate) == (3, Decimal("0.6000"))
    assert (report.repeat_buyers, report.repurchase_rate) == (1, Decimal("0.3333"))
    # Bought in April: A, B, E; E did not buy in May.
    assert (report.previous_buyers, report.churned_members, report.churn_rate) == (3, 1, Decimal("0.3333"))
    # Joined in May: C (bought two days later) and D (not yet).
    assert (report.new_members, report.converted_new_members) == (2, 1)
    assert report.first_purchase_conversion == Decimal("0.5000")
    # June 2025 – May 2026: A 100+300+40, B 150+120, C 150, E 60+500 → 1420 over 8 orders by 4 buyers.
    assert (report.annual_buyers, report.annual_transactions, report.annual_sales) == (
        4,
        8,
        Decimal("1420.00"),
    )
    assert report.purchase_frequency == Decimal("2.00")
    assert report.annual_contribution_per_member == Decimal("355.00")  # = 2.00 × 177.50
    assert (report.lost_members, report.reactivated_members) == (1, 1)


def test_store_kpis_count_its_orders_and_its_members_online_orders(brand):
    report = kpi_report(MAY, Scope.store(brand["s1"]))
    # Orders 1, 2, 5 placed in S1 and 3 (online, by B whose home store is S1).
    assert (report.transactions, report.member_transactions, report.items) == (4, 3, 11)
    assert (report.sales, report.member_sales) == (Decimal("800.00"), Decimal("550.00"))
    assert report.member_transaction_share == Decimal("0.7500")
    assert report.member_sales_share == Decimal("0.6875")
    assert (report.average_order_value, report.basket_size) == (Decimal("200.00"), Decimal("2.75"))
    # Members A, B, E.
    assert (report.members, report.online_members, report.online_rate) == (3, 2, Decimal("0.6667"))
    assert (report.active_members, report.active_rate, report.repurchase_rate) == (
        2,
        Decimal("0.6667"),
        Decimal("0.5000"),
    )
    assert (report.previous_buyers, report.churned_members) == (3, 1)
    assert (report.new_members, report.first_purchase_conversion) == (0, None)
    assert (report.annual_buyers, report.annual_transactions, report.annual_sales) == (
        3,
        7,
        Decimal("1270.00"),
    )
    assert report.annual_contribution_per_member == Decimal("423.33")
    assert (report.lost_members, report.reactivated_members) == (1, 1)


def test_region_and_guide_kpis(brand):
    east = kpi_report(MAY, Scope.region(brand["r1"]))
    assert (east.transactions, east.sales, east.members, east.new_members) == (5, Decimal("950.00"), 4, 1)
    west = kpi_report(MAY, Scope.region(brand["r2"]))
    assert (west.transactions, west.member_transactions, west.member_transaction_share) == (
        1,
        0,
        Decimal("0"),
    )
    assert (west.members, west.new_members, west.first_purchase_conversion) == (1, 1, Decimal("0"))
    assert west.repurchase_rate is None  # nobody bought: undefined, not zero

    guide = kpi_report(MAY, Scope.guide(brand["g1"]))
    # Orders credited to G1: 1, 2, 5; its members A and E.
    assert (guide.transactions, guide.member_transactions, guide.sales) == (3, 2, Decimal("650.00"))
    assert (guide.members, guide.online_rate, guide.active_rate) == (2, Decimal("1.0000"), Decimal("0.5000"))
    assert (guide.previous_buyers, guide.churned_members, guide.churn_rate) == (2, 1, Decimal("0.5000"))


def test_previous_period_and_same_period_last_year(brand):
    april = previous_period_report(MAY)
    assert april.period == Period.month(2026, 4)
    # Orders 10, 11, 12: 120 + 60 + 40.
    assert (april.transactions, april.sales, april.active_members) == (3, Decimal("220.00"), 3)
    last_may = same_period_last_year_report(MAY)
    assert last_may.period == Period.month(2025, 5)
    assert (last_may.transactions, last_may.sales) == (1, Decimal("700.00"))  # order 14


def test_periods():
    assert Period.month(2026, 1).previous() == Period.month(2025, 12)
    assert Period.month(2026, 12).end == datetime.date(2027, 1, 1)
    assert Period.year(2026).previous() == Period.year(2025)
    assert Period(datetime.date(2026, 4, 1), datetime.date(2026, 7, 1)).previous() == Period(
        datetime.date(2026, 1, 1), datetime.date(2026, 4, 1)
    )
    week = Period(datetime.date(2026, 5, 11), datetime.date(2026, 5, 18))
    assert week.previous() == Period(datetime.date(2026, 5, 4), datetime.date(2026, 5, 11))
    leap_day = Period(datetime.date(2024, 2, 29), datetime.date(2024, 3, 1))
    assert leap_day.same_period_last_year() == Period(datetime.date(2023, 2, 28), datetime.date(2023, 3, 1))
    assert Period.days(30, ending=datetime.date(2026, 6, 1)).start == datetime.date(2026, 5, 2)
    with pytest.raises(ValueError):
        Period(datetime.date(2026, 5, 2), datetime.date(2026, 5, 1))
    with pytest.raises(ValueError):
        Scope("store")
