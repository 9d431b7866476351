import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import translation

from scrm import audit
from scrm.models import AuditEvent

pytestmark = pytest.mark.django_db


@pytest.fixture
def trail(system_actor):
    return [
        audit.record(system_actor, f"step.{i}", target_type="x", target_id=i, changes={"n": i})
        for i in range(5)
    ]


def tamper(sql: str, *params) -> None:
    """What an attacker with raw SQL access and the table owner's rights could do."""
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # no pending FK checks may block ALTER TABLE
        cursor.execute("ALTER TABLE scrm_auditevent DISABLE TRIGGER scrm_auditevent_append_only")
        cursor.execute(sql, params)
        cursor.execute("ALTER TABLE scrm_auditevent ENABLE TRIGGER scrm_auditevent_append_only")


def test_each_row_is_chained_to_the_one_before(trail):
    rows = list(AuditEvent.objects.order_by("id"))
    assert all(len(r.hash) == 64 for r in rows)
    assert [r.prev_hash for r in rows[1:]] == [r.hash for r in rows[:-1]]


def test_an_intact_trail_verifies(trail, capsys):
    call_command("verify_audit")
    assert "5" in capsys.readouterr().out


def test_a_row_altered_with_raw_sql_is_reported_as_the_first_broken_link(trail):
    tamper("UPDATE scrm_auditevent SET changes = '{\"n\": 99}' WHERE id = %s", trail[2].pk)
    with translation.override("en"), pytest.raises(CommandError, match=f"event {trail[2].pk}:.*altered"):
        call_command("verify_audit")


def test_a_row_deleted_with_raw_sql_is_reported_at_its_successor(trail):
    tamper("DELETE FROM scrm_auditevent WHERE id = %s", trail[1].pk)
    with translation.override("en"), pytest.raises(CommandError, match=f"event {trail[2].pk}:.*missing"):
        call_command("verify_audit")


def test_a_bulk_insert_chains_its_rows_one_after_another(system_actor):
    from tests.factories import StoreFactory

    audit.record_many(system_actor, "store.checked", StoreFactory.create_batch(4))
    rows = list(AuditEvent.objects.order_by("id"))
    assert [r.prev_hash for r in rows[1:]] == [r.hash for r in rows[:-1]]
    call_command("verify_audit")
