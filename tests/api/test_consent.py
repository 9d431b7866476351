"""Consent through the API: the same service as every other path, evidence kept, webhook on withdrawal."""

from unittest import mock

import pytest

from api.models import WebhookDelivery, WebhookEndpoint
from members.models import ConsentRecord
from tests.factories import MemberFactory, StoreFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def endpoint(db):
    return WebhookEndpoint.objects.create(
        name="crm", url="http://127.0.0.1:9/hook", secret="s" * 64, events=["consent.withdrawn"]
    )


def test_grant_then_withdraw_with_evidence(api, store, notice, endpoint, django_capture_on_commit_callbacks):
    member = MemberFactory(home_store=store)
    granted = api.post(
        f"/api/v1/members/{member.pk}/consent/",
        {
            "channel": "sms",
            "action": "grant",
            "policy_version": "2026-01",
            "evidence": {"pos_receipt": "R-1"},
            "store": store.code,
        },
        format="json",
    )
    assert granted.status_code == 201, granted.json()
    assert granted.json()["consent_granted"] is True
    record = ConsentRecord.objects.get()
    assert (record.source, record.evidence["pos_receipt"], record.store) == ("api", "R-1", store)
    with (
        mock.patch("api.tasks.deliver_webhook_task.delay") as delay,
        django_capture_on_commit_callbacks(execute=True),
    ):
        withdrawn = api.post(
            f"/api/v1/members/{member.pk}/consent/",
            {
                "channel": "sms",
                "action": "withdraw",
                "policy_version": "2026-01",
                "method": "sms_reply",
                "evidence": {"reply": "TD"},
            },
            format="json",
        )
    assert withdrawn.json()["consent_granted"] is False
    member.refresh_from_db()
    assert member.consent_sms is False
    delivery = WebhookDelivery.objects.get()
    assert (delivery.event, delivery.payload["member_id"], delivery.payload["channel"]) == (
        "consent.withdrawn",
        member.pk,
        "sms",
    )
    delay.assert_called_once_with(delivery.pk)


def test_a_grant_under_an_unknown_notice_is_refused_and_writes_nothing(api, notice):
    member = MemberFactory()
    response = api.post(
        f"/api/v1/members/{member.pk}/consent/",
        {"channel": "sms", "action": "grant", "policy_version": "1999"},
        format="json",
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "unknown_notice"
    assert not ConsentRecord.objects.exists()


def test_consent_needs_its_scope_and_respects_store_limits(make_client, notice):
    mine, theirs = StoreFactory(), StoreFactory()
    _client, reader = make_client(scopes=["read"])
    member = MemberFactory(home_store=theirs)
    body = {"channel": "sms", "action": "grant", "policy_version": "2026-01"}
    assert reader.post(f"/api/v1/members/{member.pk}/consent/", body, format="json").status_code == 403
    _client, limited = make_client(stores=[mine])
    assert limited.post(f"/api/v1/members/{member.pk}/consent/", body, format="json").status_code == 404
    assert not ConsentRecord.objects.exists()
