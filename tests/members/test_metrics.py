import datetime
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.utils import timezone

from members.metrics import MetricsRefresh, refresh_member_metrics, refresh_member_metrics_detailed
from members.models import LifecycleTransition, Member
from scrm.models import AuditEvent
from tests.factories import MemberFactory, OrderFactory

pytestmark = pytest.mark.django_db

NOW = timezone.make_aware(datetime.datetime(2026, 6, 1, 12, 0))
FIELDS = [
    "first_purchase_at",
    "last_purchase_at",
    "order_count",
    "total_spend",
    "orders_12m",
    "spend_12m",
    "avg_order_value",
    "lifecycle_stage",
    "rfm_cell",
]


def days_ago(n: int) -> datetime.datetime:
    return NOW - datetime.timedelta(days=n)


def metrics(member: Member) -> dict:
    member.refresh_from_db()
    return {f: getattr(member, f) for f in FIELDS}


def test_a_member_without_orders_has_empty_metrics():
    member = MemberFactory()
    refresh_member_metrics([member.pk], now=NOW)
    assert metrics(member) == {
        "first_purchase_at": None,
        "last_purchase_at": None,
        "order_count": 0,
        "total_spend": 0,
        "orders_12m": 0,
        "spend_12m": 0,
        "avg_order_value": 0,
        "lifecycle_stage": "no_purchase",
        "rfm_cell": "",
    }


def test_metrics_count_paid_orders_net_of_refunds_and_ignore_cancelled_and_refunded_ones():
    member = MemberFactory()
    OrderFactory(member=member, paid_at=days_ago(400), amount=Decimal("1000"))
    OrderFactory(
        member=member,
        paid_at=days_ago(20),
        amount=Decimal("500"),
        refunded_amount=Decimal("100"),
        status="partially_refunded",
    )
    OrderFactory(
        member=member,
        paid_at=days_ago(10),
        amount=Decimal("900"),
        refunded_amount=Decimal("900"),
        status="refunded",
    )
    OrderFactory(member=member, paid_at=days_ago(5), amount=Decimal("700"), status="cancelled")
    refresh_member_metrics([member.pk], now=NOW)
    assert metrics(member) == {
        "first_purchase_at": days_ago(400),
        "last_purchase_at": days_ago(20),
        "order_count": 2,
        "total_spend": Decimal("1400.00"),
        "orders_12m": 1,
        "spend_12m": Decimal("400.00"),
        "avg_order_value": Decimal("700.00"),
        "lifecycle_stage": "repeat",
        "rfm_cell": "",  # no RFM edges cut yet (tests/members/test_rfm.py)
    }


@pytest.mark.parametrize(
    ("last_order_days_ago", "orders", "stage"),
    [
        (10, 1, "first_purchase"),
        (10, 3, "repeat"),
        (91, 3, "dormant"),
        (181, 1, "lost"),
        (90, 1, "first_purchase"),
    ],
)
def test_lifecycle_stage_follows_purchases_and_recency(last_order_days_ago, orders, stage):
    member = MemberFactory()
    for i in range(orders):
        OrderFactory(member=member, paid_at=days_ago(last_order_days_ago + i))
    refresh_member_metrics([member.pk], now=NOW)
    assert metrics(member)["lifecycle_stage"] == stage


def test_orders_of_other_members_and_non_members_do_not_leak_into_a_members_metrics():
    member, other = MemberFactory(), MemberFactory()
    OrderFactory(member=other, paid_at=days_ago(3))
    OrderFactory(member=None, store=member.home_store, paid_at=days_ago(3))
    refresh_member_metrics(None, now=NOW)
    assert metrics(member)["order_count"] == 0
    assert metrics(other)["order_count"] == 1


def test_the_nightly_recompute_gives_exactly_the_values_the_incremental_refresh_gave():
    members = MemberFactory.create_batch(6)
    for i, member in enumerate(members[:3]):
        OrderFactory(member=member, paid_at=days_ago(200 + i), amount=Decimal(80 + i))
    refresh_member_metrics(None, now=NOW)  # a nightly run: metrics, then RFM edges over 3 buyers
    for i, member in enumerate(members):
        for j in range(i):
            OrderFactory(member=member, paid_at=days_ago(15 * j + i), amount=Decimal(120 + 37 * j))
        refresh_member_metrics([member.pk], now=NOW)  # as the order path does, one member at a time
    incremental = {m.pk: metrics(m) for m in members}
    transitions = LifecycleTransition.objects.count()
    assert {m["rfm_cell"] for m in incremental.values()} - {""}  # scored against the stored edges
    # The nightly statement over every member, with the same edges: nothing to change, no transition.
    assert refresh_member_metrics_detailed(None, now=NOW) == MetricsRefresh(0, 0)
    assert {m.pk: metrics(m) for m in members} == incremental
    assert LifecycleTransition.objects.count() == transitions
    # After a nightly run (edges re-cut), an incremental refresh agrees with it too.
    refresh_member_metrics(None, now=NOW)
    nightly = {m.pk: metrics(m) for m in members}
    assert refresh_member_metrics([m.pk for m in members], now=NOW) == 0
    assert {m.pk: metrics(m) for m in members} == nightly


def test_the_recompute_command_refreshes_recency_and_is_audited():
    member = MemberFactory()
    OrderFactory(member=member, paid_at=timezone.now() - datetime.timedelta(days=100))
    refresh_member_metrics([member.pk], now=timezone.now() - datetime.timedelta(days=90))
    assert metrics(member)["lifecycle_stage"] == "first_purchase"
    call_command("recompute_member_metrics")
    assert metrics(member)["lifecycle_stage"] == "dormant"
    assert AuditEvent.objects.get(action="member.metrics_recomputed").changes == {
        "changed": 1,
        "transitions": 1,
        "rfm_cells_changed": 1,  # the only buyer, scored against edges cut over itself: "111"
        "rfm_populations": 1,
    }
    assert metrics(member)["rfm_cell"] == "111"
