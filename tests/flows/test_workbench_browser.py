"""The workbench on a phone (375×812) in a real browser: a guide's day and a manager off-boarding a guide.

Screenshots of every page land in ``artifacts/workbench-*.png``.
"""

import datetime
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from campaigns.models import Task, TaskChannel
from guides.models import MemberNote
from members.metrics import refresh_member_metrics
from scrm.models import AuditEvent
from stores.models import Guide
from tests.browser import browser_page, horizontal_overflow, log_in, screenshot
from tests.campaigns.factories import (
    CampaignFactory,
    CampaignRunFactory,
    ScriptFactory,
    TaskFactory,
)
from tests.factories import (
    GuideFactory,
    ManagerFactory,
    MemberFactory,
    OrderFactory,
    OrderLineFactory,
    StoreFactory,
    TagFactory,
    TierFactory,
)

PASSWORD = "pw-for-tests"

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

NAMES = ["林晓", "陈静怡", "张伟", "刘洋", "赵雪", "孙悦"]


def seed_guide_day():
    store = StoreFactory(code="SH001", name="上海静安嘉里中心店")
    guide = GuideFactory(store=store, name="王芳", employee_no="SH001-02", user__username="wangfang")
    gold = TierFactory(code="gold", name="金卡", rank=3)
    now = timezone.now()
    script = ScriptFactory(body="{name}您好，我是{store}的{guide}。新品修护精华到店了，周末来试试吗？")
    birthday = CampaignFactory(name="本周生日关怀", script=script, channel=TaskChannel.WECOM)
    dormant = CampaignFactory(name="沉睡会员唤醒", script=script, channel=TaskChannel.CALL)
    runs = {c: CampaignRunFactory(campaign=c) for c in (birthday, dormant)}
    members = []
    for i, name in enumerate(NAMES):
        member = MemberFactory(
            mobile=f"+861391234{i:04d}",
            name=name,
            home_store=store,
            guide=guide,
            tier=gold if i % 2 == 0 else None,
            consent_wecom=True,
            consent_call=i != 4,
        )
        order = OrderFactory(
            member=member, paid_at=now - datetime.timedelta(days=20 + 30 * i), amount=Decimal("458")
        )
        OrderLineFactory(order=order, line_no=1, name="修护精华露 50ml", amount=Decimal("458"))
        members.append(member)
    refresh_member_metrics([m.pk for m in members], now=now)
    campaign_of = [birthday, birthday, dormant, dormant, dormant]
    tasks = [
        TaskFactory(
            run=runs[campaign],
            store=store,
            guide=guide,
            member=members[i],
            channel=campaign.channel,
            title=campaign.name,
            due_at=now + datetime.timedelta(hours=-5 if i == 2 else 6 + 20 * i),
        )
        for i, campaign in enumerate(campaign_of)
    ]
    TagFactory(name="周末来电")
    return guide, members, tasks


def check_page(page, name: str) -> None:
    assert horizontal_overflow(page) == 0, name
    # A full-page shot draws sticky bars where the first screen had them, mid-page: for the picture
    # only, the bars are put back in their places in the flow of the page.
    page.evaluate("window.scrollTo(0, 0)")
    page.add_style_tag(content=".topbar, .tabbar, .bulk-bar { position: static; }")
    screenshot(page, f"workbench-{name}")


