"""Members: upsert by mobile or platform identity, look-ups, store limits, merge proposals."""

import pytest

from api.models import MergeProposal
from members.models import ExternalIdentity, Member
from scrm.models import AuditEvent
from tests.factories import GuideFactory, MemberFactory, StoreFactory

pytestmark = pytest.mark.django_db


def test_upsert_creates_a_member_then_updates_it_by_mobile(api, store):
    created = api.post(
        "/api/v1/members/",
        {"mobile": "138 0013 8000", "name": "王小明", "home_store": store.code.lower(), "gender": "F"},
        format="json",
    )
    assert created.status_code == 201, created.json()
    body = created.json()
    assert body["created"] is True and body["merge_proposal"] is None
    assert body["member"]["mobile"] == "138****8000"  # masked in every answer
    assert body["member"]["home_store"] == store.code
    member = Member.objects.get(mobile="+8613800138000")
    updated = api.post("/api/v1/members/", {"mobile": "+86 13800138000", "name": "王晓明"}, format="json")
    assert updated.status_code == 200
    assert updated.json()["created"] is False
    member.refresh_from_db()
    assert member.name == "王晓明"
    created_event = AuditEvent.objects.get(action="member.created")
    assert created_event.actor_kind == "api"
    assert AuditEvent.objects.get(action="member.updated").changes == {"name": ["王小明", "王晓明"]}


def test_upsert_by_identity_links_it_and_finds_the_member_again(api, store):
    payload = {
        "mobile": "13800138001",
        "home_store": store.code,
        "identity": {"platform": "tmall_ouid", "external_id": "ou-1"},
    }
    assert api.post("/api/v1/members/", payload, format="json").status_code == 201
    member = Member.objects.get(mobile="+8613800138001")
    assert ExternalIdentity.objects.get(platform="tmall_ouid", external_id="ou-1").member == member
    again = api.post(
        "/api/v1/members/",
        {"identity": {"platform": "tmall_ouid", "external_id": "ou-1"}, "name": "李雷"},
        format="json",
    )
    assert again.status_code == 200
    assert again.json()["member"]["id"] == member.pk
    found = api.get("/api/v1/members/lookup/", {"platform": "tmall_ouid", "external_id": "ou-1"})
    assert found.status_code == 200
    assert found.json()["name"] == "李雷"
    assert found.json()["identities"] == [{"platform": "tmall_ouid", "external_id": "ou-1"}]


def test_two_identities_of_two_members_open_one_merge_proposal(api, store):
    by_mobile = MemberFactory(home_store=store, mobile="+8613800138002")
    by_pin = MemberFactory(home_store=store)
    ExternalIdentity.objects.create(member=by_pin, platform="jd_pin", external_id="pin-9")
    payload = {"mobile": "13800138002", "identity": {"platform": "jd_pin", "external_id": "pin-9"}}
    first = api.post("/api/v1/members/", payload, format="json")
    second = api.post("/api/v1/members/", payload, format="json")
    assert first.status_code == second.status_code == 200
    proposal = MergeProposal.objects.get()
    assert first.json()["merge_proposal"] == second.json()["merge_proposal"] == proposal.pk
    assert (proposal.survivor, proposal.duplicate, proposal.state) == (by_mobile, by_pin, "pending")
    assert first.json()["member"]["id"] == by_mobile.pk
    assert ExternalIdentity.objects.get(external_id="pin-9").member == by_pin  # nothing merged by itself
    assert AuditEvent.objects.filter(action="merge.proposed").count() == 1


def test_an_identity_of_a_member_with_another_mobile_is_a_conflict_and_changes_nothing(api, store):
    member = MemberFactory(home_store=store)
    ExternalIdentity.objects.create(member=member, platform="jd_pin", external_id="pin-1")
    response = api.post(
        "/api/v1/members/",
        {"mobile": "13900139000", "identity": {"platform": "jd_pin", "external_id": "pin-1"}},
        format="json",
    )
    assert response.status_code == 409
    assert response.json()["error"] == {
        "code": "identity_conflict",
        "message": response.json()["error"]["message"],
        "field": "mobile",
    }
    assert Member.objects.count() == 1


