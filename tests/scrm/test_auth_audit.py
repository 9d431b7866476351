import pytest

from scrm.models import AuditEvent

pytestmark = pytest.mark.django_db


def test_a_login_and_a_failed_login_are_on_the_audit_trail(client, hq_operator):
    client.post("/login/", {"username": hq_operator.username, "password": "wrong"}, REMOTE_ADDR="10.1.2.3")
    failed = AuditEvent.objects.get(action="auth.login_failed")
    assert (failed.target_id, failed.ip, failed.changes) == (
        str(hq_operator.pk),
        "10.1.2.3",
        {"username": hq_operator.username},
    )

    response = client.post("/login/", {"username": hq_operator.username, "password": "pw-for-tests"})
    assert response.status_code == 302
    login = AuditEvent.objects.get(action="auth.login")
    assert (login.actor, login.target_id) == (hq_operator, str(hq_operator.pk))


def test_a_failed_login_for_an_unknown_name_is_recorded_without_a_target(client):
    client.post("/login/", {"username": "nobody", "password": "x"})
    event = AuditEvent.objects.get(action="auth.login_failed")
    assert (event.target_type, event.target_id, event.changes) == ("auth.user", "", {"username": "nobody"})
