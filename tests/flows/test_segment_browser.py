"""HQ builds a segment with the rule builder, previews it and saves it, in a real browser."""

import datetime

import pytest
from django.utils import timezone

from campaigns.models import Segment
from members.models import Member
from scrm.models import AuditEvent
from scrm.roles import Role
from tests.browser import browser_page, horizontal_overflow, log_in, screenshot
from tests.factories import MemberFactory, RegionFactory, StoreFactory, TierFactory, UserFactory

PASSWORD = "pw-for-tests"

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_hq_builds_previews_and_saves_a_segment(live_server):
    # given an HQ operator and members in two regions, some gold, some with WeCom consent
    UserFactory(username="hq_segmenter", role=Role.HQ_OPERATOR)
    east, north = RegionFactory(code="EAST", name="华东"), RegionFactory(code="NORTH", name="华北")
    shanghai = StoreFactory(code="SH001", name="上海静安店", region=east, city="上海")
    hangzhou = StoreFactory(code="HZ001", name="杭州湖滨店", region=east, city="杭州")
    beijing = StoreFactory(code="BJ001", name="北京国贸店", region=north, city="北京")
    gold = TierFactory(code="gold", name="金卡", rank=3)
    silver = TierFactory(code="silver", name="银卡", rank=2)
    joined = timezone.now() - datetime.timedelta(days=400)
    for i in range(12):
        store = (shanghai, hangzhou, beijing)[i % 3]
        MemberFactory(
            mobile=f"+8613800{i:06d}",
            name=f"王小{i}",
            home_store=store,
            tier=gold if i % 2 == 0 else silver,
            joined_at=joined,
        )
    # WeCom consent on the members of Shanghai (a projection column, set here as the ledger would)
    Member.objects.filter(home_store=shanghai).update(consent_wecom=True)

    with browser_page() as page:
        log_in(page, live_server.url, "hq_segmenter", PASSWORD)
        page.goto(live_server.url + "/admin/campaigns/segment/add/")

        # when they name the segment and build "tier is gold AND region is East" with the builder
        page.locator("input[name=name]").fill("华东金卡会员")
        builder = page.locator("#segment-builder")
        builder.locator(".segment-add-condition").first.click()
        condition = builder.locator(".segment-condition").nth(0)
        condition.locator("select.segment-field").select_option("tier")
        condition = builder.locator(".segment-condition").nth(0)
        condition.locator(".segment-value select").select_option([str(gold.pk)])
        builder.locator(".segment-add-condition").first.click()
        condition = builder.locator(".segment-condition").nth(1)
        condition.locator("select.segment-field").select_option("region")
        condition = builder.locator(".segment-condition").nth(1)
        condition.locator(".segment-value select").select_option([str(east.pk)])
        page.locator("select[name=preview_channel]").select_option("wecom")

        # and press Preview
        with page.expect_navigation():
            page.locator("button[name=_preview]").click()

        # then the preview shows the count, per region and store, the consent exclusions and a masked sample
        preview = page.locator("#segment-preview")
        figures = preview.locator(".segment-number").all_inner_texts()
        # gold members: i = 0, 2, 4, 6, 8, 10 → stores SH, BJ, HZ, SH, BJ, HZ → East: 4, of which SH: 2
        assert figures[:3] == ["4", "2", "2"]
        text = preview.inner_text()
        assert "上海静安店" in text and "杭州湖滨店" in text and "北京国贸店" not in text
        assert "13800000000" not in text and "138****0000" in text
        assert "王*" in text
        assert page.url.endswith("/admin/campaigns/segment/add/")  # still adding: nothing saved
        assert page.locator("#segment-preview").count() == 1
        # the builder was drawn again from the posted definition
        assert builder.locator(".segment-condition").count() == 2
        assert horizontal_overflow(page) == 0
        screenshot(page, "segment-preview-desktop")

        # when they save
        with page.expect_navigation():
            page.locator("input[name=_save]").click()

    # then the segment is stored, normalised, and the write is audited
    segment = Segment.objects.get(name="华东金卡会员")
    assert segment.definition == {
        "op": "all",
        "items": [
            {"field": "tier", "op": "in", "value": [gold.pk]},
            {"field": "region", "op": "in", "value": [east.pk]},
        ],
    }
    assert AuditEvent.objects.filter(action="segment.created", target_id=str(segment.pk)).count() == 1
