"""Orders: single and batch, idempotent by channel + order number, refunds, cancellations, metrics."""

from decimal import Decimal

import pytest

from api.views import s as shapes
from members.models import ExternalIdentity, Member, Order, OrderLine
from scrm.models import AuditEvent
from tests.factories import GuideFactory, MemberFactory, StoreFactory

pytestmark = pytest.mark.django_db


def order(number, *, store=None, mobile=None, amount="100.00", **extra):
    body = {
        "channel": "store",
        "order_no": number,
        "paid_at": "2026-11-20T10:00:00+08:00",
        "amount": amount,
        "items": [{"sku": "SKU1", "category": "护肤", "quantity": 2, "amount": amount}],
        **extra,
    }
    if store is not None:
        body["store"] = store.code
    if mobile is not None:
        body["member"] = {"mobile": mobile}
    return body


def test_single_order_is_created_once_and_updates_the_buyers_metrics(api, store):
    member = MemberFactory(home_store=store)
    first = api.post("/api/v1/orders/", order("A1", store=store, mobile=member.mobile), format="json")
    assert first.status_code == 201, first.json()
    assert first.json()["status"] == "created"
    again = api.post("/api/v1/orders/", order("A1", store=store, mobile=member.mobile), format="json")
    assert again.status_code == 200
    assert again.json() == {**first.json(), "status": "exists"}
    assert Order.objects.count() == 1
    assert OrderLine.objects.get().quantity == 2
    member.refresh_from_db()
    assert (member.order_count, member.total_spend, member.lifecycle_stage) == (
        1,
        Decimal("100.00"),
        "first_purchase",
    )
    assert AuditEvent.objects.get(action="orders.created").actor_kind == "api"


def test_batch_reports_each_order_and_a_retry_creates_nothing_twice(api, store):
    member = MemberFactory(home_store=store)
    batch = [
        order("B1", store=store, mobile=member.mobile),
        order("B2", store=store),  # a buyer who is not a member
        order("B3", store=store, amount="-1"),  # invalid
        order("B4", store=StoreFactory.build(code="NOPE")),  # unknown store
        order("B1", store=store),  # twice in one batch
        order("B5", store=store, mobile="123"),  # a mobile that is no mobile
    ]
    response = api.post("/api/v1/orders/batch/", {"orders": batch}, format="json")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert [r["status"] for r in body["results"]] == [
        "created",
        "created",
        "error",
        "error",
        "error",
        "error",
    ]
    assert [r["index"] for r in body["results"]] == [0, 1, 2, 3, 4, 5]
    assert [r["error"]["field"] for r in body["results"][2:]] == [
        "amount",
        "store",
        "order_no",
        "member.mobile",
    ]
    assert (body["created"], body["existing"], body["failed"]) == (2, 0, 4)
    retry = api.post("/api/v1/orders/batch/", {"orders": batch}, format="json").json()
    assert [r["status"] for r in retry["results"][:2]] == ["exists", "exists"]
    assert [r["order_id"] for r in retry["results"][:2]] == [r["order_id"] for r in body["results"][:2]]
    assert Order.objects.count() == 2
    assert Order.objects.get(external_no="B2").member is None
    member.refresh_from_db()
    assert member.order_count == 1
    assert AuditEvent.objects.filter(action="api.called").last().changes["items"] == 6


def test_buyers_named_by_platform_identity(api, store):
    member = MemberFactory(home_store=store)
    ExternalIdentity.objects.create(member=member, platform="jd_pin", external_id="pin-5")
    pin, nobody = {"platform": "jd_pin", "external_id": "pin-5"}, {"platform": "jd_pin", "external_id": "x"}
    batch = [
        {**order("J1", store=store), "channel": "jd", "member": pin},
        {**order("J2", store=store), "channel": "jd", "member": nobody},
    ]
    results = api.post("/api/v1/orders/batch/", {"orders": batch}, format="json").json()["results"]
    assert [r["status"] for r in results] == ["created", "created"]
    assert Order.objects.get(external_no="J1").member == member
    assert Order.objects.get(external_no="J2").member is None


