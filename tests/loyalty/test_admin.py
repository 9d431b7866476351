"""The loyalty admin: every page loads for HQ, store staff never reach it; writes go through services."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.contrib.admin import helpers
from django.db import DatabaseError, transaction
from django.urls import reverse

from loyalty import services
from loyalty.models import (
    Benefit,
    Coupon,
    CouponTemplate,
    LoyaltyProgram,
    LoyaltyRun,
    OrderPoints,
    TierChange,
    TierRule,
)
from members.models import Member
from scrm.audit import Actor
from scrm.models import AuditEvent
from scrm.roles import Role
from tests.factories import (
    GuideFactory,
    ManagerFactory,
    MemberFactory,
    OrderLineFactory,
    StoreFactory,
    UserFactory,
)

from .world import make_loyalty_rows

pytestmark = pytest.mark.django_db

MODELS = (LoyaltyProgram, TierRule, Benefit, CouponTemplate, Coupon, OrderPoints, TierChange, LoyaltyRun)


@pytest.fixture
def world(tiers):
    """One of everything (the helper other suites use too), so every change page has a row to show."""
    member = MemberFactory(tier=tiers["basic"])
    OrderLineFactory(order__member=member, order__amount=Decimal("1200"))
    make_loyalty_rows(member, Actor.system("tests"))
    assert all(model.objects.exists() for model in MODELS)
    return member


def urls() -> list[str]:
    pages = []
    for model in MODELS:
        opts = model._meta
        pages.append(reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"))
        obj = model.objects.first()
        pages.append(reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk]))
    for model in (TierRule, Benefit, CouponTemplate, Coupon):
        opts = model._meta
        pages.append(reverse(f"admin:{opts.app_label}_{opts.model_name}_add"))
    pages.append(reverse("admin:app_list", args=["loyalty"]))
    return pages


@pytest.mark.parametrize("role", [Role.HQ_ADMIN, Role.HQ_OPERATOR, Role.AUDITOR])
def test_every_loyalty_page_loads_for_hq(client, world, role):
    client.force_login(UserFactory(role=role))
    for url in urls():
        response = client.get(url, follow=True)  # the programme's list opens its single row
        if role == Role.AUDITOR and url.endswith("/add/"):
            assert response.status_code == 403, url  # the auditor changes nothing
        else:
            assert response.status_code == 200, url


@pytest.mark.parametrize("staff", ["guide", "manager"])
def test_store_staff_are_turned_away_from_every_loyalty_page(client, world, staff):
    store = StoreFactory()
    person = GuideFactory(store=store) if staff == "guide" else ManagerFactory(store=store)
    client.force_login(person.user)
    for url in urls():
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"] == reverse("home"), url


def test_hq_saves_the_programme_once_then_edits_it(client, hq_operator):
    client.force_login(hq_operator)
    changelist = reverse("admin:loyalty_loyaltyprogram_changelist")
    assert LoyaltyProgram.current().points_expiry_months == 12  # defaults, nothing written
    assert client.get(changelist)["Location"] == reverse("admin:loyalty_loyaltyprogram_add")

    response = client.post(
        reverse("admin:loyalty_loyaltyprogram_add"),
        {
            "points_per_yuan": "1.5",
            "points_expiry_months": "12",
            "tier_basis": "spend",
            "tier_window_months": "12",
            "downgrade_grace_days": "60",
        },
    )

    assert response.status_code == 302
    assert LoyaltyProgram.objects.get().pk == 1
    assert AuditEvent.objects.get(action="loyaltyprogram.created").actor == hq_operator
    assert client.get(changelist)["Location"] == reverse("admin:loyalty_loyaltyprogram_change", args=[1])
    again = client.get(reverse("admin:loyalty_loyaltyprogram_add"))  # the single row's form
    assert again.context["original"] == LoyaltyProgram.objects.get()


def test_editing_the_programme_is_audited(client, world, hq_operator):
    client.force_login(hq_operator)
    url = reverse("admin:loyalty_loyaltyprogram_change", args=[1])
    response = client.post(
        url,
        {
            "points_per_yuan": "2",
            "points_expiry_months": "24",
            "tier_basis": "points",
            "tier_window_months": "12",
            "downgrade_grace_days": "30",
        },
    )

    assert response.status_code == 302
    program = LoyaltyProgram.current()
    assert (program.points_per_yuan, program.points_expiry_months, program.tier_basis) == (
        Decimal("2"),
        24,
        "points",
    )
    event = AuditEvent.objects.get(action="loyaltyprogram.updated")
    assert set(event.changes) == {"points_per_yuan", "points_expiry_months", "tier_basis"}
    assert event.changes["tier_basis"] == ["spend", "points"]
    assert event.actor == hq_operator


def test_adding_a_coupon_in_the_admin_issues_it_through_the_service(client, world, hq_operator):
    client.force_login(hq_operator)
    template = CouponTemplate.objects.get(code="WELCOME")

    response = client.post(
        reverse("admin:loyalty_coupon_add"), {"member": world.pk, "template": template.pk, "source_ref": ""}
    )

    assert response.status_code == 302
    coupon = Coupon.objects.get(issued_by=hq_operator)
    assert (coupon.member, coupon.template, coupon.source) == (world, template, "admin")
    event = AuditEvent.objects.filter(action="coupon.issued", target_id=str(coupon.pk)).get()
    assert event.actor == hq_operator


def test_bulk_issue_from_the_template_list(client, world, hq_operator, tiers):
    other = MemberFactory(tier=tiers["silver"])
    client.force_login(hq_operator)
    template = CouponTemplate.objects.get(code="WELCOME")
    changelist = reverse("admin:loyalty_coupontemplate_changelist")
    data = {"action": "issue_to_members", helpers.ACTION_CHECKBOX_NAME: [template.pk]}

    page = client.post(changelist, data)
    assert page.status_code == 200
    assert "form" in page.context

    refused = client.post(changelist, {**data, "confirm": "yes", "stores": "NOPE"})
    assert refused.status_code == 200
    assert refused.context["form"].errors

    done = client.post(changelist, {**data, "confirm": "yes", "tiers": [tiers["silver"].pk], "batch": "b1"})

    assert done.status_code == 302
    # The world's member is in the top tier now, not silver.
    assert list(Coupon.objects.filter(source="bulk").values_list("member_id", flat=True)) == [other.pk]
    assert AuditEvent.objects.get(action="coupon.bulk_issued").actor == hq_operator


def test_redeem_action_redeems_once_and_reports_the_second_try(client, hq_operator, tiers):
    member = MemberFactory()
    template = CouponTemplate.objects.create(
        code="C1", name="券", kind="amount", amount=Decimal("5"), valid_days=7
    )
    code = services.issue_coupon(member, template, Actor.system("tests"), "admin")
    coupon = Coupon.objects.get(code=code)
    client.force_login(hq_operator)
    changelist = reverse("admin:loyalty_coupon_changelist")
    data = {"action": "redeem_selected", helpers.ACTION_CHECKBOX_NAME: [coupon.pk]}

    client.post(changelist, data)
    second = client.post(changelist, data, follow=True)

    coupon.refresh_from_db()
    assert coupon.status == "redeemed"
    assert coupon.redeemed_by == hq_operator
    assert len([m for m in second.context["messages"] if m.level_tag == "error"]) == 1
    assert AuditEvent.objects.filter(action="coupon.redeemed").count() == 1


def test_the_auditor_cannot_redeem(client, auditor):
    client.force_login(auditor)
    response = client.get(reverse("admin:loyalty_coupon_changelist"))
    assert response.status_code == 200
    assert response.context["action_form"] is None  # no action at all: the only one redeems


def test_coupon_search_by_code(client, hq_operator):
    member = MemberFactory()
    template = CouponTemplate.objects.create(
        code="C1", name="券", kind="amount", amount=Decimal("5"), valid_days=7
    )
    code = services.issue_coupon(member, template, Actor.system("tests"), "admin")
    services.issue_coupon(MemberFactory(), template, Actor.system("tests"), "admin")
    client.force_login(hq_operator)

    response = client.get(reverse("admin:loyalty_coupon_changelist"), {"q": code.lower()})

    assert [c.code for c in response.context["cl"].result_list] == [code]


def test_tier_history_and_run_logs_are_append_only(world):
    change = TierChange.objects.first()
    assert change is not None
    with pytest.raises(DatabaseError), transaction.atomic():
        TierChange.objects.filter(pk=change.pk).update(value=0)
    with pytest.raises(DatabaseError), transaction.atomic():
        LoyaltyRun.objects.all().delete()


def test_a_write_outside_the_services_is_caught_by_the_row_triggers(db):
    CouponTemplate.objects.create(code="RAW", name="raw", kind="amount", amount=Decimal("1"), valid_days=1)
    assert AuditEvent.objects.filter(action="db.insert", target_type="loyalty.coupontemplate").count() == 1
    assert Member.objects.count() == 0


def test_a_raw_update_of_a_credit_is_caught_with_its_id(world):
    credit = OrderPoints.objects.get()
    OrderPoints.objects.filter(pk=credit.pk).update(unrecovered_points=0, reversed_points=1)

    event = AuditEvent.objects.get(action="db.update", target_type="loyalty.orderpoints")
    assert event.target_id == str(credit.pk)
    assert event.changes["reversed_points"] == [0, 1]


@pytest.mark.parametrize("count", [2, 20])
def test_coupon_list_query_count_does_not_grow_with_rows(
    client, hq_operator, count, django_assert_max_num_queries
):
    template = CouponTemplate.objects.create(
        code="Q", name="券", kind="amount", amount=Decimal("5"), valid_days=7
    )
    services.issue_coupons(
        Member.objects.filter(pk__in=[MemberFactory().pk for _ in range(count)]),
        template,
        actor=Actor.system("t"),
    )
    client.force_login(hq_operator)
    client.get(reverse("admin:loyalty_coupon_changelist"))  # warm the session and permission caches

    with django_assert_max_num_queries(16):
        response = client.get(reverse("admin:loyalty_coupon_changelist"))

    assert len(response.context["cl"].result_list) == count
