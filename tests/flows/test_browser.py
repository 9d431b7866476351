"""End to end in a real browser: HQ in the admin at desktop size, a guide on a phone."""

import datetime
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from members.metrics import refresh_member_metrics
from members.models import Member, PointsEntry
from scrm.masking import mask_mobile
from scrm.roles import Role
from stores.models import Guide
from tests.browser import browser_page, horizontal_overflow, log_in, screenshot
from tests.factories import (
    GuideFactory,
    MemberFactory,
    OrderFactory,
    OrderLineFactory,
    StoreFactory,
    TierFactory,
    UserFactory,
)

PASSWORD = "pw-for-tests"  # tests.factories.UserFactory's password

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


# Days ago of each member's orders: repeat buyer, first purchase, dormant, no purchase, lost.
ORDER_AGES = [(3, 40, 95), (12,), (120, 160), (), (220,)]


def seed_store() -> tuple[Guide, list[Member]]:
    """A store with one guide and five believable members, metrics computed as in production."""
    store = StoreFactory(code="SH001", name="上海静安嘉里中心店")
    guide = GuideFactory(store=store, name="王芳", user__username="wangfang")
    gold = TierFactory(code="gold", name="金卡", rank=3)
    now = timezone.now()
    members = []
    for i, (name, ages) in enumerate(
        zip(["林晓", "陈静怡", "张伟", "刘洋", "赵雪"], ORDER_AGES, strict=True)
    ):
        member = MemberFactory(
            mobile=f"+861391234{i:04d}",
            name=name,
            home_store=store,
            guide=guide,
            tier=gold if i % 2 == 0 else None,
            joined_at=now - datetime.timedelta(days=400 - 30 * i),
            consent_sms=i % 2 == 0,
            consent_wecom=True,
        )
        PointsEntry.objects.create(member=member, delta=120 * (5 - i), kind=PointsEntry.Kind.EARN)
        for age in ages:
            order = OrderFactory(
                member=member,
                paid_at=now - datetime.timedelta(days=age),
                amount=Decimal("458.00"),
                item_count=3,
            )
            OrderLineFactory(
                order=order,
                line_no=1,
                name="修护精华露 50ml",
                category="护肤",
                quantity=2,
                amount=Decimal("398.00"),
            )
            OrderLineFactory(
                order=order, line_no=2, name="氨基酸洁面乳", category="洁面", amount=Decimal("60.00")
            )
        members.append(member)
    refresh_member_metrics([m.pk for m in members], now=now)
    return guide, members


def test_hq_admin_logs_in_and_opens_the_member_list(live_server):
    # given an HQ administrator and a store with members (rows exist before the browser opens)
    UserFactory(username="hq_boss", role=Role.HQ_ADMIN)
    _guide, members = seed_store()

    with browser_page() as page:
        # when they sign in through the login page
        log_in(page, live_server.url, "hq_boss", PASSWORD)

        # then they land on the admin, in Chinese (the default language)
        assert page.url == live_server.url + reverse("admin:index")
        assert page.locator("html").get_attribute("lang") == "zh-hans"

        # and the member list shows the store's members, with Django's own Chinese labels
        response = page.goto(live_server.url + "/admin/members/member/")
        assert response is not None
        assert response.status == 200
        assert page.locator("#changelist-search input[type=submit]").get_attribute("value") == "搜索"
        table = page.locator("#result_list").inner_text()
        for member in members:
            assert member.name in table
        screenshot(page, "admin-member-list-desktop")


def test_a_guide_sees_their_members_masked_on_a_phone(live_server):
    # given a guide with five members
    _guide, members = seed_store()
    masked = [mask_mobile(m.mobile) for m in members]
    national = [m.mobile.removeprefix("+86") for m in members]

    with browser_page(phone=True) as page:
        page.goto(live_server.url + reverse("login"))
        assert horizontal_overflow(page) == 0
        screenshot(page, "login-phone")

        # when the guide signs in on a phone
        log_in(page, live_server.url, "wangfang", PASSWORD)

        # then they land on today's tasks; their member list shows every member, mobiles masked, no
        # full number anywhere
        assert page.url == live_server.url + reverse("guides:today")
        page.goto(live_server.url + reverse("guides:members"))
        cards = page.locator(".member-card")
        assert cards.count() == len(members)
        text = page.locator("body").inner_text()
        html = page.content()
        for member, mask, number in zip(members, masked, national, strict=True):
            assert member.name in text
            assert mask in text
            assert number not in html
        assert horizontal_overflow(page) == 0
        screenshot(page, "guide-members-phone")

        # and the member card opens, masked as well
        page.locator(".member-card", has_text=members[0].name).click()
        page.wait_for_url(live_server.url + reverse("guides:member", args=[members[0].pk]))
        assert masked[0] in page.locator(".member-hero").inner_text()
        assert national[0] not in page.content()
        assert "修护精华露 50ml" in page.locator("body").inner_text()
        assert horizontal_overflow(page) == 0
        screenshot(page, "guide-member-card-phone")

        # and the language switch turns the page into English
        page.locator(".lang-switch button[value=en]").click()
        page.wait_for_load_state()
        assert page.locator("html").get_attribute("lang") == "en"

        # and logging out leads back to the login page
        with page.expect_navigation():
            page.locator(f"form[action='{reverse('logout')}'] button").click()
        assert page.url == live_server.url + reverse("login")
