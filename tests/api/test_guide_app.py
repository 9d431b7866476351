"""The guide app: sign in for a token, list my tasks, complete one with the workbench's rules."""

from unittest import mock

import pytest
from rest_framework.test import APIClient

from api.models import GuideToken, WebhookDelivery, WebhookEndpoint
from campaigns.models import Task
from members.models import Member
from scrm.models import AuditEvent
from tests.campaigns.factories import TaskFactory
from tests.factories import GuideFactory, MemberFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def signed_in(guide):
    http = APIClient()
    response = http.post(
        "/api/v1/guide/token/", {"username": guide.user.username, "password": "pw-for-tests"}, format="json"
    )
    assert response.status_code == 201, response.json()
    http.credentials(HTTP_AUTHORIZATION=f"Bearer {response.json()['token']}")
    return http


def test_sign_in_gives_a_token_stored_hashed_and_wrong_passwords_get_401(guide):
    response = APIClient().post(
        "/api/v1/guide/token/", {"username": guide.user.username, "password": "nope"}, format="json"
    )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_credentials"
    ok = APIClient().post(
        "/api/v1/guide/token/", {"username": guide.user.username, "password": "pw-for-tests"}, format="json"
    )
    secret = ok.json()["token"].split(".", 1)[1]
    token = GuideToken.objects.get()
    assert secret not in token.secret_hash and token.user == guide.user
    assert AuditEvent.objects.filter(action="guide_token.issued").count() == 1


def test_hq_accounts_get_no_guide_token(hq_operator):
    response = APIClient().post(
        "/api/v1/guide/token/", {"username": hq_operator.username, "password": "pw-for-tests"}, format="json"
    )
    assert response.status_code == 401


def test_my_tasks_only(signed_in, guide, store):
    mine = TaskFactory(store=store, guide=guide, member=MemberFactory(home_store=store, consent_wecom=False))
    TaskFactory(store=store, guide=GuideFactory(store=store))
    response = signed_in.get("/api/v1/guide/tasks/")
    assert response.status_code == 200
    assert [t["id"] for t in response.json()["tasks"]] == [mine.pk]
    assert "****" in response.json()["tasks"][0]["member"]["mobile"]


def test_complete_records_once_fires_the_webhook_and_is_404_for_others(
    signed_in, guide, store, django_capture_on_commit_callbacks
):
    member = MemberFactory(home_store=store)
    Member.objects.filter(pk=member.pk).update(consent_wecom=True)
    task = TaskFactory(store=store, guide=guide, member=member)
    other = TaskFactory(store=store, guide=GuideFactory(store=store))
    WebhookEndpoint.objects.create(
        name="app", url="http://127.0.0.1:9/", secret="x", events=["task.completed"]
    )
    body = {"outcome": "reached", "note": "约了周末", "token": "t-1"}
    with mock.patch("api.tasks.deliver_webhook_task.delay"), django_capture_on_commit_callbacks(execute=True):
        first = signed_in.post(f"/api/v1/guide/tasks/{task.pk}/complete/", body, format="json")
        again = signed_in.post(f"/api/v1/guide/tasks/{task.pk}/complete/", body, format="json")
    assert first.status_code == 200, first.json()
    assert (first.json()["recorded"], again.json()["repeated"]) == (True, True)
    assert Task.objects.get(pk=task.pk).state == "done"
    assert WebhookDelivery.objects.get().payload["task_id"] == task.pk
    different = signed_in.post(
        f"/api/v1/guide/tasks/{task.pk}/complete/", {"outcome": "declined"}, format="json"
    )
    assert different.status_code == 409
    assert signed_in.post(f"/api/v1/guide/tasks/{other.pk}/complete/", body, format="json").status_code == 404


def test_without_consent_only_stop_can_be_recorded(signed_in, guide, store):
    task = TaskFactory(store=store, guide=guide, member=MemberFactory(home_store=store))
    response = signed_in.post(
        f"/api/v1/guide/tasks/{task.pk}/complete/", {"outcome": "reached"}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "no_consent"


def test_a_revoked_or_missing_token_is_401(signed_in):
    assert signed_in.delete("/api/v1/guide/token/").status_code == 204
    assert signed_in.get("/api/v1/guide/tasks/").status_code == 401
    assert APIClient().get("/api/v1/guide/tasks/").status_code == 401


def test_repeated_failures_lock_the_sign_in_with_a_json_429(guide):
    http = APIClient()
    wrong = {"username": guide.user.username, "password": "nope"}
    statuses = [http.post("/api/v1/guide/token/", wrong, format="json").status_code for _ in range(6)]
    assert statuses[0] == 401
    locked = http.post(
        "/api/v1/guide/token/", {"username": guide.user.username, "password": "pw-for-tests"}, format="json"
    )
    assert locked.status_code == 429
    assert locked.json()["error"]["code"] == "locked_out"
    assert not GuideToken.objects.exists()