def test_bad_input_is_400_with_the_field_and_writes_nothing(api, store):
    response = api.post("/api/v1/members/", {"mobile": "12345", "home_store": store.code}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "mobile"
    assert api.post("/api/v1/members/", {"name": "x"}, format="json").json()["error"]["field"] == "mobile"
    unknown = api.post("/api/v1/members/", {"mobile": "13800138009", "home_store": "NOPE"}, format="json")
    assert unknown.status_code == 404
    assert unknown.json()["error"]["field"] == "home_store"
    assert not Member.objects.exists()


def test_store_limits_hide_other_stores_members_as_404(make_client):
    mine, theirs = StoreFactory(), StoreFactory()
    _client, http = make_client(stores=[mine])
    inside = MemberFactory(home_store=mine)
    outside = MemberFactory(home_store=theirs)
    assert http.get(f"/api/v1/members/{inside.pk}/").status_code == 200
    response = http.get(f"/api/v1/members/{outside.pk}/")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert http.get("/api/v1/members/lookup/", {"mobile": outside.mobile}).status_code == 404
    upsert = http.post("/api/v1/members/", {"mobile": outside.mobile, "name": "x"}, format="json")
    assert upsert.status_code == 404
    assert (
        http.post(
            "/api/v1/members/", {"mobile": "13800138010", "home_store": theirs.code}, format="json"
        ).status_code
        == 404
    )
    # A client limited to one store registers new members there without naming it.
    created = http.post("/api/v1/members/", {"mobile": "13800138011"}, format="json")
    assert created.status_code == 201
    assert created.json()["member"]["home_store"] == mine.code


def test_read_scope_is_needed_for_lookups(make_client):
    _client, http = make_client(scopes=["members:write"])
    member = MemberFactory()
    assert http.get(f"/api/v1/members/{member.pk}/").status_code == 403
    _client, writer = make_client(scopes=["read"])
    assert writer.post("/api/v1/members/", {"mobile": "13800138012"}, format="json").status_code == 403


def test_guide_binding_from_wecom_sets_and_ends_the_exclusive_guide(api, store):
    guide = GuideFactory(store=store)
    member = MemberFactory(home_store=store)
    bound = api.post(
        "/api/v1/guide-bindings/",
        {
            "member": {"mobile": member.mobile},
            "guide": guide.employee_no,
            "action": "bind",
            "external_userid": "wm-1",
        },
        format="json",
    )
    assert bound.status_code == 200, bound.json()
    assert bound.json() == {"member_id": member.pk, "guide": guide.employee_no}
    member.refresh_from_db()
    assert member.guide == guide
    assert ExternalIdentity.objects.get(platform="wecom_external", external_id="wm-1").member == member
    assert member.assignments.get().reason == "wecom"
    unbound = api.post(
        "/api/v1/guide-bindings/",
        {
            "member": {"platform": "wecom_external", "external_id": "wm-1"},
            "guide": guide.employee_no,
            "action": "unbind",
        },
        format="json",
    )
    assert unbound.json()["guide"] is None
    member.refresh_from_db()
    assert member.guide is None
    assert member.assignments.get().ended_at is not None


def test_guide_binding_refuses_a_guide_of_another_store(api, store):
    member = MemberFactory(home_store=store)
    other = GuideFactory()
    response = api.post(
        "/api/v1/guide-bindings/",
        {"member": {"id": member.pk}, "guide": other.employee_no, "action": "bind"},
        format="json",
    )
    assert response.status_code == 409
    assert response.json()["error"]["field"] == "guide"
    member.refresh_from_db()
    assert member.guide is None


def test_guide_binding_outside_the_store_limits_is_404(make_client):
    mine, theirs = StoreFactory(), StoreFactory()
    _client, http = make_client(stores=[mine])
    guide = GuideFactory(store=theirs)
    member = MemberFactory(home_store=theirs)
    response = http.post(
        "/api/v1/guide-bindings/",
        {"member": {"id": member.pk}, "guide": guide.employee_no, "action": "bind"},
        format="json",
    )
    assert response.status_code == 404
