"""Coupons: issued one by one (idempotent per source) or in bulk, redeemed once even under concurrency,
expiring on time; every movement audited."""

from __future__ import annotations

import datetime
import threading
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.utils import timezone, translation

from loyalty import services
from loyalty.models import Coupon, CouponTemplate, LoyaltyRun
from members.models import Member
from scrm.audit import Actor
from scrm.models import AuditEvent
from tests.factories import MemberFactory, StoreFactory

ACTOR = Actor.system("tests")


@pytest.fixture
def template(db) -> CouponTemplate:
    return CouponTemplate.objects.create(
        code="BDAY50",
        name="生日券",
        kind="amount",
        amount=Decimal("50"),
        min_spend=Decimal("300"),
        valid_days=30,
    )


def test_issuing_returns_a_code_valid_for_the_template_days(db, template):
    member = MemberFactory()
    now = timezone.now()

    code = services.issue_coupon(member, template, ACTOR, "campaign", source_ref="task:1", now=now)

    coupon = Coupon.objects.get(code=code)
    assert len(code) == 16 and code == code.upper()
    assert (coupon.member, coupon.template, coupon.status, coupon.source) == (
        member,
        template,
        "issued",
        "campaign",
    )
    assert coupon.expires_at == now + datetime.timedelta(days=30)
    event = AuditEvent.objects.get(action="coupon.issued")
    assert event.target_id == str(coupon.pk)
    assert event.store_id == member.home_store_id
    assert event.changes["source_ref"] == "task:1"


def test_issuing_again_for_the_same_source_returns_the_same_coupon(db, template):
    member = MemberFactory()

    first = services.issue_coupon(member, "BDAY50", ACTOR, "campaign", source_ref="task:7")
    second = services.issue_coupon(member, "BDAY50", ACTOR, "campaign", source_ref="task:7")
    other = services.issue_coupon(member, "BDAY50", ACTOR, "campaign", source_ref="task:8")

    assert first == second != other
    assert Coupon.objects.count() == 2
    assert AuditEvent.objects.filter(action="coupon.issued").count() == 2


def test_the_validity_is_capped_by_the_template_end(db):
    ends = timezone.now() + datetime.timedelta(days=3)
    template = CouponTemplate.objects.create(
        code="FLASH", name="闪购", kind="discount", discount_percent=85, valid_days=30, valid_until=ends
    )

    code = services.issue_coupon(MemberFactory(), template, ACTOR, "admin")

    assert Coupon.objects.get(code=code).expires_at == ends


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"active": False}, "The coupon template 生日券 is not active."),
        (
            {"valid_days": None, "valid_until": datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)},
            "The coupon template 生日券 has ended.",
        ),
        ({"per_member_limit": 1}, "This member already holds 1 coupon(s) of 生日券, the limit."),
    ],
)
def test_issuing_is_refused_with_a_translated_reason_and_nothing_written(db, template, change, message):
    member = MemberFactory()
    if "per_member_limit" in change:
        services.issue_coupon(member, template, ACTOR, "admin")
    CouponTemplate.objects.filter(pk=template.pk).update(**change)
    template.refresh_from_db()
    before = Coupon.objects.count()

    with translation.override("en"), pytest.raises(ValidationError) as refused:
        services.issue_coupon(member, template, ACTOR, "admin")

    assert refused.value.messages == [message]
    assert Coupon.objects.count() == before


def test_erased_members_get_no_coupon(db, template):
    member = MemberFactory()
    Member.objects.filter(pk=member.pk).update(status=Member.Status.ERASED)

    with pytest.raises(ValidationError):
        services.issue_coupon(member, template, ACTOR, "admin")


def test_a_coupon_is_redeemed_once_and_the_second_time_refused(db, template):
    member = MemberFactory()
    store = StoreFactory()
    code = services.issue_coupon(member, template, ACTOR, "admin")

    coupon = services.redeem_coupon(
        code.lower(), actor=ACTOR, store=store, order_no="POS1", order_amount=Decimal("300"), member=member
    )

    assert (coupon.status, coupon.redeemed_store, coupon.redeemed_order_no) == ("redeemed", store, "POS1")
    event = AuditEvent.objects.get(action="coupon.redeemed")
    assert event.store_id == store.pk
    assert event.changes["status"] == ["issued", "redeemed"]
    with translation.override("en"), pytest.raises(ValidationError) as refused:
        services.redeem_coupon(code, actor=ACTOR)
    assert refused.value.code == "already_redeemed"
    assert refused.value.messages[0].startswith("This coupon was already redeemed on ")
    assert AuditEvent.objects.filter(action="coupon.redeemed").count() == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"order_amount": Decimal("299.99")}, "This coupon needs a spend of at least 300.00 yuan."),
        ({"member": "other"}, "This coupon belongs to another member."),
    ],
)
def test_redeeming_checks_the_threshold_and_the_member(db, template, kwargs, message):
    code = services.issue_coupon(MemberFactory(), template, ACTOR, "admin")
    if kwargs.get("member") == "other":
        kwargs = {"member": MemberFactory()}

    with translation.override("en"), pytest.raises(ValidationError) as refused:
        services.redeem_coupon(code, actor=ACTOR, **kwargs)

    assert refused.value.messages == [message]
    assert Coupon.objects.get(code=code).status == "issued"


