import datetime
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from members import services
from members.models import ConsentRecord, GuideAssignment, Member, Order, PointsEntry
from members.services import OrderInput, OrderLineInput
from scrm.audit import Actor
from scrm.models import AuditEvent
from tests.factories import GuideFactory, MemberFactory, StoreFactory

pytestmark = pytest.mark.django_db


def test_create_member_normalises_the_mobile_and_is_audited(store, hq_operator):
    member = services.create_member(
        mobile="138 0013 8000", name=" 王小明 ", home_store=store, actor=Actor.for_user(hq_operator)
    )
    assert member.mobile == "+8613800138000"
    assert member.name == "王小明"
    event = AuditEvent.objects.get(action="member.created")
    assert (event.target_id, event.actor, event.store_id) == (str(member.pk), hq_operator, store.pk)
    assert event.changes["mobile"] == "138****8000"  # the trail outlives erasure: no full number in it


def test_create_member_refuses_a_duplicate_mobile_in_another_shape_and_writes_nothing(store, system_actor):
    services.create_member(mobile="13800138000", home_store=store, actor=system_actor)
    with pytest.raises(ValidationError):
        services.create_member(mobile="+86 138-0013-8000", home_store=store, actor=system_actor)
    assert Member.objects.count() == 1
    assert AuditEvent.objects.filter(action="member.created").count() == 1


def test_create_member_with_a_guide_opens_the_assignment_history(store, guide, system_actor):
    member = services.create_member(mobile="13800138001", home_store=store, guide=guide, actor=system_actor)
    assert member.guide == guide
    assignment = GuideAssignment.objects.get(member=member)
    assert (assignment.guide, assignment.ended_at, assignment.reason) == (guide, None, "joined")


def test_update_member_records_old_and_new_values_only_for_what_changed(system_actor):
    member = MemberFactory(name="李雷", gender="U")
    services.update_member(member, actor=system_actor, name="李雷", gender="M")
    event = AuditEvent.objects.get(action="member.updated")
    assert event.changes == {"gender": ["U", "M"]}
    services.update_member(member, actor=system_actor, gender="M")
    assert AuditEvent.objects.filter(action="member.updated").count() == 1


def test_reassigning_a_guide_closes_the_old_binding_and_keeps_the_history(store, system_actor):
    first, second = GuideFactory(store=store), GuideFactory(store=store)
    member = MemberFactory(home_store=store)
    services.assign_guide(member, first, actor=system_actor, reason="hq")
    services.assign_guide(member, second, actor=system_actor, reason="manager")
    history = list(GuideAssignment.objects.filter(member=member).order_by("started_at", "id"))
    assert [a.guide for a in history] == [first, second]
    assert history[0].ended_at is not None and history[1].ended_at is None
    member.refresh_from_db()
    assert member.guide == second


def test_a_guide_of_another_store_or_who_left_cannot_take_the_member(store, system_actor):
    member = MemberFactory(home_store=store)
    with pytest.raises(ValidationError):
        services.assign_guide(member, GuideFactory(store=StoreFactory()), actor=system_actor, reason="hq")
    gone = GuideFactory(store=store, status="left", left_on=datetime.date(2026, 1, 1))
    with pytest.raises(ValidationError):
        services.assign_guide(member, gone, actor=system_actor, reason="hq")
    assert not GuideAssignment.objects.filter(member=member).exists()


def test_the_database_allows_one_open_assignment_per_member(store, system_actor):
    member = MemberFactory(home_store=store)
    guide = GuideFactory(store=store)
    GuideAssignment.objects.create(member=member, guide=guide, started_at=timezone.now(), reason="hq")
    with pytest.raises(IntegrityError), transaction.atomic():
        GuideAssignment.objects.create(member=member, guide=guide, started_at=timezone.now(), reason="hq")


def test_points_balance_always_equals_the_ledger_and_cannot_go_negative(system_actor):
    member = MemberFactory()
    services.add_points(member, delta=300, kind="earn", actor=system_actor, ref="NO1")
    services.add_points(member, delta=-120, kind="redeem", actor=system_actor)
    member.refresh_from_db()
    assert (
        member.points_balance
        == 180
        == sum(PointsEntry.objects.filter(member=member).values_list("delta", flat=True))
    )
    with pytest.raises(ValidationError):
        services.add_points(member, delta=-181, kind="redeem", actor=system_actor)
    member.refresh_from_db()
    assert member.points_balance == 180
    assert PointsEntry.objects.filter(member=member).count() == 2
    assert AuditEvent.objects.filter(action="points.added").count() == 2


def test_one_statement_of_many_ledger_rows_moves_each_balance_by_their_sum(system_actor):
    first, second = MemberFactory(), MemberFactory()
    PointsEntry.objects.bulk_create(
        [
            PointsEntry(member=first, delta=100, kind="earn"),
            PointsEntry(member=first, delta=-30, kind="redeem"),
            PointsEntry(member=second, delta=7, kind="earn"),
        ]
    )
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.points_balance, second.points_balance) == (70, 7)
    # a statement that would leave a balance below zero is refused whole
    with pytest.raises(IntegrityError), transaction.atomic():
        PointsEntry.objects.bulk_create(
            [
                PointsEntry(member=first, delta=-71, kind="redeem"),
                PointsEntry(member=second, delta=1, kind="earn"),
            ]
        )
    second.refresh_from_db()
    assert second.points_balance == 7


