"""Writes that bypass the services are still on record (database triggers)."""

import pytest
from django.db import connection

from members import services
from members.models import Member
from scrm.models import AuditEvent
from tests.factories import MemberFactory, StoreFactory

pytestmark = pytest.mark.django_db


def test_a_queryset_update_is_recorded_with_old_and_new_values():
    member = MemberFactory(name="张三")
    Member.objects.filter(pk=member.pk).update(name="李四")
    event = AuditEvent.objects.get(action="db.update", target_id=str(member.pk))
    assert event.target_type == "members.member"
    assert event.store_id == member.home_store_id
    assert event.changes["name"] == ["张三", "李四"]


def test_a_bulk_create_and_raw_sql_delete_are_recorded_row_by_row():
    store = StoreFactory()
    members = Member.objects.bulk_create(
        [
            Member(mobile=f"+8613900000{i:03d}", home_store=store, joined_at="2026-01-01T00:00:00Z")
            for i in range(3)
        ]
    )
    inserted = AuditEvent.objects.filter(action="db.insert", target_type="members.member")
    assert sorted(inserted.values_list("target_id", flat=True)) == sorted(str(m.pk) for m in members)
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM members_member WHERE id = %s", [members[0].pk])
    deleted = AuditEvent.objects.get(action="db.delete")
    assert (deleted.target_id, deleted.changes["mobile"]) == (str(members[0].pk), "+8613900000000")


def test_writes_inside_a_service_are_recorded_once_by_the_service(system_actor):
    member = MemberFactory(name="王五")
    before = AuditEvent.objects.count()
    services.update_member(member, actor=system_actor, name="赵六")
    assert list(AuditEvent.objects.order_by("id").values_list("action", flat=True)[before:]) == [
        "member.updated"
    ]


def test_a_write_after_a_service_in_the_same_transaction_is_caught_again(system_actor):
    member = MemberFactory(name="钱七")
    services.update_member(member, actor=system_actor, name="孙八")
    Member.objects.filter(pk=member.pk).update(gender="F")
    assert AuditEvent.objects.filter(action="db.update", target_id=str(member.pk)).get().changes[
        "gender"
    ] == ["U", "F"]