def test_unknown_codes_are_refused(db):
    with translation.override("en"), pytest.raises(ValidationError) as refused:
        services.redeem_coupon("nope", actor=ACTOR)
    assert refused.value.messages == ["No coupon has the code NOPE."]


def test_a_coupon_expires_on_time_and_the_nightly_run_marks_it(db, template):
    member = MemberFactory()
    issued = timezone.now() - datetime.timedelta(days=31)
    code = services.issue_coupon(member, template, ACTOR, "admin", now=issued)

    with translation.override("en"), pytest.raises(ValidationError) as refused:
        services.redeem_coupon(code, actor=ACTOR)  # before the nightly run: already unredeemable
    assert refused.value.messages == ["This coupon has expired."]

    run = services.expire_coupons(actor=ACTOR)
    again = services.expire_coupons(actor=ACTOR)

    assert (run.count, again.count) == (1, 0)
    assert Coupon.objects.get(code=code).status == "expired"
    event = AuditEvent.objects.get(action="coupon.expired")
    coupon = Coupon.objects.get(code=code)
    assert event.target_id == str(coupon.pk)
    assert event.changes == {"coupons": [[coupon.pk, member.pk]], "status": ["issued", "expired"]}
    assert LoyaltyRun.objects.filter(kind=LoyaltyRun.Kind.COUPON_EXPIRY).count() == 2


def test_a_coupon_not_valid_yet_is_refused(db):
    template = CouponTemplate.objects.create(
        code="SPRING",
        name="春季券",
        kind="amount",
        amount=Decimal("20"),
        valid_from=timezone.now() + datetime.timedelta(days=5),
        valid_days=10,
    )
    code = services.issue_coupon(MemberFactory(), template, ACTOR, "admin")

    with translation.override("en"), pytest.raises(ValidationError) as refused:
        services.redeem_coupon(code, actor=ACTOR)
    assert refused.value.messages == ["This coupon is not valid yet."]


def test_bulk_issue_gives_each_active_member_one_coupon_once(db, template):
    members = [MemberFactory() for _ in range(4)]
    Member.objects.filter(pk=members[3].pk).update(status=Member.Status.ERASED)
    chosen = Member.objects.filter(pk__in=[m.pk for m in members])

    issued = services.issue_coupons(chosen, template, actor=ACTOR, source_ref="bulk:spring")
    again = services.issue_coupons(chosen, template, actor=ACTOR, source_ref="bulk:spring")

    assert (issued, again) == (3, 0)
    assert set(Coupon.objects.values_list("member_id", flat=True)) == {m.pk for m in members[:3]}
    assert len(set(Coupon.objects.values_list("code", flat=True))) == 3
    event = AuditEvent.objects.get(action="coupon.issued")  # one per chunk of 1,000 coupons
    assert event.changes["coupons"] == [
        list(pair) for pair in Coupon.objects.order_by("id").values_list("id", "member_id")
    ]
    assert (event.changes["template"], event.changes["source_ref"]) == ("BDAY50", "bulk:spring")
    assert [
        e.changes["issued"] for e in AuditEvent.objects.filter(action="coupon.bulk_issued").order_by("id")
    ] == [3, 0]


def test_bulk_issue_respects_the_limit_per_member(db, template):
    template.per_member_limit = 1
    template.save()
    members = [MemberFactory() for _ in range(3)]
    services.issue_coupon(members[0], template, ACTOR, "admin")

    issued = services.issue_coupons(
        Member.objects.filter(pk__in=[m.pk for m in members]), template, actor=ACTOR
    )

    assert issued == 2
    assert Coupon.objects.filter(member=members[0]).count() == 1


@pytest.mark.django_db(transaction=True)
def test_two_tills_redeeming_the_same_coupon_at_once_only_one_wins(template):
    code = services.issue_coupon(MemberFactory(), template, ACTOR, "admin")
    barrier = threading.Barrier(4)
    outcomes: list[str] = []

    def till() -> None:
        try:
            barrier.wait()
            services.redeem_coupon(code, actor=ACTOR)
            outcomes.append("ok")
        except ValidationError as error:
            outcomes.append(error.code)
        finally:
            connection.close()

    threads = [threading.Thread(target=till) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(outcomes) == ["already_redeemed"] * 3 + ["ok"]
    assert AuditEvent.objects.filter(action="coupon.redeemed").count() == 1