def test_a_guide_works_through_today_on_a_phone(live_server):
    guide, members, tasks = seed_guide_day()
    first = tasks[0]
    with browser_page(phone=True) as page:
        page.goto(live_server.url + reverse("login"))
        check_page(page, "login")
        # signs in with the employee number
        log_in(page, live_server.url, "SH001-02", PASSWORD)
        page.goto(live_server.url + reverse("guides:today"))
        # Today: grouped by campaign, the overdue task first within its campaign
        assert page.locator(".task-group").count() == 2
        assert page.locator(".task-row--overdue").count() == 1
        check_page(page, "today")

        # opens the first task: member card, filled-in script, outcome buttons
        page.locator(f"[data-task-id='{first.pk}']").click()
        page.wait_for_url(live_server.url + reverse("guides:task", args=[first.pk]))
        assert members[0].name in page.locator("#script-text").input_value()
        assert page.locator("button[data-copy]").is_visible()  # copy for WeCom (clipboard available)
        check_page(page, "task")

        # records "visit booked" with a note, in two taps
        page.locator(".outcome-extra summary").click()
        page.locator("#outcome-note").fill("周六下午来店试用")
        with page.expect_navigation():
            page.locator("button.outcome--visit_booked").click()
        assert page.url == live_server.url + reverse("guides:today")
        assert members[0].name in page.locator(".flash").inner_text()
        assert page.locator(f"[data-task-id='{first.pk}']").count() == 0
        check_page(page, "today-after")

        # the call task: reveal the number (audited) to call
        call_task = tasks[2]
        page.goto(live_server.url + reverse("guides:task", args=[call_task.pk]))
        page.locator(".reveal summary").click()
        page.locator("input[name=reason][value=about_to_call]").check()
        with page.expect_navigation():
            page.locator(".reveal button[type=submit]").click()
        assert page.locator("[data-full-mobile]").count() == 1
        check_page(page, "task-call-revealed")

        # finds a member by the last four digits and adds a note and a tag
        page.goto(live_server.url + reverse("guides:members"))
        page.locator("input[name=q]").fill("0003")
        with page.expect_navigation():
            page.locator(".search button[type=submit]").click()
        assert page.locator(".member-card").count() == 1
        check_page(page, "members-search")
        page.locator(".member-card").first.click()
        page.wait_for_url(live_server.url + reverse("guides:member", args=[members[3].pk]))
        page.locator("#note-body").fill("喜欢清爽型护肤品，周末方便联系")
        with page.expect_navigation():
            page.locator(".note-form button[type=submit]").click()
        assert "喜欢清爽型护肤品" in page.locator(".notes").inner_text()
        page.locator("#tag-name").fill("周末来电")
        with page.expect_navigation():
            page.locator(".inline-form button[type=submit]").click()
        check_page(page, "member-card")

        # filters
        page.goto(live_server.url + reverse("guides:members") + "?f=not_contacted&stage=")
        check_page(page, "members-filters")

        page.goto(live_server.url + reverse("guides:numbers"))
        assert page.locator(".kpi").count() == 6
        check_page(page, "numbers")

    task = Task.objects.get(pk=first.pk)
    assert (task.state, task.outcome, task.note) == ("done", "visit_booked", "周六下午来店试用")
    assert MemberNote.objects.filter(member=members[3], author=guide).count() == 1
    assert AuditEvent.objects.filter(action="member.mobile_revealed", target_id=str(members[2].pk)).exists()


def seed_store_with_manager():
    store = StoreFactory(code="SH002", name="上海徐汇港汇店")
    manager = ManagerFactory(store=store, name="李静", user__username="lijing")
    leaver = GuideFactory(store=store, name="周敏", user__username="zhoumin")
    others = [GuideFactory(store=store, name=name) for name in ("吴婷", "郑楠")]
    run = CampaignRunFactory(campaign=CampaignFactory(name="春季新品邀约"))
    now = timezone.now()
    for i in range(8):
        owner = [leaver, *others][i % 3]
        member = MemberFactory(home_store=store, guide=owner, name=f"会员{i}", consent_wecom=True)
        TaskFactory(
            run=run, store=store, guide=owner, member=member, due_at=now + datetime.timedelta(hours=i - 3)
        )
    for i in range(2):
        member = MemberFactory(home_store=store, guide=None, name=f"散客{i}", consent_wecom=True)
        TaskFactory(run=run, store=store, guide=None, member=member)
    return manager, leaver, others


def test_a_manager_offboards_a_guide_on_a_phone(live_server):
    _manager, leaver, _others = seed_store_with_manager()
    with browser_page(phone=True) as page:
        log_in(page, live_server.url, "lijing", PASSWORD)
        page.goto(live_server.url + reverse("guides:today"))
        check_page(page, "manager-today")
        page.goto(live_server.url + reverse("guides:store"))
        assert page.locator("table.board tbody tr").count() == 4
        check_page(page, "store-board")

        page.goto(live_server.url + reverse("guides:reassign_tasks"))
        check_page(page, "reassign-queue")

        page.goto(live_server.url + reverse("guides:members"))
        check_page(page, "manager-members")

        page.goto(live_server.url + reverse("guides:offboard"))
        page.locator("#id_guide").select_option(str(leaver.pk))
        page.locator("input[name=confirm]").check()
        check_page(page, "offboard")
        with page.expect_navigation():
            page.locator("form.offboard-form button[type=submit]").click()
        assert page.url == live_server.url + reverse("guides:store")
        assert leaver.name in page.locator(".flash").inner_text()
        check_page(page, "store-board-after")

    assert Guide.objects.get(pk=leaver.pk).status == Guide.Status.LEFT
    assert not Task.objects.filter(guide=leaver, state="open").exists()
