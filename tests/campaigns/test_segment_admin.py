"""The segment admin: HQ previews (nothing saved) and saves (audited); others are kept out."""

import json

import pytest
from django.urls import reverse

from campaigns.models import Segment
from scrm.models import AuditEvent
from tests.campaigns.factories import SegmentFactory
from tests.factories import ManagerFactory, MemberFactory, StoreFactory, TierFactory

pytestmark = pytest.mark.django_db

ADD = "admin:campaigns_segment_add"


def definition_for(tier) -> str:
    return json.dumps({"op": "all", "items": [{"field": "tier", "op": "in", "value": [tier.pk]}]})


@pytest.fixture
def operator_client(client, hq_operator):
    client.force_login(hq_operator)
    return client


def test_add_page_renders_the_builder_catalogue(operator_client):
    response = operator_client.get(reverse(ADD))
    assert response.status_code == 200
    page = response.content.decode()
    assert 'id="segment-catalogue"' in page and 'id="segment-builder"' in page
    catalogue = response.context["segment_catalogue"]
    assert {f["name"] for f in catalogue["fields"]} >= {"tier", "consent_marketing", "bought_category"}


def test_preview_counts_and_saves_nothing(operator_client):
    gold = TierFactory(code="gold")
    store = StoreFactory(name="静安店")
    MemberFactory(tier=gold, home_store=store, consent_sms=True)
    MemberFactory(tier=gold, home_store=store)
    response = operator_client.post(
        reverse(ADD),
        {
            "name": "金卡",
            "description": "",
            "definition": definition_for(gold),
            "preview_channel": "sms",
            "_preview": "1",
        },
    )
    assert response.status_code == 200
    preview = response.context["segment_preview"]
    assert (preview.total, preview.excluded_no_consent) == (2, 1)
    assert "静安店" in response.content.decode()
    assert not Segment.objects.exists()


def test_preview_shows_a_bad_definition_as_a_form_error(operator_client):
    response = operator_client.post(
        reverse(ADD),
        {
            "name": "x",
            "definition": json.dumps({"op": "all", "items": [{"field": "salary", "op": "gt", "value": 1}]}),
            "_preview": "1",
        },
        HTTP_ACCEPT_LANGUAGE="en",
    )
    assert response.status_code == 200
    assert response.context["segment_preview"] is None
    assert "definition" in response.context["adminform"].form.errors
    assert not Segment.objects.exists()


def test_save_goes_through_the_audited_service(operator_client, hq_operator):
    gold = TierFactory(code="gold")
    response = operator_client.post(
        reverse(ADD),
        {"name": "金卡", "description": "高价值", "definition": definition_for(gold), "_save": "1"},
    )
    assert response.status_code == 302
    segment = Segment.objects.get(name="金卡")
    assert segment.owner == hq_operator
    assert AuditEvent.objects.filter(action="segment.created", target_id=str(segment.pk)).count() == 1

    change = reverse("admin:campaigns_segment_change", args=[segment.pk])
    response = operator_client.post(
        change,
        {"name": "金卡会员", "description": "高价值", "definition": definition_for(gold), "_save": "1"},
    )
    assert response.status_code == 302
    assert AuditEvent.objects.get(action="segment.updated").changes == {"name": ["金卡", "金卡会员"]}


def test_invalid_json_is_refused(operator_client):
    response = operator_client.post(reverse(ADD), {"name": "x", "definition": "{not json", "_save": "1"})
    assert response.status_code == 200
    assert not Segment.objects.exists()


def test_store_staff_and_auditors_cannot_build_segments(client, auditor):
    manager = ManagerFactory()
    client.force_login(manager.user)
    assert client.get(reverse(ADD)).status_code == 302  # store staff never reach the admin
    client.force_login(auditor)
    assert client.get(reverse(ADD)).status_code == 403
    assert client.post(reverse(ADD), {"name": "x", "definition": "{}", "_preview": "1"}).status_code == 403
    assert client.get(reverse("admin:campaigns_segment_changelist")).status_code == 200  # auditors may look


def test_auditors_see_a_saved_segment_read_only(client, auditor):
    women = {"op": "all", "items": [{"field": "gender", "op": "in", "value": ["F"]}]}
    segment = SegmentFactory(definition=women)
    client.force_login(auditor)
    response = client.get(reverse("admin:campaigns_segment_change", args=[segment.pk]))
    assert response.status_code == 200
    assert 'id="segment-builder"' not in response.content.decode()  # nothing to build or preview
