"""Attribution on hand-built cases: window edges, two tasks, online orders, refunds, hand-overs."""

import datetime
from decimal import Decimal

import pytest
from django.utils import timezone

from campaigns.attribution import attributed_orders, attribution_by_guide
from campaigns.models import Task
from members.models import Channel, GuideAssignment, Order
from tests.campaigns.factories import CampaignFactory, CampaignRunFactory, TaskFactory
from tests.factories import GuideFactory, MemberFactory, OrderFactory, StoreFactory

pytestmark = pytest.mark.django_db

PAID = timezone.make_aware(datetime.datetime(2026, 3, 10, 15, 0))
START = PAID - datetime.timedelta(days=30)
END = PAID + datetime.timedelta(days=30)


@pytest.fixture
def shop():
    store = StoreFactory()
    first, second = GuideFactory(store=store), GuideFactory(store=store)
    member = MemberFactory(home_store=store, guide=first)
    GuideAssignment.objects.create(
        member=member, guide=first, started_at=PAID - datetime.timedelta(days=365), reason="joined"
    )
    return store, first, second, member


def done_task(member, guide, *, before: datetime.timedelta, outcome=Task.Outcome.REACHED, days=7, run=None):
    run = run or CampaignRunFactory(campaign=CampaignFactory(attribution_days=days))
    return TaskFactory(
        run=run,
        member=member,
        store=guide.store,
        guide=guide,
        state=Task.State.DONE,
        outcome=outcome,
        completed_at=PAID - before,
    )


def credited(**filters) -> dict[int, int | None]:
    return {row.order_id: row.task_id for row in attributed_orders(start=START, end=END, **filters)}


def test_an_order_exactly_n_days_after_the_task_is_credited(shop):
    _store, guide, _other, member = shop
    task = done_task(member, guide, before=datetime.timedelta(days=7))
    order = OrderFactory(member=member, paid_at=PAID)
    assert credited() == {order.pk: task.pk}


def test_an_order_a_second_past_the_window_is_not(shop):
    _store, guide, _other, member = shop
    done_task(member, guide, before=datetime.timedelta(days=7, seconds=1))
    OrderFactory(member=member, paid_at=PAID)
    assert credited() == {}


def test_the_window_is_the_campaigns_own(shop):
    _store, guide, _other, member = shop
    task = done_task(member, guide, before=datetime.timedelta(days=12), days=14)
    order = OrderFactory(member=member, paid_at=PAID)
    assert credited() == {order.pk: task.pk}


def test_a_task_completed_after_the_order_does_not_count(shop):
    _store, guide, _other, member = shop
    done_task(member, guide, before=-datetime.timedelta(minutes=1))
    OrderFactory(member=member, paid_at=PAID)
    assert credited() == {}


@pytest.mark.parametrize(
    ("outcome", "counts"),
    [
        (Task.Outcome.REACHED, True),
        (Task.Outcome.VISIT_BOOKED, True),
        (Task.Outcome.PURCHASED, True),
        (Task.Outcome.NO_ANSWER, False),
        (Task.Outcome.DECLINED, False),
        (Task.Outcome.WRONG_NUMBER, False),
        (Task.Outcome.STOP, False),
    ],
)
def test_only_reaching_outcomes_count(shop, outcome, counts):
    _store, guide, _other, member = shop
    done_task(member, guide, before=datetime.timedelta(days=1), outcome=outcome)
    OrderFactory(member=member, paid_at=PAID)
    assert bool(credited()) is counts


def test_two_tasks_the_most_recent_one_wins(shop):
    _store, first, second, member = shop
    done_task(member, first, before=datetime.timedelta(days=5))
    latest = done_task(member, second, before=datetime.timedelta(days=2))
    # a later unreached task does not take the credit away
    done_task(member, first, before=datetime.timedelta(days=1), outcome=Task.Outcome.NO_ANSWER)
    order = OrderFactory(member=member, paid_at=PAID, amount=Decimal("300.00"))
    assert credited() == {order.pk: latest.pk}
    totals = attribution_by_guide(start=START, end=END)
    assert set(totals) == {second.pk}
    assert totals[second.pk].sales == Decimal("300.00")
    assert totals[second.pk].members == 1


def test_an_online_order_counts_for_the_members_own_guide(shop):
    _store, guide, _other, member = shop
    task = done_task(member, guide, before=datetime.timedelta(days=3))
    order = OrderFactory(member=member, paid_at=PAID, channel=Channel.TMALL, store=None)
    assert credited() == {order.pk: task.pk}


def test_an_online_order_does_not_count_for_a_colleague_who_reached_the_member(shop):
    _store, _guide, colleague, member = shop
    done_task(member, colleague, before=datetime.timedelta(days=3))
    OrderFactory(member=member, paid_at=PAID, channel=Channel.TMALL, store=None)
    assert credited() == {}
    # but a store order after the colleague's call does count for the colleague
    store_order = OrderFactory(member=member, paid_at=PAID + datetime.timedelta(hours=1))
    assert set(credited()) == {store_order.pk}


def test_refunds_are_netted_and_refunded_orders_skipped(shop):
    _store, guide, _other, member = shop
    done_task(member, guide, before=datetime.timedelta(days=1))
    OrderFactory(
        member=member,
        paid_at=PAID,
        amount=Decimal("200.00"),
        refunded_amount=Decimal("50.00"),
        status=Order.Status.PARTIALLY_REFUNDED,
    )
    OrderFactory(member=member, paid_at=PAID, amount=Decimal("99.00"), status=Order.Status.REFUNDED)
    totals = attribution_by_guide(start=START, end=END)
    assert totals[guide.pk].orders == 1
    assert totals[guide.pk].sales == Decimal("150.00")


def test_work_before_a_hand_over_stays_with_the_original_guide(shop):
    _store, leaver, successor, member = shop
    # the leaver reached the member, then handed them over; the member bought afterwards in the store
    task = done_task(member, leaver, before=datetime.timedelta(days=4))
    GuideAssignment.objects.filter(member=member).update(ended_at=PAID - datetime.timedelta(days=2))
    GuideAssignment.objects.create(
        member=member, guide=successor, started_at=PAID - datetime.timedelta(days=2), reason="guide_left"
    )
    order = OrderFactory(member=member, paid_at=PAID)
    assert credited() == {order.pk: task.pk}
    assert credited(guide_ids=[successor.pk]) == {}


def test_filtering_by_guide_never_reassigns_the_credit(shop):
    _store, first, second, member = shop
    done_task(member, first, before=datetime.timedelta(days=5))
    done_task(member, second, before=datetime.timedelta(days=1))
    OrderFactory(member=member, paid_at=PAID)
    assert credited(guide_ids=[first.pk]) == {}


def test_orders_outside_the_period_are_left_out(shop):
    _store, guide, _other, member = shop
    done_task(member, guide, before=datetime.timedelta(days=1))
    OrderFactory(member=member, paid_at=PAID)
    assert attributed_orders(start=PAID + datetime.timedelta(seconds=1), end=END) == []