def test_batch_limits(api):
    assert api.post("/api/v1/orders/batch/", {"orders": []}, format="json").status_code == 400
    too_many = [order(f"X{i}") for i in range(shapes.MAX_BATCH + 1)]
    response = api.post("/api/v1/orders/batch/", {"orders": too_many}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "too_many"
    assert not Order.objects.exists()


def test_a_store_limited_client_cannot_post_orders_of_other_stores_nor_see_them(make_client):
    mine, theirs = StoreFactory(), StoreFactory()
    _client, http = make_client(stores=[mine])
    results = http.post(
        "/api/v1/orders/batch/",
        {"orders": [order("C1", store=mine), order("C2", store=theirs), order("C3")]},
        format="json",
    ).json()["results"]
    assert [r["status"] for r in results] == ["created", "error", "error"]
    assert [r["error"]["code"] for r in results[1:]] == ["unknown_store", "required"]
    other = Order.objects.create(
        channel="store", external_no="C9", store=theirs, paid_at="2026-11-01T00:00Z", amount=5
    )
    assert http.get(f"/api/v1/orders/store/{other.external_no}/").status_code == 404
    assert http.post(f"/api/v1/orders/store/{other.external_no}/cancel/").status_code == 404
    assert http.get("/api/v1/orders/store/C1/").status_code == 200
    Order.objects.filter(pk=other.pk).update(status="paid")  # unchanged by the refused call
    assert Order.objects.get(pk=other.pk).status == "paid"


def test_a_guide_is_named_by_employee_number(api, store):
    guide = GuideFactory(store=store)
    response = api.post("/api/v1/orders/", order("G1", store=store, guide=guide.employee_no), format="json")
    assert response.status_code == 201
    assert Order.objects.get().guide == guide
    missing = api.post("/api/v1/orders/", order("G2", store=store, guide="NOBODY"), format="json")
    assert missing.status_code == 404
    assert missing.json()["error"]["field"] == "guide"


def test_refund_and_cancel_keep_metrics_current_and_are_idempotent(api, store):
    member = MemberFactory(home_store=store)
    api.post(
        "/api/v1/orders/", order("R1", store=store, mobile=member.mobile, amount="200.00"), format="json"
    )
    api.post("/api/v1/orders/", order("R2", store=store, mobile=member.mobile, amount="50.00"), format="json")
    refund = api.post("/api/v1/orders/store/R1/refund/", {"refunded_amount": "80.00"}, format="json")
    assert refund.status_code == 200, refund.json()
    assert (refund.json()["status"], refund.json()["refunded_amount"]) == ("partially_refunded", "80.00")
    assert (
        api.post("/api/v1/orders/store/R1/refund/", {"refunded_amount": "80.00"}, format="json").status_code
        == 200
    )
    assert AuditEvent.objects.filter(action="order.refunded").count() == 1
    member.refresh_from_db()
    assert member.total_spend == Decimal("170.00")
    lower = api.post("/api/v1/orders/store/R1/refund/", {"refunded_amount": "10.00"}, format="json")
    assert (lower.status_code, lower.json()["error"]["code"]) == (400, "refund_decrease")
    too_much = api.post("/api/v1/orders/store/R1/refund/", {"refunded_amount": "999.00"}, format="json")
    assert too_much.json()["error"]["code"] == "refund_too_large"
    full = api.post("/api/v1/orders/store/R1/refund/", {"refunded_amount": "200.00"}, format="json")
    assert full.json()["status"] == "refunded"
    cancelled = api.post("/api/v1/orders/store/R2/cancel/")
    assert cancelled.json()["status"] == "cancelled"
    assert api.post("/api/v1/orders/store/R2/cancel/").status_code == 200
    assert AuditEvent.objects.filter(action="order.cancelled").count() == 1
    member.refresh_from_db()
    assert (member.order_count, member.total_spend, member.lifecycle_stage) == (
        0,
        Decimal("0"),
        "no_purchase",
    )
    assert (
        api.post("/api/v1/orders/store/R2/refund/", {"refunded_amount": "1"}, format="json").status_code
        == 409
    )
    assert api.post("/api/v1/orders/store/NOPE/cancel/").status_code == 404


def test_orders_of_a_merged_member_go_to_the_member_it_was_merged_into(api, store):
    from api.models import MergeProposal
    from api.services import accept_merge_proposal
    from scrm.audit import Actor

    survivor, duplicate = MemberFactory(home_store=store), MemberFactory(home_store=store)
    proposal = MergeProposal.objects.create(survivor=survivor, duplicate=duplicate)
    accept_merge_proposal(proposal, actor=Actor.system("tests"))
    api.post("/api/v1/orders/", order("M1", store=store, mobile=duplicate.mobile), format="json")
    assert Order.objects.get(external_no="M1").member == survivor
    assert Member.objects.get(pk=duplicate.pk).status == "merged"
    assert api.get(f"/api/v1/members/{duplicate.pk}/").json()["id"] == survivor.pk


def test_a_refund_or_cancellation_takes_the_orders_points_back_at_once(api, store):
    member = MemberFactory(home_store=store)
    api.post(
        "/api/v1/orders/", order("P1", store=store, mobile=member.mobile, amount="200.00"), format="json"
    )
    api.post("/api/v1/orders/", order("P2", store=store, mobile=member.mobile, amount="50.00"), format="json")
    member.refresh_from_db()
    earned = member.points_balance
    assert earned > 0

    api.post("/api/v1/orders/store/P1/refund/", {"refunded_amount": "100.00"}, format="json")
    member.refresh_from_db()
    assert 0 < member.points_balance < earned  # half of P1's credit went back, P2's stays

    api.post("/api/v1/orders/store/P1/refund/", {"refunded_amount": "200.00"}, format="json")
    api.post("/api/v1/orders/store/P2/cancel/")
    member.refresh_from_db()
    assert member.points_balance == 0
