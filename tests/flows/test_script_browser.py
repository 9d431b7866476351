"""HQ writes a script, previews it live for a real member, and saves it, in a real browser."""

import pytest

from campaigns.models import Script
from scrm.roles import Role
from tests.browser import browser_page, log_in, screenshot
from tests.factories import GuideFactory, MemberFactory, StoreFactory, TierFactory, UserFactory

PASSWORD = "pw-for-tests"

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_hq_previews_a_script_with_a_member_and_saves_it(live_server):
    # given an HQ operator and a member with a store, a guide and a tier
    UserFactory(username="hq_writer", role=Role.HQ_OPERATOR)
    store = StoreFactory(name="上海静安店")
    MemberFactory(
        name="王小明",
        gender="F",
        mobile="+8613812345678",
        home_store=store,
        guide=GuideFactory(store=store, name="李娜"),
        tier=TierFactory(name="金卡"),
    )

    with browser_page() as page:
        log_in(page, live_server.url, "hq_writer", PASSWORD)
        page.goto(live_server.url + "/admin/campaigns/script/add/")
        page.locator("input[name=title]").fill("金卡关怀")
        body = page.locator("textarea[name=body]")
        body.fill("{salutation}您好，我是{store}的{guide}。")
        # when they pick the member by mobile number and insert a placeholder by clicking it
        page.locator("#scrm-preview-member").fill("13812345678")
        page.locator("#scrm-preview-button").click()
        preview = page.locator("#scrm-preview-text")
        preview.filter(has_text="上海静安店").wait_for()
        body.press("End")
        page.locator("button.scrm-insert[data-code='{tier}']").click()
        preview.filter(has_text="金卡").wait_for()
        # then the preview shows the member's own values, and never the full mobile number
        # ({salutation} is 王女士 once the catalogue is compiled; "Ms 王" before)
        assert preview.inner_text().endswith("您好，我是上海静安店的李娜。金卡")
        assert "王" in preview.inner_text()
        assert "13812345678" not in page.content()
        assert "138****5678" in page.locator("#scrm-preview-member-label").inner_text()
        # an unknown placeholder is flagged at once
        body.press("End")
        body.type("{nickname}")
        page.locator("#scrm-preview-warning").filter(has_text="{nickname}").wait_for()
        screenshot(page, "script-preview")
        # and saving it is refused until the unknown placeholder is gone
        page.locator("input[name=_save]").click()
        page.locator(".errorlist").filter(has_text="{nickname}").wait_for()
        page.locator("textarea[name=body]").fill("{salutation}您好，我是{store}的{guide}。{tier}")
        page.locator("input[name=_save]").click()
        page.wait_for_url("**/admin/campaigns/script/")

    assert Script.objects.get().body == "{salutation}您好，我是{store}的{guide}。{tier}"
