"""Points per order: earned per yuan × tier multiplier without refunds, once; refunds take their share back;
points expire at the end of the 12th month, first in first out."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db.models import Sum

from loyalty import services
from loyalty.models import LoyaltyRun, OrderPoints
from members.models import Member, Order, PointsEntry
from members.services import OrderInput, OrderLineInput, add_points, record_orders
from scrm.audit import Actor
from scrm.models import AuditEvent
from tests.factories import MemberFactory

from .conftest import local

pytestmark = pytest.mark.django_db

ACTOR = Actor.system("tests")


def order_input(
    member: Member, number: str, amount: str, *, refunded: str = "0", status: str = "paid", paid_at=None
):
    return OrderInput(
        channel="store",
        external_no=number,
        paid_at=paid_at or local(2026, 11, 1, 12, 0),
        amount=Decimal(amount),
        refunded_amount=Decimal(refunded),
        status=status,
        member=member,
        store=member.home_store,
        lines=[OrderLineInput(sku="SKU1", category="护肤", quantity=1, amount=Decimal(amount))],
    )


def balance(member: Member) -> int:
    member.refresh_from_db(fields=["points_balance"])
    return member.points_balance


def test_an_order_earns_points_per_yuan_times_the_tier_multiplier_without_refunded_lines(tiers):
    member = MemberFactory(tier=tiers["silver"])  # ×1.2

    record_orders(
        [order_input(member, "A1", "300.00", refunded="100.00", status="partially_refunded")], actor=ACTOR
    )

    entry = PointsEntry.objects.get(member=member)
    assert entry.kind == PointsEntry.Kind.EARN
    assert entry.delta == 240  # floor((300 − 100) × 1 × 1.2)
    assert entry.ref == "A1"
    assert balance(member) == 240
    credit = OrderPoints.objects.get(order__external_no="A1")
    assert (credit.base_amount, credit.multiplier, credit.points) == (Decimal("200.00"), Decimal("1.20"), 240)


def test_points_per_yuan_and_fractions_round_down(tiers, program):
    program.points_per_yuan = Decimal("0.5")
    program.save()
    member = MemberFactory(tier=tiers["gold"])  # ×1.5

    record_orders([order_input(member, "A1", "99.90")], actor=ACTOR)

    assert balance(member) == 74  # floor(99.9 × 0.5 × 1.5) = floor(74.925)


def test_refunded_cancelled_and_non_member_orders_earn_nothing(tiers, store):
    member = MemberFactory(tier=tiers["basic"])
    record_orders(
        [
            order_input(member, "R1", "100", refunded="100", status="refunded"),
            order_input(member, "C1", "100", status="cancelled"),
            OrderInput(
                channel="store",
                external_no="N1",
                paid_at=local(2026, 11, 1),
                amount=Decimal("500"),
                store=store,
            ),
        ],
        actor=ACTOR,
    )

    assert not PointsEntry.objects.exists()
    assert not OrderPoints.objects.exists()


def test_an_order_never_earns_twice(tiers):
    member = MemberFactory(tier=tiers["basic"])
    created = record_orders([order_input(member, "A1", "100")], actor=ACTOR)

    again = services.on_orders_recorded([created[0].pk], actor=ACTOR)
    record_orders([order_input(member, "A1", "100")], actor=ACTOR)  # a retried batch

    assert again.credited_orders == 0
    assert PointsEntry.objects.filter(member=member).count() == 1
    assert balance(member) == 100
    assert AuditEvent.objects.filter(action="points.earned").count() == 1


def test_the_multiplier_is_the_tier_at_the_time_of_the_order(tiers):
    member = MemberFactory(tier=tiers["basic"])
    record_orders([order_input(member, "A1", "100")], actor=ACTOR)
    Member.objects.filter(pk=member.pk).update(tier=tiers["gold"])

    services.on_orders_recorded(OrderPoints.objects.values_list("order_id", flat=True), actor=ACTOR)

    assert balance(member) == 100


def test_earning_is_audited_once_per_batch_with_every_credit(tiers):
    first, second = MemberFactory(tier=tiers["basic"]), MemberFactory(tier=tiers["gold"])
    actor = Actor.system("pos")
    orders = record_orders([order_input(first, "A1", "100"), order_input(second, "A2", "10")], actor=actor)

    event = AuditEvent.objects.get(action="points.earned")
    assert event.target_type == "loyalty.orderpoints"
    assert event.changes["orders"] == 2
    assert event.changes["points"] == 115
    assert event.changes["credits"] == [[orders[0].pk, first.pk, 100], [orders[1].pk, second.pk, 15]]
    assert event.request_id == actor.request_id


def refund(order: Order, amount: str) -> None:
    amount_value = Decimal(amount)
    status = Order.Status.REFUNDED if amount_value == order.amount else Order.Status.PARTIALLY_REFUNDED
    Order.objects.filter(pk=order.pk).update(refunded_amount=amount_value, status=status)


def test_a_refund_reverses_its_share_of_the_credit_once(tiers):
    member = MemberFactory(tier=tiers["basic"])
    (order,) = record_orders([order_input(member, "A1", "199.00")], actor=ACTOR)
    assert balance(member) == 199

    refund(order, "100.00")
    first = services.on_orders_recorded([order.pk], actor=ACTOR)
    second = services.on_orders_recorded([order.pk], actor=ACTOR)

    assert (first.reversed_orders, first.reversed_points) == (1, 100)  # keeps floor(199 × 99 / 199) = 99
    assert second.reversed_orders == 0
    assert balance(member) == 99
    reversal = PointsEntry.objects.get(member=member, delta__lt=0)
    assert (reversal.kind, reversal.reason, reversal.ref) == ("adjust", services.REASON_REFUND, "A1")

    refund(order, "199.00")
    services.on_orders_recorded([order.pk], actor=ACTOR)

    assert balance(member) == 0
    credit = OrderPoints.objects.get(order=order)
    assert (credit.points, credit.reversed_points, credit.unrecovered_points) == (199, 199, 0)
    assert [
        e.changes["points"] for e in AuditEvent.objects.filter(action="points.reversed").order_by("id")
    ] == [
        -100,
        -99,
    ]


def test_points_already_spent_are_written_off_not_taken_below_zero(tiers):
    member = MemberFactory(tier=tiers["basic"])
    (order,) = record_orders([order_input(member, "A1", "100")], actor=ACTOR)
    add_points(member, delta=-80, kind=PointsEntry.Kind.REDEEM, actor=ACTOR)

    refund(order, "100")
    services.on_orders_recorded([order.pk], actor=ACTOR)

    assert balance(member) == 0
    credit = OrderPoints.objects.get(order=order)
    assert (credit.reversed_points, credit.unrecovered_points) == (100, 80)
    assert AuditEvent.objects.get(action="points.reversed").changes == {
        "order_id": order.pk,
        "order": "store:A1",
        "points": -20,
        "reversed": 100,
        "unrecovered": 80,
    }


def test_the_nightly_run_reverses_refunds_recorded_by_any_path(tiers):
    member = MemberFactory(tier=tiers["basic"])
    orders = record_orders([order_input(member, "A1", "100"), order_input(member, "A2", "50")], actor=ACTOR)
    refund(orders[0], "100")
    refund(orders[1], "25")

    run = services.reverse_refunded_points(actor=ACTOR)
    again = services.reverse_refunded_points(actor=ACTOR)

    assert (run.count, run.points, run.members) == (2, 125, 1)
    assert again.count == 0
    assert balance(member) == 25
    assert LoyaltyRun.objects.filter(kind=LoyaltyRun.Kind.REFUND_REVERSAL).count() == 2


def test_points_expire_at_the_end_of_the_twelfth_month(tiers):
    member = MemberFactory(tier=tiers["basic"])
    record_orders([order_input(member, "A1", "100", paid_at=local(2026, 1, 15, 10, 0))], actor=ACTOR)
    entry = PointsEntry.objects.get(member=member)
    assert entry.expires_at == local(2026, 12, 31, 23, 59, 59)

    on_the_last_day = services.expire_points(actor=ACTOR, now=local(2026, 12, 31, 23, 0))
    assert on_the_last_day.points == 0
    assert balance(member) == 100

    next_day = services.expire_points(actor=ACTOR, now=local(2027, 1, 1, 0, 30))
    twice = services.expire_points(actor=ACTOR, now=local(2027, 1, 1, 0, 40))

    assert (next_day.members, next_day.points) == (1, 100)
    assert twice.points == 0
    assert balance(member) == 0
    expiry = PointsEntry.objects.get(member=member, kind=PointsEntry.Kind.EXPIRE)
    assert (expiry.delta, expiry.reason) == (-100, services.REASON_EXPIRY)
    assert AuditEvent.objects.get(action="points.expired").changes == {"points": -100}


def test_spent_points_come_from_the_oldest_credit_first(tiers):
    member = MemberFactory(tier=tiers["basic"])
    record_orders(
        [
            order_input(member, "JAN", "100", paid_at=local(2026, 1, 10)),
            order_input(member, "MAR", "50", paid_at=local(2026, 3, 10)),
        ],
        actor=ACTOR,
    )
    add_points(member, delta=-120, kind=PointsEntry.Kind.REDEEM, actor=ACTOR)  # 100 of January + 20 of March

    january_lot = services.expire_points(actor=ACTOR, now=local(2027, 1, 2))
    march_lot = services.expire_points(actor=ACTOR, now=local(2027, 3, 1))

    assert january_lot.points == 0
    assert march_lot.points == 30
    assert balance(member) == 0


def test_points_of_a_late_order_already_past_expiry_expire_at_the_next_run(tiers):
    member = MemberFactory(tier=tiers["basic"])
    services.expire_points(actor=ACTOR, now=local(2027, 3, 1))  # a run before the late order arrives

    record_orders([order_input(member, "OLD", "80", paid_at=local(2026, 1, 5))], actor=ACTOR)
    run = services.expire_points(actor=ACTOR, now=local(2027, 3, 2))

    assert run.points == 80
    assert balance(member) == 0


def test_expiry_zero_months_means_points_never_expire(tiers, program):
    program.points_expiry_months = 0
    program.save()
    member = MemberFactory(tier=tiers["basic"])
    record_orders([order_input(member, "A1", "100", paid_at=local(2020, 1, 1))], actor=ACTOR)

    services.expire_points(actor=ACTOR, now=local(2027, 1, 1))

    assert PointsEntry.objects.get(member=member).expires_at is None
    assert balance(member) == 100


def test_the_ledger_sums_to_the_balance_after_earning_refunds_and_expiry(tiers):
    members = [MemberFactory(tier=tiers["basic"]) for _ in range(3)]
    orders = record_orders(
        [
            order_input(m, f"O{i}{j}", str(50 * (j + 1)), paid_at=local(2026, 1 + j, 3))
            for i, m in enumerate(members)
            for j in range(3)
        ],
        actor=ACTOR,
    )
    refund(orders[1], "30")
    services.reverse_refunded_points(actor=ACTOR)
    services.expire_points(actor=ACTOR, now=local(2027, 2, 1))

    for member in members:
        total = PointsEntry.objects.filter(member=member).aggregate(s=Sum("delta"))["s"]
        assert balance(member) == total
    # January and February credits expired (the refund already took 30 of February's); March's remain.
    assert [balance(m) for m in members] == [150, 150, 150]
