import pytest
from django.db import DatabaseError, connection, transaction

from scrm import audit
from scrm.audit import Actor
from scrm.models import AuditEvent
from tests.factories import MemberFactory, StoreFactory

pytestmark = pytest.mark.django_db


def test_record_keeps_who_what_and_the_store_of_the_target(hq_operator):
    member = MemberFactory()
    actor = Actor.for_user(hq_operator, request_id="req-1", ip="10.0.0.8")
    event = audit.record(actor, "member.updated", target=member, changes={"name": ["甲", "乙"]})
    event.refresh_from_db()
    assert (event.actor, event.actor_kind, event.actor_label) == (hq_operator, "user", hq_operator.username)
    assert (event.target_type, event.target_id, event.store_id) == (
        "members.member",
        str(member.pk),
        member.home_store_id,
    )
    assert (event.request_id, event.ip, event.changes) == ("req-1", "10.0.0.8", {"name": ["甲", "乙"]})


def test_record_many_writes_one_row_per_target_in_one_insert(django_assert_num_queries, system_actor):
    stores = StoreFactory.create_batch(5)
    with django_assert_num_queries(1):
        audit.record_many(system_actor, "store.checked", stores)
    checked = AuditEvent.objects.filter(action="store.checked")
    assert sorted(checked.values_list("target_id", flat=True)) == sorted(str(s.pk) for s in stores)


def test_audit_rows_cannot_be_updated_or_deleted(system_actor):
    event = audit.record(system_actor, "x.done", target_type="x", target_id=1)
    for statement in ("UPDATE scrm_auditevent SET action = 'forged'", "DELETE FROM scrm_auditevent"):
        with (
            pytest.raises(DatabaseError, match="append-only"),
            transaction.atomic(),
            connection.cursor() as cursor,
        ):
            cursor.execute(statement)
    assert AuditEvent.objects.get().action == event.action == "x.done"


def test_the_audit_trail_cannot_be_truncated_in_a_real_database(system_actor):
    # The test database lifts only this guard (see tests/conftest.py); put it back for this test's
    # transaction, which is rolled back afterwards.
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE scrm_auditevent ENABLE TRIGGER scrm_auditevent_no_truncate")
    audit.record(system_actor, "x.done", target_type="x", target_id=1)
    with (
        pytest.raises(DatabaseError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute("TRUNCATE scrm_auditevent")
    assert AuditEvent.objects.count() == 1


def test_a_failed_audit_write_fails_the_change(system_actor):
    store = StoreFactory(name="旧名")
    with pytest.raises(DatabaseError), transaction.atomic():
        type(store).objects.filter(pk=store.pk).update(name="新名")
        audit.record(system_actor, "a" * 200, target=store)  # action longer than the column allows
    store.refresh_from_db()
    assert store.name == "旧名"
