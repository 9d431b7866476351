"""Script placeholders: rendering, validation at save and the preview."""

import datetime

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone, translation

from campaigns.scripts import PLACEHOLDERS, preview_script, render_script, validate_script
from members.models import Member
from tests.factories import GuideFactory, MemberFactory, StoreFactory, TierFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def member():
    store = StoreFactory(name="静安店")
    return MemberFactory(
        name="王小明",
        gender=Member.Gender.FEMALE,
        mobile="+8613812345678",
        home_store=store,
        guide=GuideFactory(store=store, name="李导购"),
        tier=TierFactory(name="金卡"),
        birthday=datetime.date(1990, 3, 8),
    )


def test_render_fills_every_known_placeholder(member):
    Member.objects.filter(pk=member.pk).update(
        last_purchase_at=timezone.make_aware(datetime.datetime(2026, 5, 1, 23, 30))
    )
    member.refresh_from_db()
    with translation.override("en"):
        text = render_script(
            "{salutation}，{name}您好，我是{store}的{guide}。您是{tier}会员，积分{points}，券{coupon}，"
            "生日{birthday}，上次购买{last_purchase}，尾号{mobile_last4}。",
            member=member,
            coupon="C-001",
        )
    assert text == (
        "Ms 王，王小明您好，我是静安店的李导购。您是金卡会员，积分0，券C-001，"
        "生日3/8，上次购买2026/5/1，尾号5678。"
    )


def test_render_uses_the_given_store_and_guide_over_the_members(member):
    other_store = StoreFactory(name="徐汇店")
    text = render_script(
        "{store}/{guide}", member=member, store=other_store, guide=GuideFactory(store=other_store, name="赵")
    )
    assert text == "徐汇店/赵"


def test_render_never_raises_on_a_member_without_data():
    member = MemberFactory(name="", tier=None, guide=None, birthday=None, mobile="+8613800000001")
    with translation.override("en"):
        text = render_script(
            "{name}|{salutation}|{surname}|{guide}|{tier}|{birthday}|{last_purchase}|{coupon}|{festival}",
            member=member,
        )
    assert text == "Dear member|Dear member|||||||"


def test_render_works_on_an_unsaved_member_without_relations():
    assert render_script("{name} {store} {tier}", member=Member(name="张三")) == "张三  "


def test_unknown_placeholders_stay_visible_and_stray_braces_are_kept(member):
    text = render_script("{name} {nickname} {} {1} {{name}}", member=member)
    assert text == "王小明 {nickname} {} {1} {王小明}"


def test_no_placeholder_exposes_the_full_mobile(member):
    body = " ".join("{" + name + "}" for name in PLACEHOLDERS)
    text = render_script(body, member=member, extra={"mobile_last4": "+8613812345678", "mobile": "x"})
    assert "13812345678" not in text
    assert "5678" in text


def test_extra_fills_journey_placeholders(member):
    text = render_script(
        "{festival}:{expiring_points}:{expires_on}",
        member=member,
        extra={"festival": "中秋", "expiring_points": 120, "expires_on": datetime.date(2026, 12, 31)},
    )
    with translation.override("en"):
        assert text.startswith("中秋:120:")
    assert "2026" in text and "12" in text and "31" in text


def test_lunar_birthday_is_shown_in_the_lunar_calendar(member):
    # 2026-09-25 is the 15th day of the 8th lunar month (中秋).
    member.birthday = datetime.date(2026, 9, 25)
    member.birthday_lunar = True
    with translation.override("en"):
        assert render_script("{birthday}", member=member) == "lunar 8/15"


def test_validate_script_lists_unknown_placeholders():
    with translation.override("en"), pytest.raises(ValidationError) as error:
        validate_script("{name} {nickname} {coupon} {shop}")
    message = error.value.messages[0]
    assert "{nickname}, {shop}" in message
    assert "{name}" in message  # the known ones are listed as a hint


def test_validate_script_accepts_known_placeholders():
    validate_script("{name}您好，{coupon} 请在{expires_on}前使用 {{}}")


def test_preview_with_a_real_member(member):
    preview = preview_script("{name}，{coupon}，{nickname}", member=member)
    assert preview["text"].startswith("王小明，")
    assert preview["text"].endswith("，{nickname}")
    assert preview["used"] == ["name", "coupon", "nickname"]
    assert preview["unknown"] == ["nickname"]