def test_the_balance_cannot_be_written_directly_and_the_ledger_cannot_be_rewritten(system_actor):
    member = MemberFactory()
    services.add_points(member, delta=50, kind="earn", actor=system_actor)
    with pytest.raises(IntegrityError), transaction.atomic():
        Member.objects.filter(pk=member.pk).update(points_balance=10_000)
    with pytest.raises(Exception, match="append-only"), transaction.atomic():
        PointsEntry.objects.filter(member=member).update(delta=5000)
    with pytest.raises(Exception, match="append-only"), transaction.atomic():
        PointsEntry.objects.filter(member=member).delete()
    member.refresh_from_db()
    assert member.points_balance == 50


def test_a_points_kind_with_the_wrong_sign_is_refused(system_actor):
    member = MemberFactory()
    with pytest.raises(ValidationError):
        services.add_points(member, delta=-5, kind="earn", actor=system_actor)
    assert not PointsEntry.objects.exists()


def test_consent_is_default_deny_and_the_flag_projects_the_latest_event(system_actor):
    member = MemberFactory()
    assert (member.consent_sms, member.consent_wecom) == (False, False)
    services.record_consent(
        member,
        channel="sms",
        action="grant",
        source="store_pos",
        policy_version="2024-01",
        actor=system_actor,
    )
    member.refresh_from_db()
    assert member.consent_sms is True
    services.record_consent(
        member, channel="sms", action="withdraw", source="guide", policy_version="2024-01", actor=system_actor
    )
    member.refresh_from_db()
    assert member.consent_sms is False
    assert list(
        ConsentRecord.objects.filter(member=member).order_by("at", "id").values_list("action", flat=True)
    ) == ["grant", "withdraw"]
    with pytest.raises(Exception, match="append-only"), transaction.atomic():
        ConsentRecord.objects.filter(member=member).update(action="grant")


def test_a_service_notice_consent_does_not_open_marketing(system_actor):
    member = MemberFactory()
    services.record_consent(
        member,
        channel="sms",
        purpose="service",
        action="grant",
        source="api",
        policy_version="2024-01",
        actor=system_actor,
    )
    member.refresh_from_db()
    assert member.consent_sms is False


def _order(no, member, *, days_ago=5, amount="100.00", status="paid", channel="store"):
    return OrderInput(
        channel=channel,
        external_no=no,
        member=member,
        store=member.home_store if member else None,
        paid_at=timezone.now() - datetime.timedelta(days=days_ago),
        amount=Decimal(amount),
        status=status,
        lines=[OrderLineInput(sku="SKU1", category="护肤", quantity=2, amount=Decimal(amount))],
    )


def test_record_orders_is_idempotent_by_channel_and_number(system_actor):
    member = MemberFactory()
    batch = [_order("A1", member), _order("A2", member, channel="tmall"), _order("A3", None)]
    assert len(services.record_orders(batch, actor=system_actor)) == 3
    assert services.record_orders(batch, actor=system_actor) == []
    assert Order.objects.count() == 3
    assert Order.objects.get(external_no="A3").member is None
    assert Order.objects.get(external_no="A1").lines.get().quantity == 2
    assert Order.objects.get(external_no="A1").item_count == 2
    # One audit event per batch lists every order created; the repeated batch created none.
    event = AuditEvent.objects.get(action="orders.created")
    assert event.changes["count"] == 3
    assert sorted(row[2] for row in event.changes["orders"]) == ["A1", "A2", "A3"]


def test_the_same_number_on_two_channels_is_two_orders_but_twice_in_a_batch_is_refused(system_actor):
    member = MemberFactory()
    services.record_orders([_order("X", member), _order("X", member, channel="jd")], actor=system_actor)
    with pytest.raises(ValidationError):
        services.record_orders([_order("Y", member), _order("Y", member)], actor=system_actor)
    assert not Order.objects.filter(external_no="Y").exists()


def test_orders_update_the_buyers_metrics_at_once(system_actor):
    member = MemberFactory()
    services.record_orders([_order("M1", member, days_ago=40, amount="300.00")], actor=system_actor)
    member.refresh_from_db()
    assert (member.order_count, member.lifecycle_stage, member.total_spend) == (
        1,
        "first_purchase",
        Decimal("300.00"),
    )
    services.record_orders([_order("M2", member, days_ago=3, amount="100.00")], actor=system_actor)
    member.refresh_from_db()
    assert member.order_count == 2
    assert member.lifecycle_stage == "repeat"
    assert member.avg_order_value == Decimal("200.00")
    assert (
        member.rfm_cell == ""
    )  # scored once the nightly run has cut the RFM edges (tests/members/test_rfm.py)


def test_a_non_positive_quantity_or_a_refund_above_the_amount_is_refused_by_the_database():
    order = Order.objects.create(
        channel="store", external_no="Q1", paid_at=timezone.now(), amount=Decimal("10")
    )
    with pytest.raises(IntegrityError), transaction.atomic():
        order.lines.create(line_no=1, sku="S", category="c", quantity=0, amount=Decimal("1"))
    with pytest.raises(IntegrityError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("UPDATE members_order SET refunded_amount = 11 WHERE id = %s", [order.pk])
