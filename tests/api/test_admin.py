"""HQ creates, rotates and revokes API clients in the admin (the key shown once), reviews merges and
reads the webhook log."""

import re

import pytest
from django.contrib.messages import get_messages
from rest_framework.test import APIClient

from api.models import ApiClient, MergeProposal, WebhookDelivery, WebhookEndpoint
from scrm.models import AuditEvent
from tests.factories import MemberFactory

pytestmark = pytest.mark.django_db


def shown_key(response) -> str:
    text = " ".join(str(m) for m in get_messages(response.wsgi_request))
    return re.findall(r"<code>([0-9a-f]+\.[A-Za-z0-9_-]+)</code>", text)[-1]  # the newest


def test_create_in_the_admin_then_call_the_api_with_the_key(client, hq_admin, store):
    client.force_login(hq_admin)
    response = client.post(
        "/admin/api/apiclient/add/",
        {"name": "门店收银", "scopes": ["orders:write", "read"], "stores": [store.pk], "rate_limit": 600},
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    key = shown_key(response)
    api_client = ApiClient.objects.get()
    assert list(api_client.stores.all()) == [store]
    assert key.split(".", 1)[1] not in api_client.secret_hash
    event = AuditEvent.objects.get(action="api_client.created")
    assert event.actor == hq_admin and event.changes["scopes"] == ["orders:write", "read"]
    http = APIClient()
    http.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    member = MemberFactory(home_store=store)
    assert http.get(f"/api/v1/members/{member.pk}/").status_code == 200
    # Changing the scopes in the admin is audited and takes effect at once.
    client.post(
        f"/admin/api/apiclient/{api_client.pk}/change/",
        {"name": "门店收银", "scopes": ["orders:write"], "stores": [store.pk], "rate_limit": 600},
    )
    assert http.get(f"/api/v1/members/{member.pk}/").status_code == 403
    assert AuditEvent.objects.get(action="api_client.updated").changes["scopes"] == [
        ["orders:write", "read"],
        ["orders:write"],
    ]


def test_rotate_and_revoke_actions(client, hq_admin):
    client.force_login(hq_admin)
    client.post("/admin/api/apiclient/add/", {"name": "天猫", "scopes": ["read"], "rate_limit": 60})
    api_client = ApiClient.objects.get()
    response = client.post(
        "/admin/api/apiclient/", {"action": "rotate_keys", "_selected_action": [api_client.pk]}, follow=False
    )
    new_key = shown_key(response)
    api_client.refresh_from_db()
    assert new_key.startswith(api_client.key_prefix + ".")
    client.post("/admin/api/apiclient/", {"action": "revoke_clients", "_selected_action": [api_client.pk]})
    api_client.refresh_from_db()
    assert api_client.is_active is False and api_client.revoked_at is not None
    http = APIClient()
    http.credentials(HTTP_AUTHORIZATION=f"Api-Key {new_key}")
    assert http.get("/api/v1/members/1/").status_code == 401


def test_merge_review_actions_are_audited_with_the_reviewer(client, hq_operator, store, notice):
    survivor, duplicate = MemberFactory(home_store=store), MemberFactory(home_store=store)
    proposal = MergeProposal.objects.create(survivor=survivor, duplicate=duplicate)
    client.force_login(hq_operator)
    assert client.get("/admin/api/mergeproposal/").status_code == 200
    client.post("/admin/api/mergeproposal/", {"action": "merge_selected", "_selected_action": [proposal.pk]})
    proposal.refresh_from_db()
    assert (proposal.state, proposal.decided_by) == ("merged", hq_operator)
    assert AuditEvent.objects.get(action="merge.accepted").actor == hq_operator
    client.post("/admin/api/mergeproposal/", {"action": "undo_selected", "_selected_action": [proposal.pk]})
    proposal.refresh_from_db()
    assert proposal.state == "undone"


def test_operators_cannot_manage_api_clients_and_the_auditor_reads_the_log(client, hq_operator, auditor):
    endpoint = WebhookEndpoint.objects.create(
        name="bi", url="http://127.0.0.1:9/", secret="x", events=["member.merged"]
    )
    WebhookDelivery.objects.create(endpoint=endpoint, event="member.merged", payload={"survivor_id": 1})
    client.force_login(hq_operator)
    assert client.get("/admin/api/apiclient/add/").status_code == 403
    client.force_login(auditor)
    assert client.get("/admin/api/webhookdelivery/").status_code == 200
    assert client.get("/admin/api/apiclient/").status_code == 200
    assert client.get("/admin/api/apiclient/add/").status_code == 403


def test_every_api_admin_page_opens(client, hq_admin, store):
    from api import services
    from scrm.audit import Actor

    api_client, _key = services.create_api_client(name="x", scopes=["read"], actor=Actor.system("tests"))
    proposal = MergeProposal.objects.create(
        survivor=MemberFactory(home_store=store), duplicate=MemberFactory(home_store=store)
    )
    endpoint = WebhookEndpoint.objects.create(name="bi", url="http://127.0.0.1:9/", secret="x", events=[])
    delivery = WebhookDelivery.objects.create(endpoint=endpoint, event="member.merged", payload={})
    client.force_login(hq_admin)
    for name, obj in (
        ("apiclient", api_client),
        ("mergeproposal", proposal),
        ("webhookendpoint", endpoint),
        ("webhookdelivery", delivery),
    ):
        assert client.get(f"/admin/api/{name}/").status_code == 200, name
        assert client.get(f"/admin/api/{name}/{obj.pk}/change/").status_code == 200, name
